"""Multiplicative brightness (p=0.15 per sample): each channel scaled by its own factor from (0.75, 1.25)."""

from __future__ import annotations

import torch

from covtransfer.training.augment.base import ChannelFactorTransform, Draws
from covtransfer.training.augment.sampling import broadcastable


class MultiplicativeBrightness(ChannelFactorTransform):
    """Multiply every channel of a fraction ``p`` of samples by a factor in ``factor_range`` (half below 1)."""

    def apply(self, images: torch.Tensor, seg: torch.Tensor, params: Draws) -> tuple[torch.Tensor, torch.Tensor]:
        """Multiply the chosen samples' channels by their factors."""
        if not params.apply.any():
            return images, seg
        factors = torch.where(params.apply[:, None], params.values, torch.ones_like(params.values))
        return images * broadcastable(factors, images.dim(), images.dtype, images.device), seg
