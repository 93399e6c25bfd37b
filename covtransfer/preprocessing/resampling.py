"""Resampling images, label maps and probabilities to a new voxel spacing, one axis at a time.

Spline interpolation in the manner of ``scipy.ndimage.zoom`` (``grid_mode=True``, edge mode: voxel areas stay
aligned, as in skimage's ``resize``) is a tensor product of 1-D operators, so a 3-D resize equals three 1-D resizes
applied one after another. Each 1-D operator is an explicit ``(n_out, n_in)`` matrix, built once per size pair by
resizing an identity with scipy itself: exactly scipy's kernel, prefilter and boundary handling. Wide operators
(cubic: the spline prefilter makes every row dense) are applied with BLAS matrix products; narrow ones (linear,
nearest) as a weighted gather of one or two neighbours. Everything runs in float32.

Separate-z: when the spacing is anisotropic (max/min above a threshold) and exactly one axis is the coarse one,
that axis is interpolated with ``order_z`` (nearest by default) and the other two with ``order``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import ndimage

from covtransfer.data.cropping import bounding_box

_GATHER_MAX_WIDTH = 2
# 0.5 less float32 rounding: an exact tie in exact arithmetic goes to the later label
_LABEL_THRESHOLD = 0.5 - 1e-5


def compute_new_shape(shape: Sequence[int], current_spacing: Sequence[float],
                      target_spacing: Sequence[float]) -> list[int]:
    """The shape at ``target_spacing``: ``round(current / target × shape)`` per axis, at least 1."""
    return [max(1, int(round(float(c) / float(t) * int(s))))
            for s, c, t in zip(shape, current_spacing, target_spacing)]


def _coarse_axis(spacing: Sequence[float]) -> int | None:
    spacing = np.asarray(spacing, dtype=float)
    coarse = np.flatnonzero(spacing == spacing.max())
    return int(coarse[0]) if len(coarse) == 1 else None


def _anisotropic(spacing: Sequence[float], threshold: float) -> bool:
    spacing = np.asarray(spacing, dtype=float)
    return bool(spacing.max() / spacing.min() > threshold)


def separate_z_axis(current_spacing: Sequence[float], target_spacing: Sequence[float],
                    anisotropy_threshold: float = 3.0) -> int | None:
    """The axis to interpolate on its own (with ``order_z``), or None for plain 3-D interpolation.

    The current spacing decides when it is anisotropic, else the target spacing does; two axes tied as the
    coarsest turn separate-z off.
    """
    if _anisotropic(current_spacing, anisotropy_threshold):
        return _coarse_axis(current_spacing)
    if _anisotropic(target_spacing, anisotropy_threshold):
        return _coarse_axis(target_spacing)
    return None


@dataclass(frozen=True)
class _AxisOperator:
    """A 1-D resize as a matrix ``(n_out, n_in)`` plus, per output row, where its non-zero weights start."""

    matrix: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> "_AxisOperator":
        nonzero = matrix != 0
        start = np.argmax(nonzero, axis=1)
        stop = matrix.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
        return cls(np.ascontiguousarray(matrix, dtype=np.float32), start, stop)

    @property
    def width(self) -> int:
        return int((self.stop - self.start).max())

    def restrict(self, in_start: int, in_stop: int) -> tuple[int, int, int, int, "_AxisOperator"]:
        """The operator for input that is zero outside ``[in_start, in_stop)``.

        Returns the output rows ``[out_start, out_stop)`` that can be non-zero, the input window they read and the
        operator reduced to those rows and that window.
        """
        rows = np.flatnonzero((self.stop > in_start) & (self.start < in_stop))
        out_start, out_stop = int(rows[0]), int(rows[-1]) + 1
        win_start = int(self.start[out_start:out_stop].min())
        win_stop = int(self.stop[out_start:out_stop].max())
        sub = self.matrix[out_start:out_stop, win_start:win_stop]
        return out_start, out_stop, win_start, win_stop, _AxisOperator.from_matrix(sub)

    def apply(self, array: np.ndarray, axis: int) -> np.ndarray:
        """Resize ``array`` (3-D float32) along ``axis``."""
        if self.width <= _GATHER_MAX_WIDTH:
            return self._gather(array, axis)
        return self._matmul(array, axis)

    def _gather(self, array: np.ndarray, axis: int) -> np.ndarray:
        n_in = self.matrix.shape[1]
        rows = np.arange(self.matrix.shape[0])
        shape = [1, 1, 1]
        shape[axis] = -1
        out = None
        for tap in range(self.width):
            index = np.minimum(self.start + tap, n_in - 1)
            weight = np.where(self.start + tap < self.stop, self.matrix[rows, index], 0).astype(np.float32)
            if not weight.any():
                continue
            term = np.take(array, index, axis=axis)
            if np.any(weight != 1):
                term *= weight.reshape(shape)
            out = term if out is None else np.add(out, term, out=out)
        return out

    def _matmul(self, array: np.ndarray, axis: int) -> np.ndarray:
        m = self.matrix
        if axis == 2:
            return array @ m.T
        if axis == 1:
            return np.matmul(m, array)
        flat = array.reshape(array.shape[0], -1)
        return (m @ flat).reshape((m.shape[0],) + array.shape[1:])

    def cost(self, size: int) -> float:
        """Rough cost of applying this operator to ``size`` input voxels (relative units)."""
        n_out, n_in = self.matrix.shape
        if self.width <= _GATHER_MAX_WIDTH:
            return 6.0 * size * n_out / n_in * self.width
        return float(size) * n_out


@lru_cache(maxsize=64)
def _axis_operator(n_in: int, n_out: int, order: int) -> _AxisOperator:
    """scipy's own 1-D zoom from ``n_in`` to ``n_out`` samples, as a matrix (resizing an identity)."""
    identity = np.eye(n_in, dtype=np.float64)
    matrix = ndimage.zoom(identity, (n_out / n_in, 1.0), order=order, mode="nearest", grid_mode=True)
    if matrix.shape[0] != n_out:
        raise AssertionError(f"zoom gave {matrix.shape[0]} rows for {n_in} -> {n_out}")
    if order > 1:
        matrix[np.abs(matrix) < 1e-9] = 0.0
    return _AxisOperator.from_matrix(matrix)


def _axis_orders(current_spacing: Sequence[float], target_spacing: Sequence[float], order: int, order_z: int,
                 anisotropy_threshold: float) -> list[int]:
    orders = [order] * 3
    axis = separate_z_axis(current_spacing, target_spacing, anisotropy_threshold)
    if axis is not None:
        orders[axis] = order_z
    return orders


def _plan_axes(shape: Sequence[int], operators: dict[int, _AxisOperator]) -> list[int]:
    """The order of axes that minimises the estimated work (shrinking axes early is usually cheapest)."""
    best, best_cost = None, None
    for permutation in itertools.permutations(operators):
        size, cost = int(np.prod(shape)), 0.0
        current = list(shape)
        for axis in permutation:
            op = operators[axis]
            cost += op.cost(size)
            size = size // current[axis] * op.matrix.shape[0]
            current[axis] = op.matrix.shape[0]
        if best_cost is None or cost < best_cost:
            best, best_cost = list(permutation), cost
    return best or []


def _resample_volume(volume: np.ndarray, operators: dict[int, _AxisOperator]) -> np.ndarray:
    out = volume
    for axis in _plan_axes(volume.shape, operators):
        out = operators[axis].apply(out, axis)
    return out if out is not volume else volume.copy()


def _operators(shape: Sequence[int], new_shape: Sequence[int], orders: Sequence[int]) -> dict[int, _AxisOperator]:
    return {axis: _axis_operator(int(shape[axis]), int(new_shape[axis]), int(orders[axis]))
            for axis in range(3) if int(shape[axis]) != int(new_shape[axis])}


def resample_image(data: np.ndarray, current_spacing: Sequence[float], target_spacing: Sequence[float],
                   new_shape: Sequence[int], order: int = 3, order_z: int = 0,
                   anisotropy_threshold: float = 3.0) -> np.ndarray:
    """Resample ``data`` (C, Z, Y, X) to ``new_shape``: spline of ``order`` (separate-z: ``order_z`` on the coarse axis).

    Like skimage's ``resize`` (edge mode, no anti-aliasing), values are clipped to each channel's input range, so
    cubic overshoot never leaves the intensities seen in the input. Returns float32.
    """
    data = np.asarray(data)
    if data.ndim != 4:
        raise ValueError(f"resample_image expects (C, Z, Y, X), got shape {data.shape}")
    new_shape = [int(s) for s in new_shape]
    orders = _axis_orders(current_spacing, target_spacing, order, order_z, anisotropy_threshold)
    operators = _operators(data.shape[1:], new_shape, orders)
    out = np.empty((data.shape[0], *new_shape), dtype=np.float32)
    for channel in range(data.shape[0]):
        volume = np.ascontiguousarray(data[channel], dtype=np.float32)
        result = _resample_volume(volume, operators)
        if max(orders) > 1 and volume.size:
            np.clip(result, volume.min(), volume.max(), out=result)
        out[channel] = result
    return out


def resample_labels(seg: np.ndarray, current_spacing: Sequence[float], target_spacing: Sequence[float],
                    new_shape: Sequence[int], order: int = 1, order_z: int = 0,
                    anisotropy_threshold: float = 3.0) -> np.ndarray:
    """Resample a label map (Z, Y, X) by interpolating each label's mask (linear by default) and thresholding at 0.5.

    Labels are taken in ascending order and a later one wins a tie, as in nnU-Net. Background 0 is the fill, so it
    is interpolated only when a negative label (outside the non-zero mask) could lose a tie to it; each label is
    interpolated within its own bounding box. The dtype of ``seg`` is kept.
    """
    seg = np.asarray(seg)
    if seg.ndim != 3:
        raise ValueError(f"resample_labels expects (Z, Y, X), got shape {seg.shape}")
    new_shape = [int(s) for s in new_shape]
    if list(seg.shape) == new_shape:
        return seg.copy()
    orders = _axis_orders(current_spacing, target_spacing, order, order_z, anisotropy_threshold)
    full = {axis: _axis_operator(int(seg.shape[axis]), new_shape[axis], orders[axis]) for axis in range(3)}
    out = np.zeros(new_shape, dtype=seg.dtype)
    present = np.unique(seg)
    for label in present:
        if label == 0 and present[0] >= 0:
            continue
        # background only needs to be known where a negative label may have been written
        box = bounding_box(seg == label if label != 0 else seg < 0)
        out_slices, in_slices, operators = [], [], {}
        for axis, (start, stop) in enumerate(box):
            if seg.shape[axis] == new_shape[axis]:
                out_slices.append(slice(start, stop))
                in_slices.append(slice(start, stop))
                continue
            o0, o1, w0, w1, op = full[axis].restrict(start, stop)
            out_slices.append(slice(o0, o1))
            in_slices.append(slice(w0, w1))
            operators[axis] = op
        mask = (seg[tuple(in_slices)] == label).astype(np.float32)
        resized = _resample_volume(mask, operators)
        out[tuple(out_slices)][resized >= _LABEL_THRESHOLD] = label
    return out


def resample_probabilities(probabilities: np.ndarray, current_spacing: Sequence[float],
                           target_spacing: Sequence[float], new_shape: Sequence[int], order: int = 1,
                           order_z: int = 0, anisotropy_threshold: float = 3.0) -> np.ndarray:
    """Resample class probabilities (K, Z, Y, X) for export: linear by default, same separate-z rule; float32."""
    return resample_image(probabilities, current_spacing, target_spacing, new_shape, order, order_z,
                          anisotropy_threshold)
