"""Mirroring: each allowed spatial axis flipped with probability 0.5 per sample, image and label together."""

from __future__ import annotations

from typing import Sequence

import torch

from covtransfer.training.augment.base import SampledTransform
from covtransfer.training.augment.sampling import coin, selected


class Mirror(SampledTransform):
    """Flip each axis in ``axes`` (0 = z, 1 = y, 2 = x) independently per sample with probability ``p``."""

    def __init__(self, axes: Sequence[int] = (0, 1, 2), p: float = 0.5) -> None:
        self.axes = tuple(int(a) for a in axes)
        self.p = p

    def sample(self, batch: int, channels: int, generator: torch.Generator) -> torch.Tensor:
        """(B, len(axes)) booleans: whether each sample is flipped along each of ``axes``."""
        return coin(generator, (batch, len(self.axes)), self.p)

    def apply(self, images: torch.Tensor, seg: torch.Tensor,
              flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flip image and label of each sample along its chosen axes."""
        # one multi-axis flip per distinct pattern is far cheaper than one pass per axis
        for pattern in torch.unique(flips, dim=0):
            dims = [axis + 2 for axis, flip in zip(self.axes, pattern.tolist()) if flip]
            if not dims:
                continue
            index = selected((flips == pattern).all(1), images.device)
            images = images.index_copy(0, index, images.index_select(0, index).flip(dims))
            seg = seg.index_copy(0, index, seg.index_select(0, index).flip(dims))
        return images, seg
