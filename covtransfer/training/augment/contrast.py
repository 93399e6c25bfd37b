"""Contrast (p=0.15 per sample): each channel stretched about its mean by a factor from (0.75, 1.25).

With ``preserve_range`` (the default, as in nnU-Net) the result is clipped to the channel's original min and max.
"""

from __future__ import annotations

import torch

from covtransfer.training.augment.base import ChannelFactorTransform, Draws
from covtransfer.training.augment.sampling import broadcastable, selected


class Contrast(ChannelFactorTransform):
    """``x -> (x - mean) * f + mean`` per channel for a fraction ``p`` of samples, optionally clipped to the old range.
    """

    def __init__(self, p: float = 0.15, factor_range: tuple[float, float] = (0.75, 1.25),
                 preserve_range: bool = True) -> None:
        super().__init__(p, factor_range)
        self.preserve_range = preserve_range

    def apply(self, images: torch.Tensor, seg: torch.Tensor, params: Draws) -> tuple[torch.Tensor, torch.Tensor]:
        """Stretch the chosen samples' channels about their means by their factors."""
        if not params.apply.any():
            return images, seg
        index = selected(params.apply, images.device)
        chosen = images.index_select(0, index)
        flat = chosen.flatten(2)
        mean = flat.mean(2)[..., None, None, None]
        factor = broadcastable(params.values[params.apply], chosen.dim(), images.dtype, images.device)
        stretched = (chosen - mean) * factor + mean
        if self.preserve_range:
            low, high = flat.amin(2)[..., None, None, None], flat.amax(2)[..., None, None, None]
            stretched = torch.minimum(torch.maximum(stretched, low), high)
        return images.index_copy(0, index, stretched), seg
