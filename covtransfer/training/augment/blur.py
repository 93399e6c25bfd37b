"""Gaussian blur (p=0.2 per sample, each channel of a chosen sample with p=0.5), sigma per axis from (0.5, 1.0).

The 3D Gaussian is applied as three 1-D convolutions (one per axis), each written as a sum of shifted copies weighted
by a per-channel kernel, which vectorises over channels with different sigmas and runs alike on CPU and GPU. Borders
replicate the edge voxel; kernels reach 3 sigma.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from covtransfer.training.augment.base import Draws, SampledTransform
from covtransfer.training.augment.sampling import coin, uniform


def gaussian_kernels(sigmas: torch.Tensor) -> torch.Tensor:
    """(n, 2r + 1) normalised 1-D Gaussian kernels for (n,) sigmas, ``r = ceil(3 * max(sigmas))``."""
    radius = max(1, math.ceil(3 * float(sigmas.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets[None, :] / sigmas[:, None]) ** 2)
    return weights / weights.sum(1, keepdim=True)


def blur_along(volumes: torch.Tensor, kernels: torch.Tensor, dim: int) -> torch.Tensor:
    """Convolve (1, n, Z, Y, X) ``volumes`` along spatial ``dim`` (2, 3 or 4), one odd-length kernel per channel."""
    radius = kernels.shape[1] // 2
    padding = [0] * 6
    padding[2 * (4 - dim)] = padding[2 * (4 - dim) + 1] = radius
    padded = F.pad(volumes, padding, mode="replicate")
    length = volumes.shape[dim]
    weights = kernels.to(volumes.device, volumes.dtype)
    result = torch.zeros_like(volumes)
    for tap in range(kernels.shape[1]):
        result += padded.narrow(dim, tap, length) * weights[:, tap].reshape(1, -1, 1, 1, 1)
    return result


class GaussianBlur(SampledTransform):
    """Blur chosen channels of a fraction ``p`` of samples; sigma drawn per channel and axis from ``sigma_range``."""

    def __init__(self, p: float = 0.2, sigma_range: tuple[float, float] = (0.5, 1.0),
                 p_per_channel: float = 0.5) -> None:
        self.p = p
        self.sigma_range = sigma_range
        self.p_per_channel = p_per_channel

    def sample(self, batch: int, channels: int, generator: torch.Generator) -> Draws:
        """Which (sample, channel) pairs are blurred, and sigmas of shape (B, C, 3) in (z, y, x)."""
        apply = coin(generator, (batch,), self.p)[:, None] & coin(generator, (batch, channels), self.p_per_channel)
        return Draws(apply, uniform(generator, (batch, channels, 3), *self.sigma_range))

    def apply(self, images: torch.Tensor, seg: torch.Tensor, params: Draws) -> tuple[torch.Tensor, torch.Tensor]:
        """Blur the chosen channels with their sigmas."""
        if not params.apply.any():
            return images, seg
        samples, chans = (i.to(images.device) for i in params.apply.nonzero(as_tuple=True))
        volumes = images[samples, chans][None]
        chosen_sigmas = params.values[params.apply]
        for axis in range(3):
            volumes = blur_along(volumes, gaussian_kernels(chosen_sigmas[:, axis]), axis + 2)
        return images.index_put((samples, chans), volumes[0]), seg
