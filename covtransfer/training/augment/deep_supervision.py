"""Segmentation targets for deep supervision: the label downsampled by nearest neighbour (``nearest-exact``, as
nnU-Net) to each output's scale."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def deep_supervision_scales(strides: Sequence[Sequence[int]]) -> list[tuple[float, float, float]]:
    """Scale of each deep-supervision output relative to the input, full resolution first.

    The network has one output per decoder level, i.e. per stage except the bottleneck, at the cumulative stride of
    that stage (``strides[0]`` is the stem's, normally 1).
    """
    scales, cumulative = [], [1, 1, 1]
    for stride in strides[:-1]:
        cumulative = [c * int(s) for c, s in zip(cumulative, stride)]
        scales.append(tuple(1.0 / c for c in cumulative))
    return scales


def downsample_seg_for_ds(seg: torch.Tensor, scales: Sequence[float | Sequence[float]]) -> list[torch.Tensor]:
    """(B, 1, Z, Y, X) label ``seg`` at each scale (size ``round(shape * scale)``), same dtype, nearest neighbour.

    ``nearest-exact`` takes input voxel ``floor((j + 0.5) / scale)``, i.e. voxel ``2j + 1`` at scale 1/2: the centre
    of the output voxel's footprint, rounded up, exactly as nnU-Net makes its targets.
    """
    spatial = seg.shape[2:]
    targets = []
    for scale in scales:
        factors = [float(scale)] * len(spatial) if isinstance(scale, (int, float)) else [float(s) for s in scale]
        size = [max(1, round(length * factor)) for length, factor in zip(spatial, factors)]
        if size == list(spatial):
            targets.append(seg)
            continue
        resized = F.interpolate(seg.to(torch.float32), size=size, mode="nearest-exact")
        targets.append(resized.to(seg.dtype))
    return targets
