"""Target spacing and axis transpose: the resolution every case is resampled to, and which axis goes first.

The target is the per-axis median spacing, except for strongly anisotropic data with few slices, where the coarse
axis takes the 10th percentile of its spacings so that thin-slice cases are not thrown away (nnU-Net's rule).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

ANISOTROPY_THRESHOLD = 3.0
ANISOTROPIC_PERCENTILE = 10.0


def target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]],
                   anisotropy_threshold: float = ANISOTROPY_THRESHOLD) -> list[float]:
    """Per-axis median of ``spacings``; the coarsest axis gets its 10th percentile when it is anisotropic.

    The rule fires only when both the median spacing of the coarsest axis exceeds ``anisotropy_threshold`` times
    every other median spacing and its median size (of ``shapes``, the shapes after cropping) times the threshold
    is below every other median size. The result is never finer than the other axes (plus 1e-5).
    """
    spacings = np.asarray(spacings, dtype=np.float64)
    target = np.percentile(spacings, 50, axis=0)
    median_shape = np.percentile(np.asarray(shapes, dtype=np.float64), 50, axis=0)
    worst = int(np.argmax(target))
    others = [axis for axis in range(len(target)) if axis != worst]
    max_other = max(target[axis] for axis in others)
    anisotropic_spacing = target[worst] > anisotropy_threshold * max_other
    few_slices = median_shape[worst] * anisotropy_threshold < min(median_shape[axis] for axis in others)
    if anisotropic_spacing and few_slices:
        coarse = float(np.percentile(spacings[:, worst], ANISOTROPIC_PERCENTILE))
        if coarse < max_other:
            coarse = max_other + 1e-5
        target[worst] = coarse
    return [float(s) for s in target]


def transpose_axes(spacing: Sequence[float]) -> tuple[list[int], list[int]]:
    """``(transpose_forward, transpose_backward)`` moving the axis with the largest spacing to position 0.

    The other two axes keep their relative order; ``backward`` undoes ``forward``.
    """
    first = int(np.argmax(spacing))
    forward = [first] + [axis for axis in range(len(spacing)) if axis != first]
    backward = [forward.index(axis) for axis in range(len(spacing))]
    return forward, backward


def resampled_shape(shape: Sequence[float], spacing: Sequence[float], new_spacing: Sequence[float]) -> list[int]:
    """The shape ``shape`` has after resampling from ``spacing`` to ``new_spacing`` (rounded per axis)."""
    return [int(round(old / new * size)) for size, old, new in zip(shape, spacing, new_spacing)]


def median_resampled_shape(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]],
                           new_spacing: Sequence[float]) -> list[float]:
    """Per-axis median of every case's shape after resampling to ``new_spacing`` (may hold halves)."""
    resampled = [resampled_shape(shape, spacing, new_spacing) for spacing, shape in zip(spacings, shapes)]
    return [float(v) for v in np.median(np.asarray(resampled, dtype=np.float64), axis=0)]
