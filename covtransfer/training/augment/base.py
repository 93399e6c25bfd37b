"""Sample-then-apply: every transform draws its random parameters first, then applies them deterministically.

Separating the two lets a batch's augmentation be recorded, logged and replayed, and lets tests apply chosen
parameters. Calling a transform does both, drawing from the generator in the same order as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from covtransfer.training.augment.sampling import balanced_factor, coin


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


class ChannelFactorTransform(SampledTransform):
    """A transform of a fraction ``p`` of samples by one factor per channel from ``factor_range``, drawn half below
    and half above 1 as nnU-Net draws them (brightness, contrast)."""

    def __init__(self, p: float = 0.15, factor_range: tuple[float, float] = (0.75, 1.25)) -> None:
        self.p = p
        self.factor_range = factor_range

    def sample(self, batch: int, channels: int, generator: torch.Generator) -> Draws:
        """Which samples change, and a factor per sample and channel."""
        apply = coin(generator, (batch,), self.p)
        return Draws(apply, balanced_factor(generator, (batch, channels), *self.factor_range))
