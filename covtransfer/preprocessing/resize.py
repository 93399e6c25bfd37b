"""One resize for the whole package: ``(C, Z, Y, X)`` to a new shape, numpy arrays or torch tensors.

Both engines sample as ``scipy.ndimage.zoom`` with ``grid_mode=True`` and ``mode="nearest"`` (voxel areas aligned,
edges clamped), one axis at a time. Numpy arrays go to the numpy engine (:mod:`.resize_numpy`: splines of any order,
on the CPU); torch tensors to the torch engine (:mod:`.resize_torch`: orders 0 and 1 on the tensor's device, in slabs
that bound memory). ``separate_z_axis`` names the axis interpolated with ``order_z`` instead of ``order`` (see
:func:`covtransfer.preprocessing.resampling.separate_z_axis`). Results are float32.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from covtransfer.preprocessing.resize_numpy import resize_channels

if TYPE_CHECKING:
    import torch

MAX_ORDER = 5
TORCH_MAX_ORDER = 1


def axis_orders(order: int, separate_z_axis: int | None = None, order_z: int = 0) -> list[int]:
    """The spline order of each spatial axis: ``order``, and ``order_z`` on ``separate_z_axis`` if there is one."""
    orders = [int(order)] * 3
    if separate_z_axis is not None:
        orders[separate_z_axis] = int(order_z)
    return orders


def _is_tensor(array: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor means torch is loaded; numpy-only callers never import it
    return torch is not None and isinstance(array, torch.Tensor)


def _checked(array: Any, new_shape: Sequence[int], order: int, separate_z_axis: int | None, order_z: int,
             tensor: bool) -> tuple[list[int], list[int]]:
    new_shape = [int(s) for s in new_shape]
    if len(array.shape) != 4 or len(new_shape) != 3:
        raise ValueError(f"resize expects (C, Z, Y, X) and a 3-D new shape, got {tuple(array.shape)} -> {new_shape}")
    if separate_z_axis not in (None, 0, 1, 2):
        raise ValueError(f"separate_z_axis must be None, 0, 1 or 2, got {separate_z_axis}")
    orders = axis_orders(order, separate_z_axis, order_z)
    if not all(0 <= o <= MAX_ORDER for o in orders):
        raise ValueError(f"spline orders must lie in 0..{MAX_ORDER}, got {orders}")
    if tensor and max(orders) > TORCH_MAX_ORDER:
        raise ValueError(f"torch tensors resize with orders 0 and 1 only, got {orders}: pass a numpy array for splines")
    return new_shape, orders


def resize_slabs(array: np.ndarray | torch.Tensor, new_shape: Sequence[int], order: int,
                 separate_z_axis: int | None = None, order_z: int = 0,
                 max_voxels: int | None = None) -> Iterator[tuple[int, int, np.ndarray | torch.Tensor]]:
    """:func:`resize` in pieces ``(start, stop, slab)``, output rows ``[start, stop)`` of the first spatial axis.

    Tensors come in slabs of at most ``max_voxels`` output voxels (None: one slab); numpy arrays in one slab.
    """
    tensor = _is_tensor(array)
    array = array if tensor else np.asarray(array)
    new_shape, orders = _checked(array, new_shape, order, separate_z_axis, order_z, tensor)
    if tensor:
        from covtransfer.preprocessing.resize_torch import resize_slabs as torch_slabs  # torch only for tensors
        return torch_slabs(array, new_shape, orders, max_voxels)
    return iter([(0, new_shape[0], resize_channels(array, new_shape, orders))])


def resize(array: np.ndarray | torch.Tensor, new_shape: Sequence[int], order: int,
           separate_z_axis: int | None = None, order_z: int = 0) -> np.ndarray | torch.Tensor:
    """``array`` (C, Z, Y, X) resized to ``(C, *new_shape)`` with splines of ``order`` (``order_z`` on
    ``separate_z_axis``), float32, of the input's kind: numpy for numpy, torch (same device) for torch.

    Splines above order 1 need a numpy array and are clipped to each channel's input range, as skimage's ``resize``.
    """
    (_, _, out), = resize_slabs(array, new_shape, order, separate_z_axis, order_z)
    return out
