"""The torch resize engine: nearest and linear (orders 0 and 1) on the tensor's own device, in slabs.

The resize is separable (one 1-D interpolation per axis, as ``scipy.ndimage.zoom`` with ``grid_mode=True`` and edge
clamping). It runs in slabs along the first spatial axis, so a large CT never needs more than one slab of
full-resolution output at once: the first axis is interpolated by gathering whole slices, the other two with torch's
own interpolation kernels. Call it through :func:`covtransfer.preprocessing.resize.resize`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Taps:
    """A 1-D resize as, per output sample, two input indices and the weight of the second one."""

    lower: torch.Tensor
    upper: torch.Tensor
    weight: torch.Tensor | None  # None: nearest neighbour (``lower`` only)


def axis_taps(n_in: int, n_out: int, order: int, device: torch.device | str = "cpu") -> Taps:
    """Interpolation taps from ``n_in`` to ``n_out`` samples: voxel centres aligned, edges clamped (order 0 or 1)."""
    out = torch.arange(n_out, dtype=torch.float64)
    source = ((out + 0.5) * (n_in / n_out) - 0.5).clamp(0, n_in - 1)
    if order == 0:
        index = torch.floor(source + 0.5).clamp(max=n_in - 1).long()
        return Taps(index.to(device), index.to(device), None)
    lower = torch.floor(source).long()
    upper = (lower + 1).clamp(max=n_in - 1)
    weight = (source - lower).float()
    return Taps(lower.to(device), upper.to(device), weight.to(device))


def _apply_taps(x: torch.Tensor, taps: Taps, dim: int) -> torch.Tensor:
    """Interpolate ``x`` along ``dim`` with ``taps`` (gathers of whole slices: fast on every axis but the last)."""
    low = x.index_select(dim, taps.lower)
    if taps.weight is None:
        return low
    shape = [1] * x.ndim
    shape[dim] = -1
    return torch.lerp(low, x.index_select(dim, taps.upper), taps.weight.view(shape).to(x.dtype))


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


def resize_slabs(x: torch.Tensor, new_shape: Sequence[int], orders: Sequence[int],
                 max_voxels: int | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(start, stop, slab)``: ``x`` (C, Z, Y, X) resized to ``new_shape`` (per-axis ``orders`` 0 or 1) in
    float32, output rows ``[start, stop)`` of the first spatial axis, each slab under ``max_voxels`` (None: one)."""
    new_shape = [int(s) for s in new_shape]
    z_all = axis_taps(int(x.shape[1]), new_shape[0], orders[0], x.device)
    plane = max(1, x.shape[0] * new_shape[1] * new_shape[2])
    rows_per_slab = max(1, new_shape[0] if max_voxels is None else max_voxels // plane)
    for start in range(0, new_shape[0], rows_per_slab):
        stop = min(start + rows_per_slab, new_shape[0])
        lower, upper = z_all.lower[start:stop], z_all.upper[start:stop]
        first, last = int(lower.min()), int(upper.max()) + 1
        weight = z_all.weight[start:stop] if z_all.weight is not None else None
        slab = _apply_taps(x[:, first:last].float(), Taps(lower - first, upper - first, weight), 1)
        yield start, stop, _resize_in_plane(slab, new_shape[1:], orders[1:])
