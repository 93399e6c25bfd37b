"""COVID-19-CT-Seg (Zenodo 3757476): 20 chest CTs with infection and lung masks, and the official 5-fold split.

Images (``COVID-19-CT-Seg_20cases/``) are paired with masks by case id, so mirror-specific image names such as
``coronacases_org_001.nii.gz`` or ``radiopaedia_org_covid-19-pneumonia-29_86491_1-dcm.nii.gz`` pair with
``coronacases_001.nii.gz`` / ``radiopaedia_29_86491_1.nii.gz``. The Radiopaedia scans were released windowed to
[-1250, 250] HU and rescaled to [0, 255]; they are mapped back to HU so every dataset shares one physical unit.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from covtransfer.datasets.converters.common import (SourceCase, SourceDataset, find_child, nifti_files,
                                                    require_folder, single_label, strip_image_ending)
from covtransfer.errors import CovtransferError

# The official "learning with limited annotations" protocol: 4 training cases per fold, the other 16 are tested.
OFFICIAL_TRAINING = (
    ("coronacases_007", "coronacases_008", "radiopaedia_36_86526_0", "radiopaedia_4_85506_1"),
    ("coronacases_004", "coronacases_009", "radiopaedia_14_85914_0", "radiopaedia_7_85703_0"),
    ("coronacases_001", "coronacases_010", "radiopaedia_10_85902_1", "radiopaedia_29_86491_1"),
    ("coronacases_003", "coronacases_005", "radiopaedia_40_86625_0", "radiopaedia_27_86410_0"),
    ("coronacases_002", "coronacases_006", "radiopaedia_10_85902_3", "radiopaedia_29_86490_1"),
)
OFFICIAL_CASES = tuple(sorted(case for fold in OFFICIAL_TRAINING for case in fold))

IMAGE_FOLDERS = ("COVID-19-CT-Seg_20cases", "ct_scans", "20_ncov_scan")
MASK_FOLDERS = {
    "infection": ("Infection_Mask",),
    "lung-infection": ("Lung_and_Infection_Mask",),
}
LABELS = {
    "infection": {"background": 0, "infection": 1},
    "lung-infection": {"background": 0, "left_lung": 1, "right_lung": 2, "infection": 3},
}
EXPECTED_LAYOUT = ("COVID-19-CT-Seg_20cases/<case>.nii.gz and Infection_Mask/<case>.nii.gz "
                   "(or Lung_and_Infection_Mask/)")
DEFAULT_NAMES = {"infection": "COVID19CTSeg", "lung-infection": "COVID19CTSegLungInfection"}

WINDOW_LOW_HU, WINDOW_WIDTH_HU, WINDOW_MAX_VALUE = -1250.0, 1500.0, 255.0


def case_id_from_name(name: str) -> str | None:
    """The case id a file name stands for (``coronacases_001``, ``radiopaedia_29_86491_1``), or None."""
    stem = strip_image_ending(name)
    if stem is None:
        return None
    stem = re.sub(r"_0000$", "", stem)
    corona = re.fullmatch(r"coronacases_(?:org_)?(\d+)", stem, flags=re.IGNORECASE)
    if corona:
        return f"coronacases_{int(corona.group(1)):03d}"
    radio = re.match(r"radiopaedia.*?(?<!\d)(\d+)_(\d+)_(\d+)(?!\d)", stem, flags=re.IGNORECASE)
    if radio:
        return "radiopaedia_" + "_".join(str(int(g)) for g in radio.groups())
    return stem


def is_windowed(image: np.ndarray) -> bool:
    """True for a scan released windowed and rescaled to [0, 255] rather than in HU."""
    return bool(image.size) and float(image.min()) >= 0.0 and float(image.max()) <= WINDOW_MAX_VALUE


def to_hounsfield(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """Map a windowed scan back to HU (x / 255 * 1500 - 1250, float32); scans already in HU pass unchanged."""
    if not is_windowed(image):
        return image, False
    hu = image.astype(np.float64) / WINDOW_MAX_VALUE * WINDOW_WIDTH_HU + WINDOW_LOW_HU
    return hu.astype(np.float32), True


def _index_by_case(files: list[Path]) -> dict[str, Path]:
    by_case: dict[str, Path] = {}
    for path in files:
        case_id = case_id_from_name(path.name)
        if case_id in by_case:
            raise CovtransferError(f"{path}: names the same case ({case_id}) as {by_case[case_id].name}; "
                                   "keep one of them")
        by_case[case_id] = path
    return by_case


def official_splits(case_ids: list[str]) -> list[dict] | None:
    """The official 5 folds (train 4, val = test = the other 16) when all 20 official cases are present."""
    if not set(OFFICIAL_CASES) <= set(case_ids):
        return None
    splits = []
    for train in OFFICIAL_TRAINING:
        rest = [case for case in OFFICIAL_CASES if case not in train]
        splits.append({"train": list(train), "val": list(rest), "test": list(rest)})
    return splits


def discover(input_folder: Path, labels: str = "infection") -> SourceDataset:
    """Pair the images and the chosen mask set of a COVID-19-CT-Seg download by case id."""
    input_folder = require_folder(input_folder, "the COVID-19-CT-Seg download")
    if labels not in MASK_FOLDERS:
        raise CovtransferError(f"unknown label set {labels!r}: use one of {', '.join(MASK_FOLDERS)}")
    images_dir = find_child(input_folder, *IMAGE_FOLDERS)
    if images_dir is None:
        raise CovtransferError(f"{input_folder}: no image folder (expected {IMAGE_FOLDERS[0]}/)")
    masks_dir = find_child(input_folder, *MASK_FOLDERS[labels])
    if masks_dir is None:
        raise CovtransferError(f"{input_folder}: no mask folder for --labels {labels} "
                               f"(expected {MASK_FOLDERS[labels][0]}/)")
    images = _index_by_case(nifti_files(images_dir))
    masks = _index_by_case(nifti_files(masks_dir))
    paired = sorted(set(images) & set(masks))
    unpaired = sorted([images[c] for c in set(images) - set(masks)] + [masks[c] for c in set(masks) - set(images)])
    training = [SourceCase(case, images[case], (masks[case],)) for case in paired]
    splits = official_splits(paired)
    notes = [] if splits else [f"splits.json not written: the official split needs all 20 cases, "
                               f"{len(set(OFFICIAL_CASES) & set(paired))} are present"]
    description = ("COVID-19-CT-Seg: 20 chest CT scans (10 Coronacases, 10 Radiopaedia) with "
                   + ("infection masks" if labels == "infection" else "left lung, right lung and infection masks")
                   + ". Radiopaedia scans released windowed to [0, 255] were mapped back to HU "
                   "(x / 255 * 1500 - 1250). splits.json (when present) holds the official 5-fold protocol: "
                   "4 training cases per fold, the other 16 for validation and testing.")
    metadata = {
        "description": description,
        "reference": "Ma J. et al., Toward data-efficient learning: a benchmark for COVID-19 CT lung and infection "
                     "segmentation, Medical Physics 48(3):1197-1210, 2021; data: https://zenodo.org/record/3757476",
        "licence": "CC BY-NC-SA",
        "source": "covid19ctseg",
        "label_set": labels,
    }
    return SourceDataset(DEFAULT_NAMES[labels], dict(LABELS[labels]), training,
                         single_label(set(LABELS[labels].values())), unpaired=unpaired, metadata=metadata,
                         image_transform=to_hounsfield, splits=splits, notes=notes)
