"""Choosing the torch device from a command-line value (``cpu``, ``cuda``, ``cuda:K`` or ``auto``)."""

from __future__ import annotations

import torch

from covtransfer.errors import CovtransferError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when available, else the CPU; asking for CUDA without one is a clear error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise CovtransferError(f"--device {name!r}: use cpu, cuda or auto")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CovtransferError("--device cuda: no CUDA device is available (use --device cpu)")
    return torch.device(name)
