"""Shared test setup: the package on sys.path, the ``gpu`` marker, quiet single-threaded torch, and the
``tiny_dataset`` fixture of the planning and fingerprint tests."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one")


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_dataset(tmp_path):
    """Three cases with zero borders (cropped away) and a foreground block each: (folder, DatasetInfo, cases)."""
    from covtransfer.data.dataset_json import DatasetInfo
    from covtransfer.data.image_io import Geometry, write_image

    rng = np.random.default_rng(0)
    folder = tmp_path / "Dataset001_Test"
    info = DatasetInfo("Dataset001_Test", {0: "CT"}, {"background": 0, "lesion": 1}, 3)
    info.save(folder)
    cases = {}
    for index, (shape, box, spacing) in enumerate((((10, 12, 14), (2, 9, 1, 11, 3, 12), (2.0, 0.7, 0.7)),
                                                   ((8, 16, 12), (0, 8, 2, 14, 0, 12), (3.0, 0.8, 0.8)),
                                                   ((12, 10, 10), (1, 11, 1, 9, 1, 9), (2.5, 0.9, 0.9)))):
        image = np.zeros(shape, dtype=np.int16)
        z0, z1, y0, y1, x0, x1 = box
        block = rng.integers(-1000, 1000, (z1 - z0, y1 - y0, x1 - x0))
        image[z0:z1, y0:y1, x0:x1] = np.where(block == 0, 1, block)
        label = np.zeros(shape, dtype=np.uint8)
        label[z0 + 1:z1 - 1, y0 + 1:y1 - 2, x0 + 2:x1 - 1] = 1
        write_image(folder / "imagesTr" / f"case_{index}_0000.nii.gz", image, Geometry(spacing))
        write_image(folder / "labelsTr" / f"case_{index}.nii.gz", label, Geometry(spacing))
        cases[f"case_{index}"] = (image, label, box, shape, spacing)
    return folder, info, cases
