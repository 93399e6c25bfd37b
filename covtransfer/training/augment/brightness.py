"""Multiplicative brightness (p=0.15 per sample): each channel scaled by its own factor from (0.75, 1.25)."""

from __future__ import annotations

import torch

from covtransfer.training.augment.sampling import balanced_factor, broadcastable, coin


class MultiplicativeBrightness:
    """Multiply every channel of a fraction ``p`` of samples by a factor in ``factor_range`` (half below 1)."""

    def __init__(self, p: float = 0.15, factor_range: tuple[float, float] = (0.75, 1.25)) -> None:
        self.p = p
        self.factor_range = factor_range

    def __call__(self, images: torch.Tensor, seg: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        batch, channels = images.shape[:2]
        apply = coin(generator, (batch,), self.p)
        factors = balanced_factor(generator, (batch, channels), *self.factor_range)
        if not apply.any():
            return images, seg
        factors = torch.where(apply[:, None], factors, torch.ones_like(factors))
        return images * broadcastable(factors, images.dim(), images.dtype, images.device), seg
