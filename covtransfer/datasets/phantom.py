"""Synthetic chest-CT phantoms in Hounsfield units: one shared anatomy and three lesion models.

Every kind draws the same anatomy (table, fat, muscle, ribs, sternum, spine, mediastinum, heart, aorta, airways, lungs
with branching vessels), so a network pre-trained on tumours or effusions meets the intensity and shape statistics of
the COVID-19 target; only the lesion model differs. Smooth structures are drawn on a render grid (the output grid, or a
coarser one for ``clinical``), blurred and upsampled linearly; CT noise is added at the output resolution.
Arrays and spacings are (z, y, x); +y is posterior and +z superior (LPS with identity direction).
This module draws a case's grid and composes the parts: :mod:`~covtransfer.datasets.phantom_anatomy`,
:mod:`~covtransfer.datasets.phantom_lesions` (one function per kind) and :mod:`~covtransfer.datasets.phantom_render`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from covtransfer.datasets.phantom_anatomy import BLOOD_HU, Scene, draw_anatomy
from covtransfer.datasets.phantom_lesions import LESIONS
from covtransfer.datasets.phantom_render import render_grid, to_image, uniform, upsample_mask
from covtransfer.errors import CovtransferError

KINDS = ("covid", "tumor", "effusion")


@dataclass(frozen=True)
class SizeSpec:
    """Ranges one case's grid is drawn from.

    The slice spacing is ``coverage_mm / slices`` clipped to ``slice_spacing``; ``render_spacing`` (mm per axis, 0 =
    output grid) is about the spacing smooth structures are drawn at before linear upsampling.
    """

    slices: tuple[int, int]
    rows: tuple[int, int]
    columns: tuple[int, int]
    inplane_spacing: tuple[float, float]
    slice_spacing: tuple[float, float]
    coverage_mm: tuple[float, float]
    render_spacing: tuple[float, float, float] = (0.0, 0.0, 0.0)
    min_lesion_voxels: int = 20


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec((24, 32), (48, 60), (52, 64), (4.6, 6.0), (5.0, 7.0), (140.0, 200.0)),
    "small": SizeSpec((40, 56), (96, 120), (104, 128), (2.5, 3.2), (3.5, 5.0), (170.0, 250.0)),
    # small's in-plane grid under thick 5-7 mm slices, as in older or low-dose protocols
    "thick": SizeSpec((28, 40), (96, 120), (104, 128), (2.5, 3.2), (5.0, 7.0), (170.0, 250.0)),
    "clinical": SizeSpec((150, 260), (512, 512), (512, 512), (0.6, 0.8), (1.0, 2.5), (260.0, 340.0),
                         render_spacing=(2.2, 1.4, 1.4)),
}



def _draw_grid(spec: SizeSpec, rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    nz = int(rng.integers(spec.slices[0], spec.slices[1] + 1))
    nx = int(rng.integers(spec.columns[0], spec.columns[1] + 1))
    ny = int(rng.integers(spec.rows[0], min(spec.rows[1], nx) + 1))
    inplane = round(uniform(rng, *spec.inplane_spacing), 3)
    slice_spacing = round(float(np.clip(uniform(rng, *spec.coverage_mm) / nz, *spec.slice_spacing)), 3)
    return (nz, ny, nx), (slice_spacing, inplane, inplane)


def _composite_vessels(scene: Scene, block: np.ndarray) -> None:
    """Blend vessel occupancy towards blood HU inside the aerated lung (not inside tumours or fluid)."""
    weight = scene.vessels
    weight *= scene.lung
    weight *= 1 - block
    scene.hu += weight * (BLOOD_HU - scene.hu)


def generate_case(kind: str, size: str, rng: np.random.Generator,
                  with_lungs: bool = False) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """One synthetic chest CT: ``(image int16 HU, label uint8, spacing)``, all (z, y, x).

    Labels: 0 background, 1 lesion; with ``with_lungs`` 0 background, 1 lung, 2 lesion. The lesion is never empty.
    """
    if kind not in LESIONS:
        raise CovtransferError(f"unknown synthetic kind {kind!r}; choose one of {', '.join(KINDS)}")
    if size not in SIZES:
        raise CovtransferError(f"unknown synthetic size {size!r}; choose one of {', '.join(SIZES)}")
    spec = SIZES[size]
    shape, spacing = _draw_grid(spec, rng)
    grid = render_grid(shape, spacing, spec.render_spacing)
    scene = draw_anatomy(grid, spacing, rng)
    anatomy = scene.hu
    for _attempt in range(20):
        scene.hu = anatomy.copy()
        lesion, block = LESIONS[kind](scene, rng)
        if np.count_nonzero(lesion >= 0.5) >= spec.min_lesion_voxels:
            break
    else:
        raise RuntimeError(f"could not place a {kind} lesion in 20 attempts")
    _composite_vessels(scene, block)
    sigma = np.clip(0.8 / np.array(grid.spacing), 0.35, 0.6)  # scanner blur ~0.8 mm, at least partial volume
    image = to_image(ndimage.gaussian_filter(scene.hu, sigma, truncate=3.0), shape, uniform(rng, 10, 25), rng)
    label = np.zeros(shape, dtype=np.uint8)
    if with_lungs:
        label[upsample_mask(scene.lung.astype(np.float32), shape)] = 1
    label[upsample_mask(lesion, shape)] = 2 if with_lungs else 1
    return image, label, spacing
