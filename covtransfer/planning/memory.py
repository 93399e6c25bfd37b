"""Activation-memory estimate of a plain 3D U-Net, computed from its topology without building the network.

The unit is nnU-Net's "feature-map unit": the summed element count of every convolution output (encoder convs,
decoder transposed convs, decoder convs and the 1x1x1 segmentation heads at every deep-supervision level) for one
sample. Normalisation and nonlinearity outputs are not counted, nor is the input. nnU-Net gets the same number by
instantiating its network; arithmetic gives it in microseconds and keeps planning free of torch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def stage_shapes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Feature-map shape at each encoder stage: the patch floor-divided by the cumulative strides."""
    shapes = []
    size = [int(s) for s in patch_size]
    for stride in strides:
        size = [s // k for s, k in zip(size, stride)]
        shapes.append(size)
    return shapes


def feature_map_units(patch_size: Sequence[int], strides: Sequence[Sequence[int]],
                      features_per_stage: Sequence[int], num_classes: int, n_conv_encoder: int = 2,
                      n_conv_decoder: int = 2, deep_supervision: bool = True) -> int:
    """Summed element count of all conv outputs of one sample through the U-Net (nnU-Net's VRAM proxy).

    Encoder stage ``s``: ``n_conv_encoder`` convs with ``features_per_stage[s]`` maps at that stage's resolution.
    Decoder level ``s`` (every stage but the bottleneck): one transposed conv plus ``n_conv_decoder`` convs with
    ``features_per_stage[s]`` maps, and a ``num_classes`` segmentation head (only the top level's without deep
    supervision).
    """
    voxels = [int(np.prod(shape, dtype=np.int64)) for shape in stage_shapes(patch_size, strides)]
    encoder = sum(n_conv_encoder * f * v for f, v in zip(features_per_stage, voxels))
    decoder = 0
    for level in range(len(voxels) - 1):
        decoder += (n_conv_decoder + 1) * features_per_stage[level] * voxels[level]
        if deep_supervision or level == 0:
            decoder += num_classes * voxels[level]
    return int(encoder + decoder)
