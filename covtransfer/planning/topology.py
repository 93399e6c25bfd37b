"""U-Net topology from spacing and patch size: which axes pool at each stage, the conv kernels, the padded patch.

The rules are nnU-Net's: an axis pools while its feature map stays at least twice the minimal edge and its spacing
is within a factor 2 of the finest spacing among the poolable axes (so a coarse z axis waits until the in-plane
axes have caught up); a lone pooling axis needs three times the minimal edge; a conv kernel is 1 along an axis
until that axis's spacing comes within a factor 2 of the finest, 3 from then on; the bottleneck is all 3s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

MIN_EDGE = 4
INITIAL_PATCH_EDGE = 256


@dataclass
class Topology:
    """Strides and kernels per stage (``strides[0]`` is all 1s), the patch padded to ``divisors`` per axis."""

    strides: list[list[int]]
    kernel_sizes: list[list[int]]
    patch_size: list[int]
    pools_per_axis: list[int]
    divisors: list[int]

    @property
    def n_stages(self) -> int:
        return len(self.strides)


def pad_to_divisors(shape: Sequence[float], divisors: Sequence[int]) -> list[int]:
    """Round every axis of ``shape`` up to the next multiple of its divisor."""
    return [int(math.ceil(size / divisor) * divisor) for size, divisor in zip(shape, divisors)]


def pool_and_conv_props(spacing: Sequence[float], patch_size: Sequence[float], min_edge: int = MIN_EDGE,
                        max_stages: int | None = None) -> Topology:
    """Derive strides, kernels and the padded patch for ``patch_size`` at ``spacing`` (both z, y, x).

    ``max_stages`` caps the number of resolution stages (pooling steps + 1); None leaves it to the patch.
    """
    dim = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [float(s) for s in patch_size]
    kernel = [1] * dim
    pools = [0] * dim
    strides: list[list[int]] = [[1] * dim]
    kernels: list[list[int]] = []
    while max_stages is None or len(strides) < max_stages:
        candidates = [axis for axis in range(dim) if current_size[axis] >= 2 * min_edge]
        if not candidates:
            break
        finest = min(current_spacing[axis] for axis in candidates)
        candidates = [axis for axis in candidates if current_spacing[axis] / finest < 2]
        if len(candidates) == 1 and current_size[candidates[0]] < 3 * min_edge:
            break
        if not candidates:
            break
        finest_overall = min(current_spacing)
        for axis in range(dim):
            if current_spacing[axis] / finest_overall < 2:
                kernel[axis] = 3
        stride = [1] * dim
        for axis in candidates:
            stride[axis] = 2
            pools[axis] += 1
            current_spacing[axis] *= 2
            current_size[axis] = math.ceil(current_size[axis] / 2)
        strides.append(stride)
        kernels.append(list(kernel))
    kernels.append([3] * dim)
    divisors = [2 ** p for p in pools]
    return Topology(strides, kernels, pad_to_divisors(patch_size, divisors), pools, divisors)


def initial_patch_size(spacing: Sequence[float], median_shape: Sequence[float],
                       edge: int = INITIAL_PATCH_EDGE) -> list[float]:
    """A patch with aspect ratio ``1 / spacing`` and the volume of ``edge`` cubed, clipped to ``median_shape``."""
    inverse = 1.0 / np.asarray(spacing, dtype=np.float64)
    scaled = inverse * (edge ** len(spacing) / np.prod(inverse)) ** (1.0 / len(spacing))
    return [min(float(round(s)), float(m)) for s, m in zip(scaled, median_shape)]


def features_per_stage(n_stages: int, base: int = 32, cap: int = 320) -> list[int]:
    """Feature maps per stage: ``base`` doubling per stage, capped at ``cap``."""
    return [min(cap, base * 2 ** stage) for stage in range(n_stages)]
