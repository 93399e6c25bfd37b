"""NSCLC pleural effusion: NSCLC-Radiomics CTs (converted from DICOM to NIfTI) with the PleThora effusion masks.

Files are paired by patient id (``LUNG1-001``), taken from the file name or else from the nearest folder name.
A file is an image when it lies under a folder named ``images*``/``ct*``/``scans*``/``NSCLC-Radiomics*``, and an
effusion mask when it lies under ``masks*``/``labels*``/``seg*``/``Effusions*`` and its name or folder mentions
"effusion". Only patients with an effusion mask are converted (78 of 402 in the real data). Several mask files of
one patient (left/right) are merged into label 1; PleThora's second-reviewer masks are used only when no other
mask of that patient exists.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from covtransfer.datasets.converters.common import (SourceCase, SourceDataset, merged_binary, require_folder,
                                                    strip_image_ending)
from covtransfer.errors import CovtransferError

LABELS = {"background": 0, "effusion": 1}
EXPECTED_LAYOUT = "images/LUNG1-XXX.nii.gz and masks/LUNG1-XXX*effusion*.nii.gz"
IMAGE_FOLDER_PREFIXES = ("image", "ct", "scan", "nsclc-radiomics")
MASK_FOLDER_PREFIXES = ("mask", "label", "seg", "effusion")
_PATIENT = re.compile(r"LUNG1-(\d+)", flags=re.IGNORECASE)


def patient_id(path: Path, root: Path) -> str | None:
    """``LUNG1-XXX`` from the file name, else from the nearest folder between ``root`` and the file."""
    for name in (path.name, *reversed(path.relative_to(root).parts[:-1])):
        match = _PATIENT.search(name)
        if match:
            return f"LUNG1-{int(match.group(1)):03d}"
    return None


def _role(path: Path, root: Path) -> str | None:
    """'image', 'mask' or None, from the nearest folder whose name says which."""
    for folder in reversed(path.relative_to(root).parts[:-1]):
        lower = folder.lower()
        if lower.startswith(MASK_FOLDER_PREFIXES):
            return "mask"
        if lower.startswith(IMAGE_FOLDER_PREFIXES):
            return "image"
    return None


def _nifti_tree(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(folder) / f for f in sorted(files)
                     if not f.startswith(".") and strip_image_ending(f) is not None)
    return found


def _is_effusion_mask(path: Path, root: Path) -> bool:
    return any("effusion" in part.lower() for part in path.relative_to(root).parts)


def _chosen_masks(masks: list[Path]) -> tuple[list[Path], int]:
    """The masks to merge, and how many second-reviewer masks were set aside in favour of the first reviewer."""
    primary = [p for p in masks if "second_reviewer" not in p.name.lower()]
    return (primary, len(masks) - len(primary)) if primary else (masks, 0)


def discover(input_folder: Path, labels: str = "infection") -> SourceDataset:
    """Pair images and effusion masks by patient id; patients without an effusion mask are skipped."""
    root = require_folder(input_folder, "a folder with images/ and masks/ sub-folders")
    images: dict[str, list[Path]] = {}
    masks: dict[str, list[Path]] = {}
    unpaired: list[Path] = []
    ignored = 0
    for path in _nifti_tree(root):
        role = _role(path, root)
        if role == "mask" and not _is_effusion_mask(path, root):
            role = None
        if role is None:
            ignored += 1
            continue
        patient = patient_id(path, root)
        if patient is None:
            unpaired.append(path)
            continue
        (images if role == "image" else masks).setdefault(patient, []).append(path)
    training, second_set_aside = [], 0
    for patient in sorted(masks):
        if patient not in images:
            unpaired.extend(masks[patient])
            continue
        if len(images[patient]) > 1:
            names = ", ".join(str(p) for p in images[patient])
            raise CovtransferError(f"{images[patient][1]}: patient {patient} has more than one image ({names}); "
                                   "keep one of them")
        chosen, set_aside = _chosen_masks(masks[patient])
        second_set_aside += set_aside
        training.append(SourceCase(patient, images[patient][0], tuple(chosen)))
    notes = []
    skipped = len(set(images) - set(masks))
    if skipped:
        notes.append(f"{skipped} patient(s) without an effusion mask skipped")
    if second_set_aside:
        notes.append(f"{second_set_aside} second-reviewer mask(s) not used (first-reviewer masks present)")
    if ignored:
        notes.append(f"{ignored} NIfTI file(s) that are neither under an images folder nor effusion masks ignored")
    metadata = {
        "description": "NSCLC pleural effusion: NSCLC-Radiomics CT scans with the PleThora pleural effusion "
                       "segmentations; only patients with an effusion mask. Label 1 = effusion (per-side and "
                       "multi-file masks merged).",
        "reference": "Aerts H.J.W.L. et al., Nature Communications 5:4006, 2014 (NSCLC-Radiomics); Kiser K.J. et al., "
                     "PleThora: pleural effusion and thoracic cavity segmentations in diseased lungs for "
                     "benchmarking chest CT processing pipelines, Medical Physics 47(11):5941-5952, 2020",
        "licence": "see the TCIA NSCLC-Radiomics and PleThora collection licences",
        "source": "nsclc-pe",
    }
    return SourceDataset("NSCLCEffusion", dict(LABELS), training, merged_binary, unpaired=sorted(unpaired),
                         metadata=metadata, notes=notes)
