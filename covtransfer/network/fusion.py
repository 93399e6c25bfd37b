"""Selective Fusion: channel attention that merges the dedicated and adapted encoders' feature maps.

In the manner of selective-kernel networks, a per-sample channel descriptor of F_D + F_A chooses, per channel, how
much of each branch to keep (α for dedicated, β = 1 − α for adapted). No batch statistics: batches are tiny.
"""

from __future__ import annotations

import torch
from torch import nn


def hidden_size(channels: int) -> int:
    """Width d of the squeeze layer: max(C // 16, 32)."""
    return max(channels // 16, 32)


class SelectiveFusion(nn.Module):
    """V = α ⊙ F_D + β ⊙ F_A with [α, β] = softmax over the branches of (W_D z, W_A z), z = ReLU(W1 s + b1).

    ``s`` is the spatial mean of U = F_D + F_A. After each forward, ``last_alpha`` holds α (B, C), detached.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.squeeze = nn.Linear(channels, hidden_size(channels), bias=True)
        self.act = nn.ReLU(inplace=True)
        self.dedicated = nn.Linear(hidden_size(channels), channels, bias=False)
        self.adapted = nn.Linear(hidden_size(channels), channels, bias=False)
        self.last_alpha: torch.Tensor | None = None

    def attention(self, f_dedicated: torch.Tensor, f_adapted: torch.Tensor) -> torch.Tensor:
        """α and β stacked as (2, B, C); mean(F_D) + mean(F_A) equals mean(U) without materialising U."""
        spatial = tuple(range(2, f_dedicated.ndim))
        s = f_dedicated.mean(spatial) + f_adapted.mean(spatial)
        z = self.act(self.squeeze(s))
        return torch.softmax(torch.stack((self.dedicated(z), self.adapted(z))), dim=0)

    def forward(self, f_dedicated: torch.Tensor, f_adapted: torch.Tensor) -> torch.Tensor:
        weights = self.attention(f_dedicated, f_adapted)
        self.last_alpha = weights[0].detach()
        shape = (*weights.shape[1:], *(1,) * (f_dedicated.ndim - 2))
        alpha = weights[0].reshape(shape).to(f_dedicated.dtype)
        beta = weights[1].reshape(shape).to(f_adapted.dtype)
        return torch.addcmul(f_adapted * beta, f_dedicated, alpha)
