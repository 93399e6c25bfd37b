"""Tiny synthetic files laid out exactly like each public release, for the converter tests.

Volumes are 8 x 16 x 16 (z, y, x) with anisotropic spacing and a rotated direction, written with SimpleITK directly
so the tests do not rely on the code they check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SHAPE = (8, 16, 16)
SPACING_ZYX = (2.5, 0.7, 0.8)
ORIGIN = (-120.5, 33.25, 410.0)
DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # 90 degrees about z

COVID_CASES = (
    "coronacases_001", "coronacases_002", "coronacases_003", "coronacases_004", "coronacases_005",
    "coronacases_006", "coronacases_007", "coronacases_008", "coronacases_009", "coronacases_010",
    "radiopaedia_10_85902_1", "radiopaedia_10_85902_3", "radiopaedia_14_85914_0", "radiopaedia_27_86410_0",
    "radiopaedia_29_86490_1", "radiopaedia_29_86491_1", "radiopaedia_36_86526_0", "radiopaedia_40_86625_0",
    "radiopaedia_4_85506_1", "radiopaedia_7_85703_0",
)


def write_volume(path: Path, array: np.ndarray, spacing_zyx=SPACING_ZYX, origin=ORIGIN, direction=DIRECTION) -> Path:
    """Write a (z, y, x) array as NIfTI with the given geometry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in spacing_zyx[::-1]])
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def hu_volume(rng: np.random.Generator, shape=SHAPE) -> np.ndarray:
    """An int16 CT volume in HU (air to soft tissue)."""
    return rng.integers(-1024, 400, size=shape).astype(np.int16)


def lesion_mask(rng: np.random.Generator, shape=SHAPE, value: int = 1) -> np.ndarray:
    """A random box of ``value`` in an otherwise empty uint8 volume."""
    mask = np.zeros(shape, dtype=np.uint8)
    z, y, x = (int(rng.integers(0, s - 3)) for s in shape)
    mask[z:z + 3, y:y + 4, x:x + 4] = value
    return mask


def covid_image_name(case_id: str, style: str = "org") -> str:
    """The image file name a mirror uses: ``org`` (Zenodo), ``plain`` (``<case>``) or ``nnunet`` (``_0000``)."""
    if style == "plain":
        return f"{case_id}.nii.gz"
    if style == "nnunet":
        return f"{case_id}_0000.nii.gz"
    if case_id.startswith("coronacases_"):
        return f"coronacases_org_{case_id.split('_')[1]}.nii.gz"
    return f"radiopaedia_org_covid-19-pneumonia-{case_id[len('radiopaedia_'):]}-dcm.nii.gz"


def write_covid19ctseg(root: Path, cases=COVID_CASES, style: str = "org", seed: int = 0) -> dict[str, dict]:
    """COVID-19-CT-Seg_20cases/ + the three mask folders; Radiopaedia images windowed to [0, 255] (uint8).

    Returns per case the arrays written: ``image``, ``infection`` (0/1) and ``lung_infection`` (0..3).
    """
    rng = np.random.default_rng(seed)
    written = {}
    for case_id in cases:
        if case_id.startswith("radiopaedia"):
            image = rng.integers(0, 256, size=SHAPE).astype(np.uint8)
            image.flat[0], image.flat[1] = 0, 255
        else:
            image = hu_volume(rng)
        lung_infection = np.zeros(SHAPE, dtype=np.uint8)
        lung_infection[1:7, 2:14, 1:7] = 1
        lung_infection[1:7, 2:14, 9:15] = 2
        lung_infection[lesion_mask(rng) == 1] = 3
        infection = (lung_infection == 3).astype(np.uint8)
        lung = np.where(lung_infection == 3, np.where(np.arange(16) < 8, 1, 2)[None, None, :], lung_infection)
        write_volume(root / "COVID-19-CT-Seg_20cases" / covid_image_name(case_id, style), image)
        write_volume(root / "Infection_Mask" / f"{case_id}.nii.gz", infection)
        write_volume(root / "Lung_and_Infection_Mask" / f"{case_id}.nii.gz", lung_infection)
        write_volume(root / "Lung_Mask" / f"{case_id}.nii.gz", lung.astype(np.uint8))
        written[case_id] = {"image": image, "infection": infection, "lung_infection": lung_infection}
    return written


def write_msd_lung(root: Path, train_numbers=(1, 3, 4), test_numbers=(2,), seed: int = 1) -> Path:
    """Task06_Lung/ with imagesTr, labelsTr, imagesTs, an MSD-style dataset.json and a macOS ``._`` fork file."""
    rng = np.random.default_rng(seed)
    task = root / "Task06_Lung"
    for n in train_numbers:
        write_volume(task / "imagesTr" / f"lung_{n:03d}.nii.gz", hu_volume(rng))
        write_volume(task / "labelsTr" / f"lung_{n:03d}.nii.gz", lesion_mask(rng))
    for n in test_numbers:
        write_volume(task / "imagesTs" / f"lung_{n:03d}.nii.gz", hu_volume(rng))
    (task / "imagesTr" / f"._lung_{train_numbers[0]:03d}.nii.gz").write_bytes(b"\x00\x05\x16\x07 mac fork")
    (task / "dataset.json").write_text(json.dumps({
        "name": "Lung", "description": "Lung and tumour segmentation", "reference": "The Cancer Imaging Archive",
        "licence": "CC-BY-SA 4.0", "release": "1.0 04/05/2018", "tensorImageSize": "3D",
        "modality": {"0": "CT"}, "labels": {"0": "background", "1": "cancer"},
        "numTraining": len(train_numbers), "numTest": len(test_numbers),
        "training": [{"image": f"./imagesTr/lung_{n:03d}.nii.gz", "label": f"./labelsTr/lung_{n:03d}.nii.gz"}
                     for n in train_numbers],
        "test": [f"./imagesTs/lung_{n:03d}.nii.gz" for n in test_numbers]}, indent=4))
    return task


def write_structseg_gtv(root: Path, numbers=(1, 2, 10), label_value: int = 1, seed: int = 2) -> Path:
    """Lung_GTV/<n>/data.nii.gz and label.nii.gz for each case number."""
    rng = np.random.default_rng(seed)
    lung_gtv = root / "Lung_GTV"
    for n in numbers:
        write_volume(lung_gtv / str(n) / "data.nii.gz", hu_volume(rng))
        write_volume(lung_gtv / str(n) / "label.nii.gz", lesion_mask(rng, value=label_value))
    return lung_gtv


def write_nsclc_pe(root: Path, seed: int = 3) -> dict[str, dict]:
    """images/ and masks/ after DICOM conversion, PleThora-style mask names.

    LUNG1-001: first- and second-reviewer effusion masks (and a thoracic cavity mask to be ignored);
    LUNG1-002: separate left and right effusion masks; LUNG1-003: image only (no effusion);
    LUNG1-004: effusion mask without an image. Returns the arrays written per patient.
    """
    rng = np.random.default_rng(seed)
    written: dict[str, dict] = {}
    for patient in ("LUNG1-001", "LUNG1-002", "LUNG1-003"):
        image = hu_volume(rng)
        write_volume(root / "images" / f"{patient}.nii.gz", image)
        written[patient] = {"image": image}
    masks = root / "masks"
    first, second = lesion_mask(rng, value=1), lesion_mask(rng, value=1)
    write_volume(masks / "LUNG1-001" / "LUNG1-001_effusion_first_reviewer.nii.gz", first)
    write_volume(masks / "LUNG1-001" / "LUNG1-001_effusion_second_reviewer.nii.gz", second)
    write_volume(masks / "LUNG1-001" / "LUNG1-001_thor_cav_primary_reviewer.nii.gz", np.ones(SHAPE, np.uint8))
    written["LUNG1-001"].update(first=first, second=second)
    left, right = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    left[2:5, 3:9, 1:5] = 1
    right[3:6, 3:9, 11:15] = 255
    write_volume(masks / "LUNG1-002_effusion_left.nii.gz", left)
    write_volume(masks / "LUNG1-002_effusion_right.nii.gz", right)
    written["LUNG1-002"].update(left=left, right=right)
    write_volume(masks / "LUNG1-004_effusion.nii.gz", lesion_mask(rng))
    return written
