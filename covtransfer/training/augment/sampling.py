"""Per-sample random parameters drawn on a CPU generator, so every device sees the same augmentation for a seed.

Transforms always draw all their parameters, whether or not a sample is selected, so the random stream advances by the
same amount on every call and later transforms do not depend on earlier coin flips.
"""

from __future__ import annotations

import torch


def coin(generator: torch.Generator, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """Boolean CPU tensor of ``shape``, each entry ``True`` with probability ``p``."""
    return torch.rand(shape, generator=generator, dtype=torch.float64) < p


def uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    """Float64 CPU tensor drawn uniformly from ``[low, high)``."""
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def balanced_factor(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    """Multiplicative factors in ``[low, high)``, half of them drawn below 1 and half above, as nnU-Net does.

    Drawing uniformly from e.g. (0.75, 1.25) would already be balanced, but for (0.7, 1.5) a plain uniform draw would
    favour values above 1; choosing the side with a fair coin keeps shrinking and growing equally likely.
    """
    below = coin(generator, shape, 0.5)
    low_side = uniform(generator, shape, low, min(high, 1.0))
    high_side = uniform(generator, shape, max(low, 1.0), high)
    if low >= 1.0:
        return high_side
    if high <= 1.0:
        return low_side
    return torch.where(below, low_side, high_side)


def draw_seed(generator: torch.Generator) -> int:
    """A seed drawn from ``generator`` for a device generator (:func:`seeded_generator`)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``, for large random fields that should not cross the bus."""
    child = torch.Generator(device=device)
    child.manual_seed(seed)
    return child


def selected(mask: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Indices of the ``True`` entries of a 1-D CPU mask, as a long tensor on ``device``."""
    return mask.nonzero().squeeze(1).to(device)


def broadcastable(values: torch.Tensor, ndim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``values`` (leading dims only) reshaped with trailing singleton dims to ``ndim`` dims, on ``device``."""
    shape = tuple(values.shape) + (1,) * (ndim - values.dim())
    return values.reshape(shape).to(device=device, dtype=dtype)
