"""Sample-then-apply: every transform draws its random parameters first, then applies them deterministically.

Separating the two lets a batch's augmentation be recorded, logged and replayed, and lets tests apply chosen
parameters. Calling a transform does both, drawing from the generator in the same order as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Draws:
    """Which samples (``(B,)``) or sample channels (``(B, C)``) a transform changes, and the values drawn for them.

    ``values`` are drawn for every sample and channel, selected or not, so the random stream advances alike.
    """

    apply: torch.Tensor
    values: torch.Tensor


class SampledTransform:
    """A batched transform split into ``sample`` (all randomness, on a CPU generator) and ``apply`` (none)."""

    def sample(self, batch: int, channels: int, generator: torch.Generator) -> Any:
        """The random parameters for a batch of ``batch`` samples with ``channels`` image channels."""
        raise NotImplementedError

    def apply(self, images: torch.Tensor, seg: torch.Tensor, params: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform (B, C, Z, Y, X) ``images`` and (B, 1, Z, Y, X) ``seg`` with ``params`` from :meth:`sample`."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, seg: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply(images, seg, self.sample(images.shape[0], images.shape[1], generator))
