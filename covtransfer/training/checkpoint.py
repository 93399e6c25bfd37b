"""Checkpoints of a training run: which file to resume from or transfer from. What a checkpoint holds is
:class:`covtransfer.network.checkpoint.Checkpoint`; reading and writing it is :mod:`covtransfer.network.checkpoint_io`.

``checkpoint_latest.pt`` is written every ``--save-every`` epochs; the one it replaces becomes
``checkpoint_previous.pt`` (renamed only once the new file is complete), so a damaged latest file still leaves a good
one to resume from with ``--resume-from``.
"""

from __future__ import annotations

import os
from pathlib import Path

from covtransfer.atomic import remove_leftovers
from covtransfer.errors import CovtransferError
from covtransfer.network.checkpoint_io import load_checkpoint

LATEST = "checkpoint_latest.pt"
PREVIOUS = "checkpoint_previous.pt"
NAMES = ("checkpoint_final.pt", LATEST, "checkpoint_best.pt", PREVIOUS)  # ties in epochs go to the earlier name
DAMAGED_SUFFIX = ".corrupt"


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


def _read_epochs(folder: Path) -> tuple[list[tuple[int, Path]], list[tuple[Path, CovtransferError]]]:
    """The ``(epoch, path)`` of each readable checkpoint of ``folder`` (in :data:`NAMES` order) and the
    ``(path, error)`` of the unreadable ones."""
    good, bad = [], []
    for name in NAMES:
        path = folder / name
        if path.is_file():
            try:
                good.append((load_checkpoint(path).epoch, path))
            except CovtransferError as exc:
                bad.append((path, exc))
    return good, bad


def newest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The checkpoint in ``folder`` with the most completed epochs, or None; an unreadable one is refused in one
    line that offers the newest intact checkpoint for ``--resume-from``, so a run never silently goes back."""
    folder = Path(folder)
    good, bad = _read_epochs(folder)
    newest = max(good, key=lambda item: item[0], default=None)  # the first of equals
    if bad and newest is not None:
        raise CovtransferError(f"{bad[0][1]}; {newest[1].name} (epoch {newest[0]}) is intact: pass --resume-from "
                               f"{newest[1]}")
    if bad:
        raise CovtransferError(f"{bad[0][1]}; no intact checkpoint in {folder} to resume from: delete the folder to "
                               "start the run again")
    return newest[1] if newest else None


def set_aside_damaged(folder: str | os.PathLike) -> list[Path]:
    """Rename each unreadable checkpoint of ``folder`` to ``<name>.corrupt`` (kept for inspection, never rotated
    onto the good previous one); returns the new names."""
    moved = []
    for path, _ in _read_epochs(Path(folder))[1]:
        target = path.with_name(path.name + DAMAGED_SUFFIX)
        os.replace(path, target)
        moved.append(target)
    return moved


def remove_checkpoint_leftovers(folder: str | os.PathLike) -> None:
    """Delete temporary checkpoint files a killed run left in ``folder`` (call it while holding the run lock)."""
    for name in NAMES:
        remove_leftovers(Path(folder) / name)
