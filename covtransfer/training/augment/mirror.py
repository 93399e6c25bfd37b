"""Mirroring: each allowed spatial axis flipped with probability 0.5 per sample, image and label together."""

from __future__ import annotations

from typing import Sequence

import torch

from covtransfer.training.augment.sampling import coin, selected


class Mirror:
    """Flip each axis in ``axes`` (0 = z, 1 = y, 2 = x) independently per sample with probability ``p``."""

    def __init__(self, axes: Sequence[int] = (0, 1, 2), p: float = 0.5) -> None:
        self.axes = tuple(int(a) for a in axes)
        self.p = p

    def __call__(self, images: torch.Tensor, seg: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        flips = coin(generator, (images.shape[0], len(self.axes)), self.p)
        # one multi-axis flip per distinct pattern is far cheaper than one pass per axis
        for pattern in torch.unique(flips, dim=0):
            dims = [axis + 2 for axis, flip in zip(self.axes, pattern.tolist()) if flip]
            if not dims:
                continue
            index = selected((flips == pattern).all(1), images.device)
            images = images.index_copy(0, index, images.index_select(0, index).flip(dims))
            seg = seg.index_copy(0, index, seg.index_select(0, index).flip(dims))
        return images, seg
