"""Export: class logits on the preprocessed grid back onto the input image's own grid.

The preprocessor transposed, cropped to the non-zero box and resampled each case; export undoes that in reverse:
resample the logits to the cropped shape (linear, nearest along a coarse axis when the spacing is anisotropic: the
same separate-z rule as preprocessing), take the argmax (or the softmax, for probabilities), paste the result into the
uncropped volume (background outside the crop box) and transpose back. Resampling the logits and not the
probabilities is nnU-Net's order; it matters at lesion borders, where interpolated probabilities cross 0.5 at another
place than interpolated logits cross each other (on thick-slice phantoms, about 1 DSC point).

The resampling is :func:`covtransfer.preprocessing.resize.resize_slabs`: torch on the logits' own device, in slabs
along the first axis, so a large CT never needs more than one slab of full-resolution logits at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from covtransfer.atomic import atomic_path, write_error
from covtransfer.data.image_io import Geometry, read_image, write_image
from covtransfer.errors import CovtransferError
from covtransfer.plans import Plans
from covtransfer.preprocessing.resampling import separate_z_axis
from covtransfer.preprocessing.resize import TORCH_MAX_ORDER, axis_orders, resize, resize_slabs

# voxels of full-resolution logits (all classes) per slab: 32 M floats = 128 MB in float32
SLAB_VOXELS_CPU = 1 << 25
SLAB_VOXELS_GPU = 1 << 28


def class_argmax(scores: torch.Tensor) -> torch.Tensor:
    """Index of the largest class score (logit or probability) along axis 0 as uint8 (the first on ties); one pass
    per class, which is many times faster on a CPU than ``argmax(0)``'s strided reduction."""
    best = scores[0].clone()
    index = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
    for k in range(1, scores.shape[0]):
        better = scores[k] > best
        index.masked_fill_(better, k)
        torch.maximum(best, scores[k], out=best)
    return index


def _check_shape(logits: torch.Tensor, properties: dict) -> None:
    expected = list(properties["shape_after_resampling"])
    if list(logits.shape[1:]) != expected:
        raise ValueError(f"logits of shape {list(logits.shape[1:])} do not match the preprocessed shape {expected} "
                         f"of case {properties.get('case_id')}")


def _box_slices(properties: dict) -> tuple[slice, slice, slice]:
    return tuple(slice(int(a), int(b)) for a, b in properties["bbox"])


def _max_voxels(device: torch.device) -> int:
    return SLAB_VOXELS_GPU if device.type == "cuda" else SLAB_VOXELS_CPU


def _resampled_slabs(logits: torch.Tensor, properties: dict, plans: Plans,
                     configuration_name: str) -> Iterator[tuple[int, int, torch.Tensor]]:
    """The logits resized to the cropped shape, in slabs; spline orders above 1 (if the plans ask for them) go
    through the numpy engine on the CPU."""
    settings = plans.configuration(configuration_name).resampling
    axis = separate_z_axis(properties["target_spacing"], properties["original_spacing"],
                           settings.anisotropy_threshold)
    out_shape = [int(s) for s in properties["shape_after_cropping"]]
    args = (out_shape, settings.order_probabilities, axis, settings.order_z)
    if max(axis_orders(settings.order_probabilities, axis, settings.order_z)) > TORCH_MAX_ORDER:
        out = resize(logits.float().cpu().numpy(), *args)
        yield 0, out_shape[0], torch.from_numpy(out).to(logits.device)
        return
    yield from resize_slabs(logits, *args, max_voxels=_max_voxels(logits.device))


def probabilities_to_original(logits: torch.Tensor, properties: dict, plans: Plans, configuration_name: str,
                              dtype: torch.dtype = torch.float32,
                              device: torch.device | str | None = None) -> torch.Tensor:
    """Softmax probabilities ``(K, *original zyx shape)`` on the input grid of logits ``(K, Z, Y, X)`` on the
    preprocessed grid (resampled, then the softmax).

    Outside the crop box the background (class 0) has probability 1. The result is on ``device`` (default: that of
    ``logits``) in ``dtype``.
    """
    _check_shape(logits, properties)
    device = torch.device(device) if device is not None else logits.device
    k = logits.shape[0]
    full = torch.zeros((k, *[int(s) for s in properties["shape_before_cropping"]]), dtype=dtype, device=device)
    full[0] = 1
    box = _box_slices(properties)
    for start, stop, slab in _resampled_slabs(logits, properties, plans, configuration_name):
        rows = slice(box[0].start + start, box[0].start + stop)
        full[:, rows, box[1], box[2]] = torch.softmax(slab.float(), 0).to(device=device, dtype=dtype)
    backward = [0] + [int(a) + 1 for a in plans.transpose_backward]
    return full.permute(backward).contiguous()


def segmentation_to_original(logits: torch.Tensor, properties: dict, plans: Plans, configuration_name: str,
                             label_values: Sequence[int] | None = None) -> np.ndarray:
    """The argmax label map (uint8, original zyx shape) of preprocessed-grid logits, 0 outside the crop box.

    ``label_values`` maps class index to label value when labels are not 0..K-1. Memory stays bounded by one slab
    of full-resolution logits.
    """
    _check_shape(logits, properties)
    seg = np.zeros([int(s) for s in properties["shape_before_cropping"]], dtype=np.uint8)
    lookup = None
    if label_values is not None and list(label_values) != list(range(len(label_values))):
        lookup = torch.tensor(list(label_values), dtype=torch.uint8, device=logits.device)
    box = _box_slices(properties)
    for start, stop, slab in _resampled_slabs(logits, properties, plans, configuration_name):
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


def _written_damage(path: Path, seg: np.ndarray) -> str | None:
    """Why the label map just written to ``path`` is not ``seg``: a full disk can truncate a NIfTI silently, which
    :func:`read_image` detects, and other formats zero-fill, which the comparison detects."""
    try:
        array, _ = read_image(path)
    except CovtransferError as exc:
        return f"it does not read back: {str(exc).removeprefix(f'{path}: ')}"
    return None if np.array_equal(array, seg) else "the file reads back with other labels (truncated?)"


def save_segmentation(path: str | os.PathLike, seg: np.ndarray, properties: dict) -> None:
    """Write a label map on the input grid with the case's original geometry, atomically (the ending picks the
    format), and read it back before it takes the final name, so a full disk never leaves a truncated output that
    ``--continue`` would take for a finished case; a failure is a one-line error naming ``path``."""
    path = Path(path)
    expected = [int(s) for s in properties["original_shape"]]
    if list(seg.shape) != expected:
        raise ValueError(f"segmentation of shape {list(seg.shape)} does not match the original shape {expected}")
    with atomic_path(path) as tmp:
        try:
            write_image(tmp, seg, Geometry.from_dict(properties["geometry"]))
        except RuntimeError as exc:  # SimpleITK reports a failed write as a RuntimeError
            raise write_error(path, exc) from None
        damage = _written_damage(tmp, seg)
        if damage is not None:
            raise write_error(path, RuntimeError(damage))
