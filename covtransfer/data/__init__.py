"""Raw dataset layer: dataset.json, case listing, image I/O, cropping, verification, splits."""
