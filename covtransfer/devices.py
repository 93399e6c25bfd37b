"""Choosing the torch device from a command-line value (``cpu``, ``cuda``, ``cuda:K`` or ``auto``).

Commands resolve ``--device`` once, at their boundary, and pass the resulting :class:`torch.device` inward, so a bad
value is refused with one line before any work starts.
"""

from __future__ import annotations

import re

import torch

from covtransfer.errors import CovtransferError

DEVICE_HELP = "cpu, cuda, cuda:K or auto (default: CUDA when available, else the CPU)"
_CUDA = re.compile(r"cuda(?::(\d+))?")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when available, else the CPU; a malformed name or an absent CUDA device is a clear error."""
    text = str(name).strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA.fullmatch(text)
    if match is None:
        raise CovtransferError(f"--device {text!r}: use cpu, cuda or auto (cuda:K picks GPU K)")
    if not torch.cuda.is_available():
        raise CovtransferError(f"--device {text}: no CUDA device is available (use --device cpu)")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise CovtransferError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) "
                               f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return torch.device(text)
