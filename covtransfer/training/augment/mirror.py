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
        for column, axis in enumerate(self.axes):
            if not flips[:, column].any():
                continue
            index = selected(flips[:, column], images.device)
            dim = axis + 2
            images = images.index_copy(0, index, images.index_select(0, index).flip(dim))
            seg = seg.index_copy(0, index, seg.index_select(0, index).flip(dim))
        return images, seg
