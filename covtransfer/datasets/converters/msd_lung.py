"""Medical Segmentation Decathlon Task06_Lung: 63 labelled CTs of non-small-cell lung cancer, and its test images.

Images and labels share one file name (``imagesTr/lung_001.nii.gz``, ``labelsTr/lung_001.nii.gz``); the case id is
that name. The COVID-19-CT-Seg benchmark's validation list (12 cases) is written as a one-fold ``splits.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from covtransfer.datasets.converters.common import (SourceCase, SourceDataset, find_child, nifti_files,
                                                    require_folder, single_label, strip_image_ending)
from covtransfer.errors import CovtransferError

BENCHMARK_VALIDATION = tuple(f"lung_{n:03d}" for n in (3, 25, 45, 51, 54, 55, 61, 73, 92, 93, 95, 96))
LABELS = {"background": 0, "lesion": 1}
EXPECTED_LAYOUT = "Task06_Lung/imagesTr/lung_XXX.nii.gz and Task06_Lung/labelsTr/lung_XXX.nii.gz"


def _task_folder(input_folder: Path) -> Path:
    if find_child(input_folder, "imagesTr") is not None:
        return input_folder
    task = find_child(input_folder, "Task06_Lung")
    if task is None:
        raise CovtransferError(f"{input_folder}: neither Task06_Lung/ nor imagesTr/ found")
    return task


def _by_stem(folder: Path | None) -> dict[str, Path]:
    return {} if folder is None else {strip_image_ending(p.name): p for p in nifti_files(folder)}


def _release_fields(task: Path) -> dict:
    """Licence and release of the MSD ``dataset.json``, when it is readable."""
    path = task / "dataset.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {key: str(raw[key]) for key in ("licence", "release") if key in raw}


def benchmark_splits(case_ids: list[str]) -> list[dict]:
    """One fold: the benchmark's 12 validation cases (those present) against all other present cases."""
    val = [case for case in BENCHMARK_VALIDATION if case in case_ids]
    return [{"train": sorted(case for case in case_ids if case not in val), "val": val}]


def discover(input_folder: Path, labels: str = "infection") -> SourceDataset:
    """Pair ``imagesTr``/``labelsTr`` by file name; ``imagesTs`` becomes the test set."""
    input_folder = require_folder(input_folder, "Task06_Lung or its parent")
    task = _task_folder(input_folder)
    images, masks = _by_stem(find_child(task, "imagesTr")), _by_stem(find_child(task, "labelsTr"))
    paired = sorted(set(images) & set(masks))
    unpaired = sorted([images[c] for c in set(images) - set(masks)] + [masks[c] for c in set(masks) - set(images)])
    training = [SourceCase(case, images[case], (masks[case],)) for case in paired]
    test = [SourceCase(case, path) for case, path in sorted(_by_stem(find_child(task, "imagesTs")).items())]
    metadata = {
        "description": "Medical Segmentation Decathlon Task06_Lung: CT scans of non-small-cell lung cancer, label 1 "
                       "= tumour (lesion). splits.json holds one fold: the COVID-19-CT-Seg benchmark's MSD validation "
                       "list (lung_003, 025, 045, 051, 054, 055, 061, 073, 092, 093, 095, 096; 51 training / 12 "
                       "validation in the full release) restricted to the cases present.",
        "reference": "Antonelli M. et al., The Medical Segmentation Decathlon, Nature Communications 13:4128, 2022; "
                     "data: http://medicaldecathlon.com",
        "licence": "CC BY-SA 4.0",
        "source": "msd-lung",
    }
    metadata.update(_release_fields(task))
    return SourceDataset("MSDLung", dict(LABELS), training, single_label({0, 1}), test=test, unpaired=unpaired,
                         metadata=metadata, splits=benchmark_splits(paired) if paired else None)
