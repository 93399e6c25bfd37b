"""The checkpoint file: written atomically, read with ``torch.load(weights_only=True)``, recognised by its format tag.

It lives beside the network builder because training writes checkpoints and inference reads them, and inference
must not import training.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from covtransfer.atomic import atomic_path
from covtransfer.errors import CovtransferError

FORMAT = "covtransfer-checkpoint"


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
