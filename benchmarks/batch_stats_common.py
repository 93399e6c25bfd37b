"""The per-sample statistics that ``batch_stats.py`` compares; imported by both tools' sides (plain torch only)."""

from __future__ import annotations

import numpy as np
import torch

STATS = ("foreground_fraction", "has_foreground", "image_mean", "image_std", "zero_fraction", "centre_offset")


def sample_stats(images: torch.Tensor, seg: torch.Tensor) -> np.ndarray:
    """(B, len(STATS)) per sample of a batch: the foreground fraction of the label, whether it has any foreground,
    the image's mean and std (first channel), the fraction of exact zeros (padding), and how far the foreground's
    centre of mass lies from the patch centre, in voxels (NaN without foreground)."""
    images, seg = images.float(), seg[:, 0]
    foreground = (seg > 0).float()
    counts = foreground.flatten(1).sum(1)
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in seg.shape[1:]], indexing="ij")
    centre = torch.tensor([(n - 1) / 2 for n in seg.shape[1:]])
    com = torch.stack([(foreground * g).flatten(1).sum(1) for g in grids], 1) / counts.clamp(min=1)[:, None]
    offset = torch.where(counts > 0, (com - centre).norm(dim=1), torch.full_like(counts, float("nan")))
    first = images[:, 0].flatten(1)
    return torch.stack([counts / foreground[0].numel(), (counts > 0).float(), first.mean(1), first.std(1),
                        (first == 0).float().mean(1), offset], 1).numpy().astype(np.float64)
