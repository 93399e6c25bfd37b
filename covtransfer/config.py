"""Data roots (raw, preprocessed, results) and finding a dataset folder by id or name.

Precedence: an explicit argument (a command-line flag) beats the environment variable, which beats the default
``./covtransfer_data/{raw,preprocessed,results}``. Nothing requires an environment variable to be set.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from covtransfer.errors import CovtransferError

_ENV = {"raw": "COVTRANSFER_RAW", "preprocessed": "COVTRANSFER_PREPROCESSED", "results": "COVTRANSFER_RESULTS"}
DEFAULT_BASE = Path("covtransfer_data")


@dataclass(frozen=True)
class Roots:
    """The three data roots every command reads from and writes to."""

    raw: Path
    preprocessed: Path
    results: Path


def resolve_roots(raw: str | os.PathLike | None = None, preprocessed: str | os.PathLike | None = None,
                  results: str | os.PathLike | None = None) -> Roots:
    """Resolve the roots from explicit values, then environment variables, then the defaults."""
    given = {"raw": raw, "preprocessed": preprocessed, "results": results}
    chosen = {}
    for key, value in given.items():
        if value is None:
            value = os.environ.get(_ENV[key]) or DEFAULT_BASE / key
        chosen[key] = Path(value)
    return Roots(**chosen)


def dataset_name(dataset_id: int, name: str) -> str:
    """The canonical folder name ``DatasetNNN_Name``."""
    if not 0 <= dataset_id <= 999:
        raise CovtransferError(f"dataset id {dataset_id} is out of range 0..999")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*", name):
        raise CovtransferError(f"dataset name {name!r} may hold only letters, digits, '_' and '-'")
    return f"Dataset{dataset_id:03d}_{name}"


def parse_dataset_id(folder_name: str) -> int | None:
    """The numeric id of a ``DatasetNNN_Name`` folder name, or None when it does not follow that form."""
    match = re.fullmatch(r"Dataset(\d{3})_.+", folder_name)
    return int(match.group(1)) if match else None


def _found(root: Path) -> str:
    """The dataset folders under ``root``, for error messages."""
    if not root.is_dir():
        return "the folder does not exist"
    names = sorted(p.name for p in root.glob("Dataset*_*") if p.is_dir() and parse_dataset_id(p.name) is not None)
    return f"found {', '.join(names)}" if names else "it holds no DatasetNNN_<Name> folder"


def find_dataset(root: Path, id_or_name: str | int) -> Path:
    """Find ``DatasetNNN_*`` under ``root`` by numeric id (``1``, ``"001"``) or full folder name."""
    root = Path(root)
    key = str(id_or_name)
    if not key.isdigit():
        path = root / key
        if path.is_dir():
            return path
        raise CovtransferError(f"{path}: no such dataset folder ({_found(root)})")
    wanted = int(key)
    matches = sorted(p for p in root.glob("Dataset*_*") if p.is_dir() and parse_dataset_id(p.name) == wanted) \
        if root.is_dir() else []
    if not matches:
        raise CovtransferError(f"{root}: no dataset with id {wanted} (expected a folder Dataset{wanted:03d}_<Name>; "
                               f"{_found(root)})")
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise CovtransferError(f"{root}: dataset id {wanted} is ambiguous ({names}); use the full name")
    return matches[0]
