"""The training benchmarks' synthetic case: standard-normal intensities, raised by 2 inside three random ellipsoid
lesions. numpy only, so ``train_step.py`` (covtransfer) and ``nnunet_train_step.py`` (nnU-Net's environment) draw
the same cases from the same generator."""

from __future__ import annotations

import numpy as np


def ellipsoid_case(shape: list[int], rng: np.random.Generator, seg_dtype=np.int16) -> tuple[np.ndarray, np.ndarray]:
    """One case as (data, seg), each with a leading channel axis; draws the lesions, then the noise, from ``rng``."""
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij", sparse=True)
    seg = np.zeros(shape, dtype=seg_dtype)
    for _ in range(3):
        centre = [rng.uniform(0.2, 0.8) * s for s in shape]
        radius = [rng.uniform(0.05, 0.12) * s for s in shape]
        seg[sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius)) <= 1] = 1
    data = rng.standard_normal(shape, dtype=np.float32)
    data += 2 * seg
    return data[None], seg[None]
