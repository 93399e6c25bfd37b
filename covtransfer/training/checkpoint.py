"""Checkpoints of a training run: which file to resume from or transfer from. What a checkpoint holds is
:class:`covtransfer.network.checkpoint.Checkpoint`; reading and writing it is :mod:`covtransfer.network.checkpoint_io`.
"""

from __future__ import annotations

import os
from pathlib import Path

from covtransfer.errors import CovtransferError
from covtransfer.network.checkpoint_io import load_checkpoint

NAMES = ("checkpoint_final.pt", "checkpoint_latest.pt", "checkpoint_best.pt")


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
            epoch = load_checkpoint(path).epoch
            if best is None or epoch > best[0]:
                best = (epoch, path)
    return best[1] if best else None
