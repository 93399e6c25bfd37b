"""Resampling images, label maps and probabilities from one voxel spacing to another.

The spacings decide the new shape and the separate-z axis; :func:`covtransfer.preprocessing.resize.resize` does the
interpolation. Label maps interpolate each label's mask (linear by default, in float64, so that only true ties sit at
exactly 0.5) with the numpy engine's operators restricted to the slabs and boxes that hold the label; a tie goes to the
nearest-neighbour label, as in nnU-Net 2.8.1 (batchgenerators' ``seg_tiebreak='nearest'``).

Separate-z: when the spacing is anisotropic (max/min above a threshold) and exactly one axis is the coarse one,
that axis is interpolated with ``order_z`` (nearest by default) and the other two with ``order``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from covtransfer.data.cropping import bounding_box
from covtransfer.preprocessing.resize import axis_orders, resize
from covtransfer.preprocessing.resize_numpy import AxisOperator, axis_operators, resample_volume

# A mask value within float64 rounding of 0.5 is a tie in exact arithmetic: the nearest-neighbour label settles it
_TIE_TOLERANCE = 1e-9


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


def resample_image(data: np.ndarray, current_spacing: Sequence[float], target_spacing: Sequence[float],
                   new_shape: Sequence[int], order: int = 3, order_z: int = 0,
                   anisotropy_threshold: float = 3.0) -> np.ndarray:
    """Resample ``data`` (C, Z, Y, X) to ``new_shape`` with splines of ``order`` (``order_z`` on a separate-z axis).

    Like skimage's ``resize`` (edge mode, no anti-aliasing), values are clipped to each channel's input range, so
    cubic overshoot never leaves the intensities seen in the input. Returns float32.
    """
    axis = separate_z_axis(current_spacing, target_spacing, anisotropy_threshold)
    return resize(data, new_shape, order, axis, order_z)


def _slabs(present: np.ndarray, operator: AxisOperator | None) -> list[tuple[int, int]]:
    """Runs ``[start, stop)`` of first-axis indices holding a label, merged where their outputs would overlap.

    Outputs of different runs then never share a voxel, so each run can be resampled on its own (with its full
    input window) and the results pasted side by side: scattered voxels cost a few slabs, not the whole volume.
    """
    indices = np.flatnonzero(present)
    breaks = np.flatnonzero(np.diff(indices) > 1)
    runs = [(int(a), int(b) + 1) for a, b in zip(np.r_[indices[0], indices[breaks + 1]],
                                                  np.r_[indices[breaks], indices[-1]])]
    merged: list[tuple[int, int]] = []
    last_output_stop = -1
    for start, stop in runs:
        out_start, out_stop = operator.restrict(start, stop)[:2] if operator is not None else (start, stop)
        if merged and out_start < last_output_stop:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
        last_output_stop = max(last_output_stop, out_stop)
    return merged


class _NearestLabels:
    """The label map resized by nearest neighbour, made on the first tie and kept for the others."""

    def __init__(self, seg: np.ndarray, new_shape: Sequence[int]):
        self.seg, self.new_shape, self.labels = seg, new_shape, None

    def __call__(self) -> np.ndarray:
        if self.labels is None:
            nearest = resize(self.seg[None].astype(np.float32), self.new_shape, 0)[0]
            self.labels = nearest.astype(self.seg.dtype)
        return self.labels


def _resample_mask_into(out: np.ndarray, seg: np.ndarray, label: int, region: np.ndarray,
                        full: dict[int, AxisOperator], nearest: _NearestLabels) -> None:
    """Interpolate the mask ``seg == label`` where ``region`` says it can matter and write ``label`` where it is
    above 0.5, or at 0.5 where the nearest-neighbour label is ``label``."""
    for z0, z1 in _slabs(region.any(axis=(1, 2)), full.get(0)):
        box = bounding_box(region[z0:z1])
        box[0] = [z0, z1]
        out_slices, in_slices, operators = [], [], {}
        for axis, (start, stop) in enumerate(box):
            if axis not in full:
                out_slices.append(slice(start, stop))
                in_slices.append(slice(start, stop))
                continue
            o0, o1, w0, w1, op = full[axis].restrict(start, stop)
            out_slices.append(slice(o0, o1))
            in_slices.append(slice(w0, w1))
            operators[axis] = op
        mask = (seg[tuple(in_slices)] == label).astype(np.float64)
        resized = resample_volume(mask, operators)
        target = out[tuple(out_slices)]
        target[resized > 0.5 + _TIE_TOLERANCE] = label
        tie = np.abs(resized - 0.5) <= _TIE_TOLERANCE
        if tie.any():
            target[tie & (nearest()[tuple(out_slices)] == label)] = label


def resample_labels(seg: np.ndarray, current_spacing: Sequence[float], target_spacing: Sequence[float],
                    new_shape: Sequence[int], order: int = 1, order_z: int = 0,
                    anisotropy_threshold: float = 3.0) -> np.ndarray:
    """Resample a label map (Z, Y, X) by interpolating each label's mask (linear by default) and thresholding at 0.5.

    A label wins a voxel where its mask is above 0.5, and an exact tie (two labels at 0.5) goes to the
    nearest-neighbour label, as nnU-Net 2.8.1 resamples; where three or more labels meet and none passes 0.5, the
    voxel keeps the fill (nnU-Net takes the largest mask there). Background 0 is the fill, so it is interpolated only
    where a negative label (outside the non-zero mask) could lose a tie to it; each label is interpolated only in
    the slabs and boxes that hold it. The dtype of ``seg`` is kept.
    """
    seg = np.asarray(seg)
    if seg.ndim != 3:
        raise ValueError(f"resample_labels expects (Z, Y, X), got shape {seg.shape}")
    new_shape = [int(s) for s in new_shape]
    if list(seg.shape) == new_shape:
        return seg.copy()
    axis = separate_z_axis(current_spacing, target_spacing, anisotropy_threshold)
    full = axis_operators(seg.shape, new_shape, axis_orders(order, axis, order_z))
    out = np.zeros(new_shape, dtype=seg.dtype)
    if seg.size == 0:
        return out
    nearest = _NearestLabels(seg, new_shape)
    lowest, highest = int(seg.min()), int(seg.max())
    for label in range(lowest, highest + 1):
        if label == 0:
            if lowest < 0:
                _resample_mask_into(out, seg, 0, seg < 0, full, nearest)
            continue
        region = seg == label
        if region.any():
            _resample_mask_into(out, seg, label, region, full, nearest)
    return out


def resample_probabilities(probabilities: np.ndarray, current_spacing: Sequence[float],
                           target_spacing: Sequence[float], new_shape: Sequence[int], order: int = 1,
                           order_z: int = 0, anisotropy_threshold: float = 3.0) -> np.ndarray:
    """Resample class probabilities (K, Z, Y, X) for export: linear by default, same separate-z rule; float32."""
    return resample_image(probabilities, current_spacing, target_spacing, new_shape, order, order_z,
                          anisotropy_threshold)
