"""Patient coordinates of array voxels and the left/right split of a lung mask.

ITK's physical space is LPS: +x points to the patient's left, +y posterior, +z superior. Coordinates come from the
origin, spacing and direction matrix, so a scan stored flipped or with other direction cosines gets the same sides.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from covtransfer.data.cropping import box_slices
from covtransfer.data.geometry import Geometry

_X, _Z = 0, 2  # patient axes in ITK (x, y, z) order
# a component with at least this share of its voxels on each side of the midline is two lungs joined, split voxelwise
_FUSED_SHARE = 0.2


def _direction(geometry: Geometry) -> np.ndarray:
    return np.asarray(geometry.direction, dtype=float).reshape(3, 3)


def craniocaudal_axis(geometry: Geometry) -> int:
    """The array axis (in z, y, x order) closest to the patient's head-feet axis."""
    direction = _direction(geometry)
    return int(np.argmax([abs(direction[_Z, 2 - axis]) for axis in range(3)]))


def superior_end(geometry: Geometry) -> tuple[int, int]:
    """``(axis, sign)``: the craniocaudal array axis, and +1 when the head lies at its high index end, -1 at its
    low end."""
    axis = craniocaudal_axis(geometry)
    return axis, 1 if _direction(geometry)[_Z, 2 - axis] > 0 else -1


def _coefficients(geometry: Geometry, patient_axis: int) -> np.ndarray:
    """mm along ``patient_axis`` per index step of each array axis (z, y, x)."""
    direction = _direction(geometry)
    return np.array([direction[patient_axis, 2 - axis] * float(geometry.spacing[axis]) for axis in range(3)])


def patient_point(index: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The LPS point (mm, x y z) of a (z, y, x) array index, fractional indices allowed."""
    steps = np.asarray(index, dtype=float)[::-1] * np.asarray(geometry.spacing, dtype=float)[::-1]
    return np.asarray(geometry.origin, dtype=float) + _direction(geometry) @ steps


def _patient_left_of(box: tuple[slice, ...], geometry: Geometry, midline: float) -> np.ndarray:
    """Which voxels of the index box lie on the patient's left of the sagittal plane x = ``midline``, computed a
    slice at a time so no full-size coordinate array is made."""
    c = _coefficients(geometry, _X)
    z, y, x = (np.arange(b.start, b.stop) for b in box)
    threshold = midline - float(geometry.origin[_X])
    inplane = c[1] * y[:, None] + c[2] * x[None, :]
    out = np.empty((len(z), len(y), len(x)), dtype=bool)
    for i, zi in enumerate(z):
        np.greater(inplane, threshold - c[0] * zi, out=out[i])
    return out


def _mean_index(mask: np.ndarray) -> np.ndarray:
    """The mean (z, y, x) index of a mask's True voxels, from its three projections."""
    total = np.count_nonzero(mask)
    return np.array([np.dot(np.count_nonzero(mask, axis=tuple(a for a in range(3) if a != axis)),
                            np.arange(mask.shape[axis])) / total for axis in range(3)])


def split_sides(lung: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """``(right, left)`` masks of a lung mask, by patient x: each connected component goes to the side holding most
    of its voxels relative to the midline (through the centroid of all lung voxels); a component with a good share
    of its voxels on both sides (lungs touching at the anterior junction) is cut at the midline plane."""
    right, left = np.zeros_like(lung, dtype=bool), np.zeros_like(lung, dtype=bool)
    if not lung.any():
        return right, left
    midline = float(patient_point(_mean_index(lung), geometry)[_X])
    outer = box_slices(lung)
    components, _ = ndimage.label(lung[outer])
    for index, inner in enumerate(ndimage.find_objects(components), start=1):
        box = tuple(slice(o.start + i.start, o.start + i.stop) for o, i in zip(outer, inner))
        part = components[inner] == index
        on_left = _patient_left_of(box, geometry, midline)
        share_left = float(np.count_nonzero(on_left & part)) / np.count_nonzero(part)
        if min(share_left, 1 - share_left) >= _FUSED_SHARE:
            left[box] |= part & on_left
            right[box] |= part & ~on_left
        elif share_left > 0.5:
            left[box] |= part
        else:
            right[box] |= part
    return right, left
