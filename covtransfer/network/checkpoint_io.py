"""The checkpoint file: a :class:`Checkpoint` written atomically, read with ``torch.load(weights_only=True)``.

It lives beside the network builder because training writes checkpoints and inference reads them, and inference
must not import training.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from covtransfer.atomic import atomic_path
from covtransfer.errors import CovtransferError
from covtransfer.network.checkpoint import Checkpoint


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` through a temporary file and a rename."""
    content = checkpoint.to_dict()
    with atomic_path(path) as tmp:
        torch.save(content, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a covtransfer checkpoint safely (``weights_only``); a one-line error naming the file for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CovtransferError(f"{path}: checkpoint not found")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CovtransferError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    try:
        return Checkpoint.from_dict(content)
    except CovtransferError as exc:
        raise CovtransferError(f"{path}: {exc}") from None
