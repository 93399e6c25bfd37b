"""Tiny raw and preprocessed datasets for training, transfer, inference and study tests (seconds to build)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from covtransfer.config import Roots, dataset_name
from covtransfer.data.dataset_json import DatasetInfo
from covtransfer.data.image_io import Geometry, write_image
from covtransfer.workflow.plan_and_preprocess import plan_and_preprocess

FINGERPRINT_VOXELS = 10 ** 5  # the fingerprint's foreground sample budget: plenty for volumes of a few thousand voxels
# covtransfer_study at smoke scale on the tiny datasets 11 (the target), 12 and 13 (the sources)
STUDY_FLAGS = ["--target", "11", "--sources", "12", "13", "--folds", "all", "--preset", "cpu", "--epochs", "1",
               "--iters-per-epoch", "2", "--val-iters", "1", "--no-tta", "-np", "1", "--fingerprint-voxels",
               str(FINGERPRINT_VOXELS)]


def blob_case(rng: np.random.Generator, shape=(16, 32, 32), intensity: float = 300.0,
              spacing=(2.0, 1.5, 1.5)) -> tuple[np.ndarray, np.ndarray]:
    """A noisy 'body' with one bright ellipsoidal lesion at a random place; the label marks the lesion."""
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    centre = [rng.uniform(0.3 * s, 0.7 * s) for s in shape]
    radius = [rng.uniform(0.12, 0.2) * s for s in shape]
    lesion = sum(((g - c) / r) ** 2 for g, c, r in zip((z, y, x), centre, radius)) <= 1
    image = rng.normal(-100.0, 40.0, shape)
    image[lesion] += intensity
    return image.astype(np.float32), lesion.astype(np.uint8)


def write_raw_dataset(raw_root: Path, dataset_id: int, name: str, n_train: int, n_test: int = 0, seed: int = 0,
                      intensity: float = 300.0, shape=(16, 32, 32)) -> Path:
    """A raw dataset of blob cases in the nnU-Net v2 layout."""
    folder = raw_root / dataset_name(dataset_id, name)
    rng = np.random.default_rng(seed)
    for subset, count in (("Tr", n_train), ("Ts", n_test)):
        for i in range(count):
            image, label = blob_case(rng, shape, intensity)
            geometry = Geometry((2.0, 1.5, 1.5), (float(i), -3.0, 5.0))
            case = f"{name.lower()}_{subset.lower()}{i:03d}"
            write_image(folder / f"images{subset}" / f"{case}_0000.nii.gz", image, geometry)
            write_image(folder / f"labels{subset}" / f"{case}.nii.gz", label, geometry)
    DatasetInfo(name, {0: "CT"}, {"background": 0, "lesion": 1}, n_train).save(folder)
    return folder


def write_study_datasets(raw_root: Path) -> None:
    """The raw datasets of ``STUDY_FLAGS``: a target with test cases and two brighter sources."""
    write_raw_dataset(raw_root, 11, "Target", n_train=4, n_test=2, seed=1)
    write_raw_dataset(raw_root, 12, "SourceA", n_train=2, seed=2, intensity=400.0)
    write_raw_dataset(raw_root, 13, "SourceB", n_train=2, seed=3, intensity=500.0)


def preprocessed_roots(base: Path, datasets: dict[int, tuple[str, int, int]], plans_from: int | None = None
                       ) -> Roots:
    """Write and preprocess (cpu preset) datasets ``{id: (name, n_train, n_test)}``; the first plans the rest
    when ``plans_from`` is given."""
    roots = Roots(base / "raw", base / "preprocessed", base / "results")
    for i, (dataset_id, (name, n_train, n_test)) in enumerate(datasets.items()):
        write_raw_dataset(roots.raw, dataset_id, name, n_train, n_test, seed=dataset_id,
                          intensity=300.0 + 100 * i)
    ids = list(datasets)
    if plans_from is None:
        plan_and_preprocess(ids, roots, preset="cpu", num_processes=1, fingerprint_voxels=FINGERPRINT_VOXELS)
    else:
        plan_and_preprocess([plans_from], roots, preset="cpu", num_processes=1,
                            fingerprint_voxels=FINGERPRINT_VOXELS)
        others = [i for i in ids if i != plans_from]
        if others:
            plan_and_preprocess(others, roots, plans_from=plans_from, num_processes=1,
                                fingerprint_voxels=FINGERPRINT_VOXELS)
    return roots


def smooth(shape, spacing=(1.0, 1.0, 1.0)):
    """A smooth test function sampled at voxel centres (physical coordinates in mm)."""
    z, y, x = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij", sparse=True)
    return (np.sin(z / 6.0) * np.cos(y / 7.0) + 0.5 * np.sin(x / 5.0 + 0.3)).astype(np.float32)
