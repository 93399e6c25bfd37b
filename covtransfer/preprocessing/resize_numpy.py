"""The numpy resize engine: splines of any order, one axis at a time, on the CPU.

Spline interpolation in the manner of ``scipy.ndimage.zoom`` (``grid_mode=True``, edge mode: voxel areas stay
aligned, as in skimage's ``resize``) is a tensor product of 1-D operators, so a 3-D resize equals three 1-D resizes
applied one after another. Each 1-D operator is an explicit ``(n_out, n_in)`` matrix, built once per size pair by
resizing an identity with scipy itself: exactly scipy's kernel, prefilter and boundary handling. Wide operators
(cubic: the spline prefilter spreads each row over some 32 inputs once weights under 1e-9 are dropped) are applied
as BLAS matrix products, 32 output rows at a time against just the band of input they read; narrow ones (linear,
nearest) as a weighted gather of one or two neighbours. On one core a 512x512x200 CT goes from 0.7x0.7x1.25 mm to
1x1x1.5 mm in about 1 s, several times faster than skimage's ``resize``. Call it through
:func:`covtransfer.preprocessing.resize.resize`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Sequence

import numpy as np
from scipy import ndimage

_GATHER_MAX_WIDTH = 2
_BLOCK_ROWS = 32


@dataclass(frozen=True)
class AxisOperator:
    """A 1-D resize as a matrix ``(n_out, n_in)`` plus, per output row, where its non-zero weights start."""

    matrix: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> "AxisOperator":
        nonzero = matrix != 0
        start = np.argmax(nonzero, axis=1)
        stop = matrix.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
        return cls(np.ascontiguousarray(matrix, dtype=np.float64), start, stop)

    @property
    def width(self) -> int:
        return int((self.stop - self.start).max())

    def restrict(self, in_start: int, in_stop: int) -> tuple[int, int, int, int, "AxisOperator"]:
        """The operator for input that is zero outside ``[in_start, in_stop)``.

        Returns the output rows ``[out_start, out_stop)`` that can be non-zero, the input window they read and the
        operator reduced to those rows and that window.
        """
        rows = np.flatnonzero((self.stop > in_start) & (self.start < in_stop))
        out_start, out_stop = int(rows[0]), int(rows[-1]) + 1
        win_start = int(self.start[out_start:out_stop].min())
        win_stop = int(self.stop[out_start:out_stop].max())
        sub = self.matrix[out_start:out_stop, win_start:win_stop]
        return out_start, out_stop, win_start, win_stop, AxisOperator.from_matrix(sub)

    def apply(self, array: np.ndarray, axis: int) -> np.ndarray:
        """Resize ``array`` (3-D, float32 or float64) along ``axis``, in its own precision."""
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
            weight = np.where(self.start + tap < self.stop, self.matrix[rows, index], 0).astype(array.dtype)
            if not weight.any():
                continue
            term = np.take(array, index, axis=axis)
            if np.any(weight != 1):
                term *= weight.reshape(shape)
            out = term if out is None else np.add(out, term, out=out)
        return out

    @cached_property
    def blocks(self) -> list[tuple[int, int, int, int, np.ndarray]]:
        """Row blocks ``(out_start, out_stop, in_start, in_stop, weights)``: the band each block of rows reads."""
        n_out = self.matrix.shape[0]
        blocks = []
        for out_start in range(0, n_out, _BLOCK_ROWS):
            out_stop = min(n_out, out_start + _BLOCK_ROWS)
            in_start = int(self.start[out_start:out_stop].min())
            in_stop = int(self.stop[out_start:out_stop].max())
            weights = np.ascontiguousarray(self.matrix[out_start:out_stop, in_start:in_stop], dtype=np.float32)
            blocks.append((out_start, out_stop, in_start, in_stop, weights))
        return blocks

    def _matmul(self, array: np.ndarray, axis: int) -> np.ndarray:
        n_out = self.matrix.shape[0]
        shape = list(array.shape)
        shape[axis] = n_out
        out = np.empty(shape, dtype=array.dtype)
        blocks = [(o0, o1, i0, i1, w.astype(array.dtype, copy=False)) for o0, o1, i0, i1, w in self.blocks]
        if axis == 0:
            flat_in, flat_out = array.reshape(array.shape[0], -1), out.reshape(n_out, -1)
            for o0, o1, i0, i1, weights in blocks:
                np.matmul(weights, flat_in[i0:i1], out=flat_out[o0:o1])
        elif axis == 1:
            for o0, o1, i0, i1, weights in blocks:
                np.matmul(weights, array[:, i0:i1], out=out[:, o0:o1])
        else:
            flat_in, flat_out = array.reshape(-1, array.shape[2]), out.reshape(-1, n_out)
            for o0, o1, i0, i1, weights in blocks:
                np.matmul(flat_in[:, i0:i1], weights.T, out=flat_out[:, o0:o1])
        return out

    def cost(self, size: int) -> float:
        """Rough cost of applying this operator to ``size`` input voxels (relative units)."""
        n_out, n_in = self.matrix.shape
        if self.width <= _GATHER_MAX_WIDTH:
            return 6.0 * size * n_out / n_in * self.width
        return float(size) / n_in * sum((o1 - o0) * (i1 - i0) for o0, o1, i0, i1, _ in self.blocks)


@lru_cache(maxsize=64)
def _axis_operator(n_in: int, n_out: int, order: int) -> AxisOperator:
    """scipy's own 1-D zoom from ``n_in`` to ``n_out`` samples, as a matrix (resizing an identity)."""
    identity = np.eye(n_in, dtype=np.float64)
    matrix = ndimage.zoom(identity, (n_out / n_in, 1.0), order=order, mode="nearest", grid_mode=True)
    if matrix.shape[0] != n_out:
        raise AssertionError(f"zoom gave {matrix.shape[0]} rows for {n_in} -> {n_out}")
    if order > 1:
        matrix[np.abs(matrix) < 1e-9] = 0.0
    return AxisOperator.from_matrix(matrix)


def _plan_axes(shape: Sequence[int], operators: dict[int, AxisOperator]) -> list[int]:
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


def resample_volume(volume: np.ndarray, operators: dict[int, AxisOperator]) -> np.ndarray:
    """Apply each axis's operator to a 3-D ``volume`` (a new array), cheapest axis order first."""
    out = volume
    for axis in _plan_axes(volume.shape, operators):
        out = operators[axis].apply(out, axis)
    return out if out is not volume else volume.copy()


def axis_operators(shape: Sequence[int], new_shape: Sequence[int], orders: Sequence[int]) -> dict[int, AxisOperator]:
    """The 1-D operators from ``shape`` to ``new_shape`` (spline order per axis), for the axes whose size changes."""
    return {axis: _axis_operator(int(shape[axis]), int(new_shape[axis]), int(orders[axis]))
            for axis in range(3) if int(shape[axis]) != int(new_shape[axis])}


def resize_channels(data: np.ndarray, new_shape: Sequence[int], orders: Sequence[int]) -> np.ndarray:
    """Resize every channel of ``data`` (C, Z, Y, X) to ``new_shape`` with per-axis spline ``orders``; float32.

    Above order 1 each channel is clipped to its input range, as skimage's ``resize`` does, so spline overshoot never
    leaves the values seen in the input.
    """
    operators = axis_operators(data.shape[1:], new_shape, orders)
    out = np.empty((data.shape[0], *new_shape), dtype=np.float32)
    for channel in range(data.shape[0]):
        volume = np.ascontiguousarray(data[channel], dtype=np.float32)
        result = resample_volume(volume, operators)
        if max(orders) > 1 and volume.size:
            np.clip(result, volume.min(), volume.max(), out=result)
        out[channel] = result
    return out
