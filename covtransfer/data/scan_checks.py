"""Plausibility checks run on every scan before heavy work (verify, preprocess, predict), so that a unit mix-up or
undefined voxels get a one-line refusal instead of a silent result or the out-of-memory killer."""

from __future__ import annotations

import math
import os
import sys
from typing import Sequence

import numpy as np
import psutil

from covtransfer.data.image_io import count_nonfinite_nifti, file_ending
from covtransfer.errors import CovtransferError

SPACING_RANGE_MM = (0.05, 20.0)
MAX_EXTENT_MM = 2000.0
MEMORY_FRACTION = 0.8
BYTES_PER_RESAMPLED_VOXEL = 4 * 6
MIN_CT_RANGE_HU = 100.0


def check_spacing(path: str | os.PathLike, spacing: Sequence[float],
                  spacing_range: tuple[float, float] = SPACING_RANGE_MM) -> None:
    """Refuse a voxel spacing outside ``spacing_range`` mm per axis, naming the likely unit mix-up."""
    low, high = spacing_range
    for value in spacing:
        if not math.isfinite(value) or value <= 0:
            raise CovtransferError(f"{path}: spacing {value} mm is not a positive number: the header is broken")
        if value > high:
            raise CovtransferError(f"{path}: spacing {value} mm is above {high} mm: the header may be in cm")
        if value < low:
            raise CovtransferError(f"{path}: spacing {value} mm is below {low} mm: the header may be in m or um")


def check_extent(path: str | os.PathLike, shape: Sequence[int], spacing: Sequence[float],
                 max_extent_mm: float = MAX_EXTENT_MM) -> None:
    """Refuse a physical extent (shape times spacing) beyond any body, a sign of wrong spacing."""
    for size, value in zip(shape, spacing):
        if size * value > max_extent_mm:
            raise CovtransferError(f"{path}: physical extent {size * value:.0f} mm ({size} voxels of {value} mm) "
                                   f"exceeds {max_extent_mm:.0f} mm: the spacing in the header is implausible")


def check_direction(path: str | os.PathLike, direction: Sequence[float]) -> None:
    """Refuse a direction matrix that is not a rotation (singular or non-orthonormal)."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(matrix)) or not np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-3):
        raise CovtransferError(f"{path}: direction matrix {matrix.round(3).tolist()} is degenerate (not "
                               f"orthonormal): the header is broken")


def check_voxels(path: str | os.PathLike, array: np.ndarray) -> None:
    """Refuse NaN or infinite voxels: a segmentation of undefined intensities is meaningless (ITK reads NaN in
    NIfTI as 0, so NIfTI files are counted from their raw voxel data)."""
    nan = inf = 0
    if file_ending(path) in (".nii", ".nii.gz"):
        nan, inf = count_nonfinite_nifti(path)
    elif np.issubdtype(array.dtype, np.floating):
        nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    if nan or inf:
        raise CovtransferError(f"{path}: {nan} NaN and {inf} infinite voxel(s): the scan is corrupt or was "
                               f"exported with undefined padding")


def check_volume(path: str | os.PathLike, shape: Sequence[int]) -> None:
    """Refuse a single slice (an axis of one voxel): a 3-D model needs a volume, and resampling one slice to the
    model's spacing invents the rest."""
    if len(shape) == 3 and min(shape) == 1:
        raise CovtransferError(f"{path}: a single slice ({'x'.join(str(s) for s in shape)} voxels): the 3-D model "
                               f"needs a volume of several slices")


def check_ct_intensities(path: str | os.PathLike, array: np.ndarray) -> None:
    """Refuse a CT channel that cannot hold Hounsfield units: 8-bit voxels (a windowed or screenshot export) or
    an intensity range narrower than ``MIN_CT_RANGE_HU`` (a label map or a constant image); a body CT spans air to
    soft tissue, about 1,000 HU."""
    if array.dtype in (np.uint8, np.int8, np.bool_):
        raise CovtransferError(f"{path}: {array.dtype} voxels cannot hold Hounsfield units (-1024 to 3071): the "
                               f"scan looks like a windowed 8-bit export, not a CT")
    low, high = float(np.nanmin(array)), float(np.nanmax(array))
    if high - low < MIN_CT_RANGE_HU:
        raise CovtransferError(f"{path}: intensities span only {low:g} to {high:g}: a label map or a blank image, "
                               f"not a CT in Hounsfield units")


def check_resampled_memory(path: str | os.PathLike, new_shape: Sequence[int], channels: int = 1) -> None:
    """Refuse resampling to a shape whose working memory would exceed the available memory (psutil)."""
    needed = math.prod(int(s) for s in new_shape) * max(channels, 1) * BYTES_PER_RESAMPLED_VOXEL
    available = psutil.virtual_memory().available * MEMORY_FRACTION
    if needed > available:
        raise CovtransferError(f"{path}: resampling to {list(new_shape)} voxels needs about {needed / 2**30:.1f} GiB, "
                               f"more than the {available / 2**30:.1f} GiB available: the spacing may be wrong")


def check_header(path: str | os.PathLike, shape: Sequence[int], spacing: Sequence[float],
                 direction: Sequence[float], allow_spacing: bool = False) -> None:
    """All header checks of one scan; ``allow_spacing`` turns the spacing and extent refusal into a warning."""
    try:
        check_spacing(path, spacing)
        check_extent(path, shape, spacing)
    except CovtransferError as exc:
        if not allow_spacing:
            raise CovtransferError(f"{exc} (pass --allow-spacing to go on anyway)") from None
        print(f"warning: {exc}; going on (--allow-spacing)", file=sys.stderr)
    check_direction(path, direction)
