"""RemoveLabel: the -1 marking outside the non-zero mask, padding and resampling borders becomes background (0)."""

from __future__ import annotations

import torch

from covtransfer.training.augment.base import SampledTransform


class RemoveLabel(SampledTransform):
    """Set negative labels to 0; images pass through.

    -1 is the only negative value our segmentations hold, so a clamp does the job, many times faster on CPU than a
    masked fill.
    """

    def sample(self, batch: int, channels: int, generator: torch.Generator) -> None:
        """Nothing is random."""
        return None

    def apply(self, images: torch.Tensor, seg: torch.Tensor, params: None) -> tuple[torch.Tensor, torch.Tensor]:
        """Clamp the labels at 0."""
        return images, seg.clamp(min=0)
