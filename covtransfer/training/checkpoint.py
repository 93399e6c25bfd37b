"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``, self-describing.

A checkpoint holds plain tensors, numbers, strings, lists and dicts only: the network description and weights
(enough to predict), the plans, and the full training state (optimizer, grad scaler, epoch, RNG, metrics history)
so that ``--continue`` resumes exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from covtransfer.atomic import atomic_path
from covtransfer.errors import CovtransferError

FORMAT = "covtransfer-checkpoint"
NAMES = ("checkpoint_final.pt", "checkpoint_latest.pt", "checkpoint_best.pt")


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    """Write ``checkpoint`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a covtransfer checkpoint safely (``weights_only``); a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CovtransferError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CovtransferError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CovtransferError(f"{path}: not a covtransfer checkpoint")
    return checkpoint


def find_checkpoint(path: str | os.PathLike, which: str = "final") -> Path:
    """A checkpoint file: ``path`` itself, or ``checkpoint_<which>.pt`` inside a run folder."""
    path = Path(path)
    if path.is_file():
        return path
    candidate = path / f"checkpoint_{which}.pt"
    if candidate.is_file():
        return candidate
    if path.is_dir():
        raise CovtransferError(f"{path}: no checkpoint_{which}.pt in this folder")
    raise CovtransferError(f"{path}: no such checkpoint file or run folder")


def newest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The checkpoint in ``folder`` with the most completed epochs (final, latest or best), or None."""
    best: tuple[int, Path] | None = None
    for name in NAMES:
        path = Path(folder) / name
        if path.is_file():
            epoch = int(load_checkpoint(path).get("epoch", 0))
            if best is None or epoch > best[0]:
                best = (epoch, path)
    return best[1] if best else None
