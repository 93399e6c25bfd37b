"""Additive Gaussian noise (p=0.1 per sample), the noise level drawn per sample from (0, 0.1).

nnU-Net names this range ``noise_variance`` but uses the drawn value as the standard deviation of the noise; we do the
same and call it what it is. All channels of a sample share the level; the noise field itself is drawn on the
images' device from a generator seeded by the CPU generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from covtransfer.training.augment.base import SampledTransform
from covtransfer.training.augment.sampling import broadcastable, coin, draw_seed, seeded_generator, selected, uniform


@dataclass(frozen=True)
class NoiseParams:
    """Which samples get noise, each sample's noise level, and the seed of the noise field."""

    apply: torch.Tensor
    stds: torch.Tensor
    seed: int


class GaussianNoise(SampledTransform):
    """Add zero-mean Gaussian noise with standard deviation drawn from ``std_range`` to a fraction ``p`` of samples."""

    def __init__(self, p: float = 0.1, std_range: tuple[float, float] = (0.0, 0.1)) -> None:
        self.p = p
        self.std_range = std_range

    def sample(self, batch: int, channels: int, generator: torch.Generator) -> NoiseParams:
        """Which samples get noise, their levels, and the noise field's seed (the field itself is drawn in apply)."""
        apply = coin(generator, (batch,), self.p)
        stds = uniform(generator, (batch,), *self.std_range)
        return NoiseParams(apply, stds, draw_seed(generator))

    def apply(self, images: torch.Tensor, seg: torch.Tensor,
              params: NoiseParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the seeded noise field, scaled by each chosen sample's level."""
        if not params.apply.any():
            return images, seg
        index = selected(params.apply, images.device)
        chosen = images.index_select(0, index)
        noise_generator = seeded_generator(params.seed, images.device)
        noise = torch.randn(chosen.shape, generator=noise_generator, device=images.device, dtype=images.dtype)
        chosen = chosen + noise * broadcastable(params.stds[params.apply], chosen.dim(), images.dtype, images.device)
        return images.index_copy(0, index, chosen), seg
