"""Cross-validation splits: 5-fold, seeded, written once to ``splits.json`` and editable by hand.

A dataset-provided ``splits.json`` (copied from the raw dataset at preprocessing, e.g. the official COVID-19-CT-Seg
split of 4 training / 16 test cases per fold) always wins. Fold ``all`` trains and validates on every case.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from covtransfer.atomic import write_json
from covtransfer.errors import CovtransferError

SPLITS_FILE = "splits.json"


def make_splits(case_ids: list[str], n_folds: int = 5, seed: int = 12345) -> list[dict]:
    """Seeded k-fold splits of ``case_ids`` (fewer folds when there are fewer cases than ``n_folds``)."""
    if len(case_ids) < 2:
        return [{"train": list(case_ids), "val": list(case_ids)}]
    n_folds = min(n_folds, len(case_ids))
    order = np.random.default_rng(seed).permutation(sorted(case_ids))
    parts = np.array_split(order, n_folds)
    return [{"train": sorted(str(c) for j, p in enumerate(parts) if j != k for c in p),
             "val": sorted(str(c) for c in parts[k])} for k in range(n_folds)]


def load_or_create_splits(preprocessed_folder: Path, case_ids: list[str], seed: int = 12345) -> list[dict]:
    """The folder's ``splits.json``; created from ``case_ids`` (and written) when it does not exist yet."""
    path = Path(preprocessed_folder) / SPLITS_FILE
    if path.is_file():
        try:
            splits = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CovtransferError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(splits, list) or not all(isinstance(s, dict) and "train" in s and "val" in s
                                                    for s in splits):
            raise CovtransferError(f"{path}: expected a list of {{'train': [...], 'val': [...]}} objects")
        unknown = sorted({c for s in splits for c in s["train"] + s["val"]} - set(case_ids))
        if unknown:
            raise CovtransferError(f"{path}: names cases that are not preprocessed: {', '.join(unknown[:5])}")
        return splits
    splits = make_splits(case_ids, seed=seed)
    write_json(path, splits)
    return splits


def fold_cases(splits: list[dict], fold: str | int, case_ids: list[str]) -> tuple[list[str], list[str]]:
    """Training and validation case ids of ``fold`` (an index into ``splits`` or ``"all"``)."""
    if str(fold) == "all":
        return sorted(case_ids), sorted(case_ids)
    try:
        index = int(fold)
    except ValueError:
        raise CovtransferError(f"unknown fold {fold!r}: use 0..{len(splits) - 1} or 'all'") from None
    if not 0 <= index < len(splits):
        raise CovtransferError(f"unknown fold {fold}: splits.json has folds 0..{len(splits) - 1} (or use 'all')")
    return list(splits[index]["train"]), list(splits[index]["val"])
