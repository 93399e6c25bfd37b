"""Training loss: soft Dice + cross-entropy (1:1), deep-supervision weighting, and TP/FP/FN for the online Dice.

Unlike nnU-Net, which adds the *negative* Dice (so logged losses go below zero), the Dice term here is
``1 - mean Dice``: the loss is ``CE + (1 - Dice)``, non-negative and 0 for a perfect, confident prediction. Gradients
are identical.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.nn.functional import all_reduce


def _labels(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """(B, Z, Y, X) long labels from a (B, 1, Z, Y, X) or (B, Z, Y, X) integer target for (B, K, Z, Y, X) logits."""
    if target.dim() == logits.dim():
        target = target[:, 0]
    return target.long()


def _valid(labels: torch.Tensor, ignore_index: int | None) -> torch.Tensor | None:
    """Mask of voxels that count, or None when nothing is ignored."""
    return None if ignore_index is None else labels != ignore_index


def _foreground_one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, K - 1, ...) boolean one-hot of the foreground classes 1..K-1 (background and ignored voxels all False)."""
    classes = torch.arange(1, num_classes, device=labels.device).reshape(1, -1, *([1] * (labels.dim() - 1)))
    return labels[:, None] == classes


class DiceCELoss(nn.Module):
    """``weight_ce * CE + weight_dice * (1 - soft Dice)`` from logits (B, K, ...) and integer labels.

    Soft Dice is computed on the softmax over the foreground classes only, per sample and class (``batch_dice``
    False, nnU-Net's default for 3D) or per class over the whole batch, as ``(2 I + smooth) / (P + G + smooth)``,
    then averaged. Voxels labelled ``ignore_index`` count in neither term; if all are ignored the CE term is 0.
    Under torch.distributed the batch Dice's ``I`` and ``P + G`` are summed over every rank's share of the global
    batch (see :func:`global_sums`), so each rank optimises the Dice of the global batch.
    """

    def __init__(self, batch_dice: bool = False, smooth: float = 1e-5, ignore_index: int | None = None,
                 weight_ce: float = 1.0, weight_dice: float = 1.0) -> None:
        super().__init__()
        self.batch_dice = batch_dice
        self.smooth = smooth
        self.ignore_index = ignore_index
        self.weight_ce = weight_ce
        self.weight_dice = weight_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels = _labels(target, logits)
        valid = _valid(labels, self.ignore_index)
        if valid is not None:
            labels = labels.masked_fill(~valid, 0)
        return self.weight_ce * self._cross_entropy(logits, labels, valid) + \
            self.weight_dice * (1 - self.dice(logits, labels, valid))

    @staticmethod
    def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """Mean voxel-wise cross-entropy over the counted voxels."""
        if valid is None:
            return F.cross_entropy(logits, labels)
        per_voxel = F.cross_entropy(logits, labels, reduction="none")
        return (per_voxel * valid).sum() / valid.sum().clamp(min=1)

    def dice(self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Mean soft Dice over foreground classes (and samples unless ``batch_dice``) of (B, K, ...) logits."""
        dtype = torch.promote_types(logits.dtype, torch.float32)  # half-precision logits are summed in float32
        probabilities = torch.softmax(logits, dim=1, dtype=dtype)[:, 1:]
        truth = _foreground_one_hot(labels, logits.shape[1]).to(dtype)
        if valid is not None:
            mask = valid[:, None].to(dtype)
            probabilities, truth = probabilities * mask, truth * mask
        axes = tuple(range(2, logits.dim()))
        if self.batch_dice:
            axes = (0,) + axes
        intersection = (probabilities * truth).sum(axes)
        total = probabilities.sum(axes) + truth.sum(axes)
        if self.batch_dice:
            intersection, total = global_sums(intersection, total)
        denominator = total + self.smooth
        return ((2 * intersection + self.smooth) / denominator.clamp(min=1e-8)).mean()


def global_sums(*terms: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each term summed over the ranks of torch.distributed (unchanged in a single process). The all-reduce is
    autograd-aware: its backward sums every rank's gradient of the global terms, so with DDP's gradient averaging
    a step gets the gradient of the one-process loss on the concatenated batch."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return terms
    return tuple(all_reduce(torch.stack(terms)).unbind(0))


def deep_supervision_weights(n: int) -> list[float]:
    """Weights ``1 / 2**i`` for ``n`` outputs (full resolution first), the lowest-resolution one 0, summing to 1."""
    if n < 1:
        raise ValueError(f"need at least one output, got {n}")
    if n == 1:
        return [1.0]
    raw = [0.5 ** i for i in range(n - 1)] + [0.0]
    total = sum(raw)
    return [w / total for w in raw]


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of ``loss(output_i, target_i)`` over deep-supervision levels; zero-weight levels are skipped."""

    def __init__(self, loss: nn.Module, weights: Sequence[float]) -> None:
        super().__init__()
        self.loss = loss
        self.weights = [float(w) for w in weights]

    def forward(self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
        if not (len(outputs) == len(targets) == len(self.weights)):
            raise ValueError(f"{len(outputs)} outputs, {len(targets)} targets, {len(self.weights)} weights")
        terms = [w * self.loss(o, t) for w, o, t in zip(self.weights, outputs, targets) if w != 0]
        return torch.stack(terms).sum()


@torch.no_grad()
def tp_fp_fn(logits: torch.Tensor, target: torch.Tensor,
             ignore_index: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """True/false positives and false negatives per foreground class (int64, length K - 1) of the argmax prediction,
    summed over batch and voxels; voxels labelled ``ignore_index`` are skipped."""
    labels = _labels(target, logits)
    valid = _valid(labels, ignore_index)
    predicted = _foreground_one_hot(logits.argmax(1), logits.shape[1])
    truth = _foreground_one_hot(labels, logits.shape[1])
    if valid is not None:
        predicted = predicted & valid[:, None]
        truth = truth & valid[:, None]
    axes = (0,) + tuple(range(2, logits.dim()))
    tp = (predicted & truth).sum(axes)
    return tp, predicted.sum(axes) - tp, truth.sum(axes) - tp


def dice_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """Per-class Dice ``2 TP / (2 TP + FP + FN)`` (float64), NaN where a class is absent from both."""
    tp, fp, fn = tp.double(), fp.double(), fn.double()
    denominator = 2 * tp + fp + fn
    return torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.full_like(tp, float("nan")))
