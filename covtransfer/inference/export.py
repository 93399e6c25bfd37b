"""Export: class probabilities on the preprocessed grid back onto the input image's own grid.

The preprocessor transposed, cropped to the non-zero box and resampled each case; export undoes that in reverse:
resample the probabilities to the cropped shape (linear, nearest along a coarse axis when the spacing is anisotropic:
the same separate-z rule as preprocessing), paste them into the uncropped volume (background outside the crop box)
and transpose back. The resampling is separable (one 1-D interpolation per axis, as ``scipy.ndimage.zoom`` with
``grid_mode=True`` and edge clamping) and runs in torch on the probabilities' own device, in slabs along the first
axis, so a large CT never needs more than one slab of full-resolution probabilities at once. The first axis is
interpolated by gathering whole slices, the other two with torch's own interpolation kernels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from covtransfer.data.image_io import Geometry, write_image
from covtransfer.plans import Plans
from covtransfer.preprocessing.resampling import resample_probabilities, separate_z_axis

# voxels of full-resolution probabilities (all classes) per slab: 32 M floats = 128 MB in float32
SLAB_VOXELS_CPU = 1 << 25
SLAB_VOXELS_GPU = 1 << 28


@dataclass(frozen=True)
class _Taps:
    """A 1-D resize as, per output sample, two input indices and the weight of the second one."""

    lower: torch.Tensor
    upper: torch.Tensor
    weight: torch.Tensor | None  # None: nearest neighbour (``lower`` only)


def axis_taps(n_in: int, n_out: int, order: int, device: torch.device | str = "cpu") -> _Taps:
    """Interpolation taps from ``n_in`` to ``n_out`` samples: voxel centres aligned, edges clamped (order 0 or 1)."""
    out = torch.arange(n_out, dtype=torch.float64)
    source = ((out + 0.5) * (n_in / n_out) - 0.5).clamp(0, n_in - 1)
    if order == 0:
        index = torch.floor(source + 0.5).clamp(max=n_in - 1).long()
        return _Taps(index.to(device), index.to(device), None)
    lower = torch.floor(source).long()
    upper = (lower + 1).clamp(max=n_in - 1)
    weight = (source - lower).float()
    return _Taps(lower.to(device), upper.to(device), weight.to(device))


def _apply_taps(x: torch.Tensor, taps: _Taps, dim: int) -> torch.Tensor:
    """Interpolate ``x`` along ``dim`` with ``taps`` (gathers of whole slices: fast on every axis but the last)."""
    low = x.index_select(dim, taps.lower)
    if taps.weight is None:
        return low
    shape = [1] * x.ndim
    shape[dim] = -1
    return torch.lerp(low, x.index_select(dim, taps.upper), taps.weight.view(shape).to(x.dtype))


def _axis_orders(properties: dict, plans: Plans, configuration_name: str) -> list[int]:
    settings = plans.configuration(configuration_name).resampling
    orders = [settings.order_probabilities] * 3
    axis = separate_z_axis(properties["target_spacing"], properties["original_spacing"],
                           settings.anisotropy_threshold)
    if axis is not None:
        orders[axis] = settings.order_z
    return orders


def _slabs(probabilities: torch.Tensor, out_shape: Sequence[int], orders: Sequence[int],
           max_voxels: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(start, stop, slab)``: the resampled probabilities of output rows ``[start, stop)`` of the first axis."""
    device = probabilities.device
    z_all = axis_taps(int(probabilities.shape[1]), int(out_shape[0]), orders[0], device)
    rows_per_slab = max(1, max_voxels // max(1, probabilities.shape[0] * out_shape[1] * out_shape[2]))
    for start in range(0, out_shape[0], rows_per_slab):
        stop = min(start + rows_per_slab, out_shape[0])
        lower, upper = z_all.lower[start:stop], z_all.upper[start:stop]
        first, last = int(lower.min()), int(upper.max()) + 1
        weight = z_all.weight[start:stop] if z_all.weight is not None else None
        slab = _apply_taps(probabilities[:, first:last].float(), _Taps(lower - first, upper - first, weight), 1)
        yield start, stop, _resize_in_plane(slab, out_shape[1:], orders[1:])


def _mode(order: int) -> dict:
    return {"mode": "nearest-exact"} if order == 0 else {"mode": "linear", "align_corners": False}


def _resize_in_plane(x: torch.Tensor, size: Sequence[int], orders: Sequence[int]) -> torch.Tensor:
    """Resize the last two axes of ``(K, Z, Y, X)`` with torch's interpolation kernels (the sample positions of
    :func:`axis_taps`): one 2-D pass when both axes use the same order, else one 1-D pass per axis."""
    size = [int(s) for s in size]
    if list(x.shape[2:]) == size:
        return x
    if orders[0] == orders[1]:
        mode = {"mode": "bilinear", "align_corners": False} if orders[0] else {"mode": "nearest-exact"}
        return F.interpolate(x, size=size, **mode)
    k, z, y, _ = x.shape
    x = F.interpolate(x.reshape(k * z * y, 1, -1), size=size[1], **_mode(orders[1])).view(k, z, y, size[1])
    x = x.transpose(2, 3).reshape(k * z * size[1], 1, y)
    x = F.interpolate(x, size=size[0], **_mode(orders[0])).view(k, z, size[1], size[0])
    return x.transpose(2, 3).contiguous()


def class_argmax(probabilities: torch.Tensor) -> torch.Tensor:
    """Index of the largest class along axis 0 as uint8 (the first on ties); one pass per class, which is many times
    faster on a CPU than ``argmax(0)``'s strided reduction."""
    best = probabilities[0].clone()
    index = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
    for k in range(1, probabilities.shape[0]):
        better = probabilities[k] > best
        index.masked_fill_(better, k)
        torch.maximum(best, probabilities[k], out=best)
    return index


def _check_shape(probabilities: torch.Tensor, properties: dict) -> None:
    expected = list(properties["shape_after_resampling"])
    if list(probabilities.shape[1:]) != expected:
        raise ValueError(f"probabilities of shape {list(probabilities.shape[1:])} do not match the preprocessed "
                         f"shape {expected} of case {properties.get('case_id')}")


def _box_slices(properties: dict) -> tuple[slice, slice, slice]:
    return tuple(slice(int(a), int(b)) for a, b in properties["bbox"])


def _max_voxels(device: torch.device) -> int:
    return SLAB_VOXELS_GPU if device.type == "cuda" else SLAB_VOXELS_CPU


def _numpy_fallback(probabilities: torch.Tensor, properties: dict, plans: Plans,
                    configuration_name: str) -> torch.Tensor:
    """Spline orders above 1 (if the plans ask for them) go through the preprocessing's numpy resampler."""
    settings = plans.configuration(configuration_name).resampling
    out = resample_probabilities(probabilities.float().cpu().numpy(), properties["target_spacing"],
                                 properties["original_spacing"], properties["shape_after_cropping"],
                                 settings.order_probabilities, settings.order_z, settings.anisotropy_threshold)
    return torch.from_numpy(out).to(probabilities.device)


def _resampled_slabs(probabilities: torch.Tensor, properties: dict, plans: Plans,
                     configuration_name: str) -> Iterator[tuple[int, int, torch.Tensor]]:
    orders = _axis_orders(properties, plans, configuration_name)
    out_shape = [int(s) for s in properties["shape_after_cropping"]]
    if max(orders) > 1:
        yield 0, out_shape[0], _numpy_fallback(probabilities, properties, plans, configuration_name)
        return
    yield from _slabs(probabilities, out_shape, orders, _max_voxels(probabilities.device))


def probabilities_to_original(probabilities: torch.Tensor, properties: dict, plans: Plans,
                              configuration_name: str, dtype: torch.dtype = torch.float32,
                              device: torch.device | str | None = None) -> torch.Tensor:
    """Probabilities ``(K, Z, Y, X)`` on the preprocessed grid as ``(K, *original zyx shape)`` on the input grid.

    Outside the crop box the background (class 0) has probability 1. The result is on ``device`` (default: that of
    ``probabilities``) in ``dtype``.
    """
    _check_shape(probabilities, properties)
    device = torch.device(device) if device is not None else probabilities.device
    k = probabilities.shape[0]
    full = torch.zeros((k, *[int(s) for s in properties["shape_before_cropping"]]), dtype=dtype, device=device)
    full[0] = 1
    box = _box_slices(properties)
    for start, stop, slab in _resampled_slabs(probabilities, properties, plans, configuration_name):
        rows = slice(box[0].start + start, box[0].start + stop)
        full[:, rows, box[1], box[2]] = slab.to(device=device, dtype=dtype)
    backward = [0] + [int(a) + 1 for a in plans.transpose_backward]
    return full.permute(backward).contiguous()


def segmentation_to_original(probabilities: torch.Tensor, properties: dict, plans: Plans,
                             configuration_name: str, label_values: Sequence[int] | None = None) -> np.ndarray:
    """The argmax label map (uint8, original zyx shape) of preprocessed-grid probabilities, 0 outside the crop box.

    ``label_values`` maps class index to label value when labels are not 0..K-1. Memory stays bounded by one slab
    of full-resolution probabilities.
    """
    _check_shape(probabilities, properties)
    seg = np.zeros([int(s) for s in properties["shape_before_cropping"]], dtype=np.uint8)
    lookup = None
    if label_values is not None and list(label_values) != list(range(len(label_values))):
        lookup = torch.tensor(list(label_values), dtype=torch.uint8, device=probabilities.device)
    box = _box_slices(properties)
    for start, stop, slab in _resampled_slabs(probabilities, properties, plans, configuration_name):
        labels = class_argmax(slab)
        labels = lookup[labels.long()] if lookup is not None else labels
        seg[box[0].start + start:box[0].start + stop, box[1], box[2]] = labels.cpu().numpy()
    return np.ascontiguousarray(seg.transpose([int(a) for a in plans.transpose_backward]))


def labels_from_probabilities(probabilities: torch.Tensor, label_values: Sequence[int] | None = None) -> np.ndarray:
    """Argmax over classes of ``(K, ...)`` probabilities as a uint8 numpy label map (mapped by ``label_values``)."""
    labels = class_argmax(probabilities)
    if label_values is not None and list(label_values) != list(range(len(label_values))):
        labels = torch.tensor(list(label_values), dtype=torch.uint8, device=labels.device)[labels.long()]
    return labels.cpu().numpy()


def save_segmentation(path: str | os.PathLike, seg: np.ndarray, properties: dict) -> None:
    """Write a label map on the input grid with the case's original geometry, atomically (the ending picks the
    format)."""
    expected = [int(s) for s in properties["original_shape"]]
    if list(seg.shape) != expected:
        raise ValueError(f"segmentation of shape {list(seg.shape)} does not match the original shape {expected}")
    write_image(path, seg, Geometry.from_dict(properties["geometry"]))
