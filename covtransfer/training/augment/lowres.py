"""Simulated low resolution (p=0.25 per sample, each channel with p=0.5): nearest downsampling by a zoom in (0.5, 1),
then linear upsampling back to the original size.

Each channel has its own zoom (the same on every axis), so the low-resolution grids differ in size; instead of one
interpolate call per channel, both steps are expressed per axis as index gathers with interpolation weights, which
matches ``F.interpolate`` (``nearest-exact`` down, ``trilinear`` up with ``align_corners=False``) and vectorises over
channels. Downsampling takes the voxel at the centre of each block, the point that upsampling assumes, so the image
stays on its (unchanged) label; taking the block's first voxel (``nearest``) would shift it by up to a voxel. ``ignore_axes`` keeps full resolution along those axes (the z axis of dummy-2D patches).
"""

from __future__ import annotations

from typing import Sequence

import torch

from covtransfer.training.augment.base import Draws, SampledTransform
from covtransfer.training.augment.sampling import coin, uniform


def lowres_indices(length: int, zooms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices (n, length) of the two low-resolution neighbours of each output voxel, and the upper one's weight.

    A low-resolution grid of ``l = round(length * zoom)`` voxels takes voxel ``floor((j + 0.5) * length / l)``, the
    centre of block ``j`` (nearest-exact downsampling); output voxel ``o`` sits at ``(o + 0.5) * l / length - 0.5`` on
    that grid (linear upsampling).
    """
    low = torch.clamp(torch.round(length * zooms), min=1).long()[:, None]
    outputs = torch.arange(length, dtype=torch.float64)[None, :]
    position = ((outputs + 0.5) * low / length - 0.5).clamp(min=0)
    below = torch.minimum(position.floor().long(), low - 1)
    above = torch.minimum(below + 1, low - 1)
    weight = position - below

    def source(j: torch.Tensor) -> torch.Tensor:
        return torch.clamp((2 * j + 1) * length // (2 * low), max=length - 1)
    return source(below), source(above), weight.clamp(max=1)


def _resample_axis(volumes: torch.Tensor, zooms: torch.Tensor, dim: int) -> torch.Tensor:
    """Apply nearest-down, linear-up along ``dim`` of (n, Z, Y, X) ``volumes`` with one zoom per volume."""
    length = volumes.shape[dim]
    below, above, weight = lowres_indices(length, zooms)
    shape = [len(zooms), 1, 1, 1]
    shape[dim] = length
    size = list(volumes.shape)
    device, dtype = volumes.device, volumes.dtype
    lower = volumes.gather(dim, below.reshape(shape).to(device).expand(size))
    upper = volumes.gather(dim, above.reshape(shape).to(device).expand(size))
    weight = weight.reshape(shape).to(device, dtype)
    return lower + (upper - lower) * weight


class SimulateLowResolution(SampledTransform):
    """Degrade chosen channels of a fraction ``p`` of samples to a coarser grid (zoom from ``zoom_range``) and back."""

    def __init__(self, p: float = 0.25, zoom_range: tuple[float, float] = (0.5, 1.0), p_per_channel: float = 0.5,
                 ignore_axes: Sequence[int] = ()) -> None:
        self.p = p
        self.zoom_range = zoom_range
        self.p_per_channel = p_per_channel
        self.ignore_axes = tuple(ignore_axes)

    def sample(self, batch: int, channels: int, generator: torch.Generator) -> Draws:
        """Which (sample, channel) pairs are degraded, and a zoom per sample and channel."""
        apply = coin(generator, (batch,), self.p)[:, None] & coin(generator, (batch, channels), self.p_per_channel)
        return Draws(apply, uniform(generator, (batch, channels), *self.zoom_range))

    def apply(self, images: torch.Tensor, seg: torch.Tensor, params: Draws) -> tuple[torch.Tensor, torch.Tensor]:
        """Resample the chosen channels down by their zooms and back up."""
        if not params.apply.any():
            return images, seg
        samples, chans = (i.to(images.device) for i in params.apply.nonzero(as_tuple=True))
        volumes = images[samples, chans]
        for axis in range(3):
            if axis not in self.ignore_axes:
                volumes = _resample_axis(volumes, params.values[params.apply], axis + 1)
        return images.index_put((samples, chans), volumes), seg
