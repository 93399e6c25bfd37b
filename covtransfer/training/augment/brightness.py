"""Multiplicative brightness (p=0.15 per sample): each channel scaled by its own factor from (0.75, 1.25)."""

from __future__ import annotations

import torch

from covtransfer.training.augment.base import Draws, SampledTransform
from covtransfer.training.augment.sampling import balanced_factor, broadcastable, coin


class MultiplicativeBrightness(SampledTransform):
    """Multiply every channel of a fraction ``p`` of samples by a factor in ``factor_range`` (half below 1)."""

    def __init__(self, p: float = 0.15, factor_range: tuple[float, float] = (0.75, 1.25)) -> None:
        self.p = p
        self.factor_range = factor_range

    def sample(self, batch: int, channels: int, generator: torch.Generator) -> Draws:
        """Which samples are scaled, and a factor per sample and channel."""
        apply = coin(generator, (batch,), self.p)
        return Draws(apply, balanced_factor(generator, (batch, channels), *self.factor_range))

    def apply(self, images: torch.Tensor, seg: torch.Tensor, params: Draws) -> tuple[torch.Tensor, torch.Tensor]:
        """Multiply the chosen samples' channels by their factors."""
        if not params.apply.any():
            return images, seg
        factors = torch.where(params.apply[:, None], params.values, torch.ones_like(params.values))
        return images * broadcastable(factors, images.dim(), images.dtype, images.device), seg
