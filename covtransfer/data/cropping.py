"""Cropping to the non-zero region, the first step of fingerprinting and preprocessing.

The mask is "any channel != 0" with holes filled; the crop is its bounding box. For CT the body rarely leaves
exact zeros, so the crop is usually small, but it matters for data padded with zeros.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Boolean ``(z, y, x)`` mask of voxels where any channel of ``data`` (``(c, z, y, x)``) is non-zero, holes filled."""
    mask = np.any(data != 0, axis=0)
    return mask if mask.all() else ndimage.binary_fill_holes(mask)


def bounding_box(mask: np.ndarray) -> list[list[int]]:
    """``[[start, stop], ...]`` per axis of the True region; the whole array when the mask is empty.

    Same answer as acvl-utils' ``get_bbox_from_mask``, which scans slice by slice: 2x slower on a body mask and
    25x to 400x on small or empty masks of a 200 x 400 x 400 volume, so this stays.
    """
    if not mask.any():
        return [[0, s] for s in mask.shape]
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append([int(hits[0]), int(hits[-1]) + 1])
    return box


def box_slices(mask: np.ndarray) -> tuple[slice, ...]:
    """The index box of a mask's True voxels as slices (the whole array when it has none)."""
    return tuple(slice(start, stop) for start, stop in bounding_box(mask))


def crop_to_box(array: np.ndarray, box: list[list[int]]) -> np.ndarray:
    """Crop the last ``len(box)`` axes of ``array`` to ``box``."""
    lead = (slice(None),) * (array.ndim - len(box))
    return array[lead + tuple(slice(a, b) for a, b in box)]


def crop_to_nonzero(data: np.ndarray, seg: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, list[list[int]], np.ndarray]:
    """Crop ``data`` (c, z, y, x) and ``seg`` (1, z, y, x) to the non-zero box; also return the box and cropped mask."""
    mask = nonzero_mask(data)
    box = bounding_box(mask)
    cropped_seg = crop_to_box(seg, box) if seg is not None else None
    return crop_to_box(data, box), cropped_seg, box, crop_to_box(mask, box)
