"""Write synthetic chest-CT datasets (COVID-19-like, lung tumour, pleural effusion) in the raw nnU-Net v2 layout.

Each case draws from its own generator, seeded by ``(seed, kind, case index)``, so the same seed gives the same
voxels whatever the number of cases, and the dataset folder appears only once every file in it is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from covtransfer.atomic import atomic_directory
from covtransfer.config import dataset_name, parse_dataset_id, resolve_roots
from covtransfer.data.dataset_json import DatasetInfo
from covtransfer.data.image_io import Geometry, write_image
from covtransfer.datasets.phantom import KINDS, SIZES, generate_case
from covtransfer.errors import CovtransferError

__all__ = ["KINDS", "SIZES", "DEFAULT_NAMES", "case_rng", "generate_case", "make_synthetic_dataset"]

DEFAULT_NAMES = {"covid": "SyntheticCOVID", "tumor": "SyntheticTumor", "effusion": "SyntheticEffusion"}
_LESION_WORDS = {"covid": "COVID-19-like ground-glass opacities and consolidation",
                 "tumor": "lung tumours (lobulated soft-tissue masses)",
                 "effusion": "pleural effusion (dependent fluid crescents)"}
FILE_ENDING = ".nii.gz"
# generated phantoms hold no patient data and no third-party work: a model trained on them can be exported freely
SYNTHETIC_LICENCE = "CC0-1.0"


def case_rng(seed: int, kind: str, case_index: int) -> np.random.Generator:
    """The generator of one case: independent per (seed, kind, case index)."""
    return np.random.default_rng(np.random.SeedSequence([seed, KINDS.index(kind), case_index]))


def _origin(rng: np.random.Generator, shape, spacing) -> tuple[float, float, float]:
    """A scanner-like origin (x, y, z): the volume roughly centred in-plane, the table position varying."""
    nz, ny, nx = shape
    sz, sy, sx = spacing
    return (round(-nx * sx / 2 + float(rng.uniform(-30, 30)), 3), round(-ny * sy / 2 + float(rng.uniform(-30, 30)), 3),
            round(float(rng.uniform(-450, -100)), 3))


def _check_arguments(kind: str, n_train: int, n_test: int, size: str, seed: int) -> None:
    if kind not in KINDS:
        raise CovtransferError(f"unknown synthetic kind {kind!r}; choose one of {', '.join(KINDS)}")
    if size not in SIZES:
        raise CovtransferError(f"unknown synthetic size {size!r}; choose one of {', '.join(SIZES)}")
    if n_train < 1:
        raise CovtransferError(f"need at least one training case, got {n_train}")
    if n_test < 0:
        raise CovtransferError(f"the number of test cases must not be negative, got {n_test}")
    if seed < 0:
        raise CovtransferError(f"the seed must not be negative, got {seed}")


def _check_target(raw_root: Path, folder: Path, dataset_id: int, overwrite: bool) -> None:
    if folder.exists() and not overwrite:
        raise CovtransferError(f"{folder}: already exists; pass --overwrite to replace it")
    if raw_root.is_dir():
        for other in raw_root.iterdir():
            if other.is_dir() and other.name != folder.name and parse_dataset_id(other.name) == dataset_id:
                raise CovtransferError(f"{other}: dataset id {dataset_id} is already taken; choose another id")


def make_synthetic_dataset(kind: str, dataset_id: int, n_train: int, n_test: int = 0, size: str = "tiny",
                           seed: int = 0, name: str | None = None, raw_root: str | os.PathLike | None = None,
                           with_lungs: bool = False, overwrite: bool = False) -> Path:
    """Write ``RAW/DatasetNNN_Name`` with ``n_train`` labelled training and ``n_test`` labelled test cases.

    Case ids are ``<kind>_000`` onwards; test cases continue the numbering after the training cases. Labels are
    background 0 / lesion 1, or background 0 / lung 1 / lesion 2 with ``with_lungs``. Returns the dataset folder.
    """
    _check_arguments(kind, n_train, n_test, size, seed)
    raw = resolve_roots(raw=raw_root).raw
    folder = raw / dataset_name(dataset_id, name or DEFAULT_NAMES[kind])
    _check_target(raw, folder, dataset_id, overwrite)
    labels = {"background": 0, "lung": 1, "lesion": 2} if with_lungs else {"background": 0, "lesion": 1}
    total = n_train + n_test
    with atomic_directory(folder, overwrite=overwrite) as tmp:
        for index in tqdm(range(total), desc=f"{folder.name}", unit="case", disable=total <= 3):
            subset = "Tr" if index < n_train else "Ts"
            case_id = f"{kind}_{index:03d}"
            rng = case_rng(seed, kind, index)
            image, label, spacing = generate_case(kind, size, rng, with_lungs=with_lungs)
            geometry = Geometry(spacing, _origin(rng, image.shape, spacing))
            write_image(tmp / f"images{subset}" / f"{case_id}_0000{FILE_ENDING}", image, geometry)
            write_image(tmp / f"labels{subset}" / f"{case_id}{FILE_ENDING}", label, geometry)
        description = (f"Synthetic chest-CT phantoms in HU with {_LESION_WORDS[kind]}, written by "
                       f"covtransfer_make_synthetic (kind {kind}, seed {seed}, size {size}); not patient data.")
        extra = {"description": description, "licence": SYNTHETIC_LICENCE, "numTest": n_test,
                 "synthetic": {"kind": kind, "seed": seed, "size": size, "with_lungs": with_lungs}}
        DatasetInfo(name or DEFAULT_NAMES[kind], {0: "CT"}, labels, n_train, FILE_ENDING, extra).save(tmp)
    return folder
