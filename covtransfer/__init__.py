"""covtransfer: self-configuring 3D CT segmentation and transfer from non-COVID lung lesions to COVID-19."""

__version__ = "0.1.0"
