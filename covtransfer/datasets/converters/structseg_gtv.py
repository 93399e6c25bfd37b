"""StructSeg 2019 task 4 (Lung_GTV): 50 lung-cancer CTs with gross tumour volume masks, one folder per case.

Each case folder ``<n>/`` holds ``data.nii.gz`` and ``label.nii.gz``; the case id is ``structseg_<n:02d>``. The
released masks are binary; any non-zero value is written as 1 (GTV).
"""

from __future__ import annotations

from pathlib import Path

from covtransfer.datasets.converters.common import (SourceCase, SourceDataset, find_child, merged_binary,
                                                    nifti_files, require_folder, strip_image_ending)

LABELS = {"background": 0, "GTV": 1}
EXPECTED_LAYOUT = "Lung_GTV/<n>/data.nii.gz and Lung_GTV/<n>/label.nii.gz"


def _file(folder: Path, stem: str) -> Path | None:
    return next((p for p in nifti_files(folder) if strip_image_ending(p.name).lower() == stem), None)


def case_id_from_folder(name: str) -> str:
    """``structseg_07`` for the case folder ``7``; non-numeric folder names are kept after the prefix."""
    return f"structseg_{int(name):02d}" if name.isdigit() else f"structseg_{name}"


def discover(input_folder: Path, labels: str = "infection") -> SourceDataset:
    """One case per sub-folder holding ``data`` and ``label`` NIfTI files (in ``Lung_GTV/`` or given directly)."""
    input_folder = require_folder(input_folder, "Lung_GTV or its parent")
    root = find_child(input_folder, "Lung_GTV") or input_folder
    training, unpaired = [], []
    for folder in sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        data, label = _file(folder, "data"), _file(folder, "label")
        if data and label:
            training.append(SourceCase(case_id_from_folder(folder.name), data, (label,)))
        elif data or label:
            unpaired.append(data or label)
    metadata = {
        "description": "StructSeg 2019 task 4 (Lung_GTV): lung-cancer CT scans with the gross tumour volume "
                       "delineated for radiotherapy. Label 1 = GTV; any non-zero value of the released label files "
                       "was written as 1.",
        "reference": "Automatic Structure Segmentation for Radiotherapy Planning Challenge 2019 (StructSeg), "
                     "https://structseg2019.grand-challenge.org",
        "licence": "see the StructSeg 2019 challenge data terms",
        "source": "structseg-gtv",
    }
    return SourceDataset("StructSegGTV", dict(LABELS), training, merged_binary, unpaired=unpaired,
                         metadata=metadata)
