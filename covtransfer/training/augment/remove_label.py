"""RemoveLabel: the -1 marking outside the non-zero mask, padding and resampling borders becomes background (0)."""

from __future__ import annotations

import torch


class RemoveLabel:
    """Replace ``label`` (default -1) in the segmentation by ``replacement`` (default 0); images pass through."""

    def __init__(self, label: int = -1, replacement: int = 0) -> None:
        self.label = label
        self.replacement = replacement

    def __call__(self, images: torch.Tensor, seg: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return images, seg.masked_fill(seg == self.label, self.replacement)
