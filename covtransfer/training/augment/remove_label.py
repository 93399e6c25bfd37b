"""RemoveLabel: the -1 marking outside the non-zero mask, padding and resampling borders becomes background (0)."""

from __future__ import annotations

import torch


class RemoveLabel:
    """Set negative labels to 0; images pass through.

    -1 is the only negative value our segmentations hold, so a clamp does the job, many times faster on CPU than a
    masked fill.
    """

    def __call__(self, images: torch.Tensor, seg: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return images, seg.clamp(min=0)
