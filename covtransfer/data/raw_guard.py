"""The guard every writing command runs on its output path: nothing is ever written into a raw dataset folder.

A raw dataset folder is a ``DatasetNNN_Name`` folder directly under the raw root (existing or not), or any folder holding a
``dataset.json`` beside ``imagesTr``/``imagesTs``/``labelsTr``/``labelsTs`` (wherever it lies). A stray file in one
breaks ``covtransfer_verify`` and planning until it is removed by hand, so the output is refused before any work.
"""

from __future__ import annotations

import os
from pathlib import Path

from covtransfer.config import parse_dataset_id, resolve_roots
from covtransfer.errors import CovtransferError

RAW_SUBFOLDERS = ("imagesTr", "imagesTs", "labelsTr", "labelsTs")


def _looks_raw(folder: Path) -> bool:
    return (folder / "dataset.json").is_file() and any((folder / sub).is_dir() for sub in RAW_SUBFOLDERS)


def raw_dataset_containing(path: str | os.PathLike, raw_root: str | os.PathLike | None = None) -> Path | None:
    """The raw dataset folder that ``path`` (a file or folder, existing or not) lies in, or None."""
    target = Path(path).resolve()
    root = Path(raw_root if raw_root is not None else resolve_roots().raw).resolve()
    if target != root and target.is_relative_to(root):
        first = root / target.relative_to(root).parts[0]
        if parse_dataset_id(first.name) is not None or _looks_raw(first):
            return first
    for folder in (target, *target.parents):
        if _looks_raw(folder):
            return folder
    return None


def refuse_raw_dataset(path: str | os.PathLike, option: str, raw_root: str | os.PathLike | None = None) -> None:
    """Raise a one-line error when the output ``path`` (given with ``option``) lies inside a raw dataset folder."""
    dataset = raw_dataset_containing(path, raw_root)
    if dataset is not None:
        raise CovtransferError(f"{path}: inside the raw dataset folder {dataset}; nothing is ever written into one "
                               f"(give {option} a path outside it); nothing written")


def summary_output(ref: str | os.PathLike, pred: str | os.PathLike, output: str | os.PathLike | None,
                   default_name: str) -> Path:
    """Where a command scoring ``pred`` against ``ref`` writes its JSON: ``output``, else ``pred/default_name``;
    refused when the two folders are one or when that place lies inside a raw dataset folder."""
    if Path(ref).resolve() == Path(pred).resolve():
        raise CovtransferError(f"{pred}: the predictions folder (-p) is the reference folder (-r); give the folder "
                               "of predicted label maps; nothing written")
    path = Path(output) if output else Path(pred) / default_name
    refuse_raw_dataset(path, "-o")
    return path
