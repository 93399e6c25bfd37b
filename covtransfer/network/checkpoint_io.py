"""The checkpoint file: a :class:`Checkpoint` written atomically, read with ``torch.load(weights_only=True)``.

It lives beside the network builder because training writes checkpoints and inference reads them, and inference
must not import training.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch

from covtransfer.atomic import atomic_path, write_error
from covtransfer.errors import CovtransferError
from covtransfer.network.checkpoint import Checkpoint


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint, previous: str | os.PathLike | None = None
                    ) -> None:
    """Write ``checkpoint`` to ``path`` through a temporary file and a rename; with ``previous``, an existing
    ``path`` is renamed to ``previous`` only once the new file is complete, so a good checkpoint always exists.

    A failed write (full disk) is a one-line error naming ``path``; the files already there are left as they were.
    """
    path = Path(path)
    content = checkpoint.to_dict()
    with atomic_path(path) as tmp:
        try:
            torch.save(content, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a failed write(2) as a RuntimeError
            raise write_error(path, exc) from None
        if previous is not None and path.is_file():
            os.replace(path, previous)


def archive_damage(path: Path) -> str | None:
    """Why the checkpoint archive at ``path`` is truncated or corrupt (a member's CRC differs, no central
    directory), or None when it is intact; ``torch.load`` itself does not check the CRCs, so a flipped bit in the
    weights would load silently."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError) as exc:
        return f"not a complete zip archive: {exc}"
    except (OSError, RuntimeError, ValueError, zipfile.LargeZipFile) as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"CRC mismatch in {bad.split('/', 1)[-1]}" if bad is not None else None


ZIP_MAGIC = b"PK\x03\x04"
_KINDS = ((b"{", "a JSON file"), (b"[", "a JSON file"), (b"\x1f\x8b", "a gzip file (an image?)"),
          (b"\x80", "a Python pickle (not covtransfer's checkpoint archive)"))


def not_an_archive(path: Path) -> str | None:
    """What the file at ``path`` is when it is no zip archive at all (so no checkpoint, not even a damaged one);
    None for a zip archive, intact or not."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head or head.startswith(ZIP_MAGIC):  # an empty file is a checkpoint cut short
        return None
    stripped = head.lstrip()
    kind = next((words for magic, words in _KINDS if stripped.startswith(magic)), None)
    if kind is None:
        kind = "a text file" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "a file of another format"
    return kind


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a covtransfer checkpoint safely (CRCs checked, then ``weights_only``); a one-line error naming the file
    for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CovtransferError(f"{path}: checkpoint not found")
    foreign = not_an_archive(path)
    if foreign is not None:
        raise CovtransferError(f"{path}: not a checkpoint but {foreign}; expected a covtransfer checkpoint file "
                               "(checkpoint_final.pt) or the fold folder holding it")
    damage = archive_damage(path)
    if damage is not None:
        raise CovtransferError(f"{path}: unreadable checkpoint, truncated or corrupt ({damage})")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CovtransferError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    try:
        return Checkpoint.from_dict(content)
    except CovtransferError as exc:
        raise CovtransferError(f"{path}: {exc}") from None
