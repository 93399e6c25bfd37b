"""Cross-validation splits: seeded five-fold partitions written once, hand edits and dataset-provided splits
kept, fold ``all``, and refusals of unknown folds and broken files."""

import json
import shutil

import pytest

from covtransfer.config import Roots
from covtransfer.errors import CovtransferError
from covtransfer.training.api import train
from covtransfer.training.splits import fold_cases, load_or_create_splits, make_splits
from covtransfer.training.strategies import make_strategy
from training_setup import DATASET, roots, settings  # noqa: F401 (fixtures)


def test_make_splits_is_a_seeded_five_fold_partition():
    cases = [f"case_{i:02d}" for i in range(12)]
    splits = make_splits(cases, seed=12345)
    assert len(splits) == 5
    vals = [set(s["val"]) for s in splits]
    assert sorted(c for v in vals for c in v) == cases  # every case validated exactly once
    assert sorted(len(v) for v in vals) == [2, 2, 2, 3, 3]
    for fold in splits:
        assert sorted(fold["train"] + fold["val"]) == cases and not set(fold["train"]) & set(fold["val"])
    assert make_splits(list(reversed(cases)), seed=12345) == splits
    assert make_splits(cases, seed=1) != splits
    assert len(make_splits(cases[:3])) == 3
    assert make_splits(["only"]) == [{"train": ["only"], "val": ["only"]}]


def test_splits_are_written_once_and_hand_edits_are_kept(tmp_path):
    cases = [f"c{i}" for i in range(6)]
    first = load_or_create_splits(tmp_path, cases)
    path = tmp_path / "splits.json"
    assert json.loads(path.read_text()) == first == make_splits(cases)
    edited = [{"train": cases[:5], "val": cases[5:]}]
    path.write_text(json.dumps(edited))
    assert load_or_create_splits(tmp_path, cases) == edited
    assert json.loads(path.read_text()) == edited


def test_dataset_provided_splits_win(tmp_path):
    cases = [f"c{i}" for i in range(20)]
    official = [{"train": cases[4 * k:4 * k + 4], "val": [c for c in cases if c not in cases[4 * k:4 * k + 4]],
                 "test": [c for c in cases if c not in cases[4 * k:4 * k + 4]]} for k in range(5)]
    (tmp_path / "splits.json").write_text(json.dumps(official))
    splits = load_or_create_splits(tmp_path, cases)
    assert splits == official
    assert fold_cases(splits, 2, cases) == (cases[8:12], [c for c in cases if c not in cases[8:12]])


def test_fold_all_and_unknown_folds():
    cases = ["b", "a", "c"]
    splits = make_splits(cases)
    assert fold_cases(splits, "all", cases) == (["a", "b", "c"], ["a", "b", "c"])
    assert fold_cases(splits, "1", cases) == (splits[1]["train"], splits[1]["val"])
    with pytest.raises(CovtransferError, match=r"unknown fold 3: splits.json has folds 0\.\.2"):
        fold_cases(splits, 3, cases)
    with pytest.raises(CovtransferError, match="unknown fold 'x'.*'all'"):
        fold_cases(splits, "x", cases)


def test_broken_splits_files_are_refused(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text("{not json")
    with pytest.raises(CovtransferError, match="splits.json: not valid JSON"):
        load_or_create_splits(tmp_path, ["a", "b"])
    path.write_text(json.dumps({"train": ["a"]}))
    with pytest.raises(CovtransferError, match="expected a list"):
        load_or_create_splits(tmp_path, ["a", "b"])
    path.write_text(json.dumps([{"train": ["a"], "val": ["zz"]}]))
    with pytest.raises(CovtransferError, match="not preprocessed: zz"):
        load_or_create_splits(tmp_path, ["a", "b"])


def test_training_uses_the_dataset_splits_file(roots, tmp_path):
    preprocessed = tmp_path / "preprocessed"
    shutil.copytree(roots.preprocessed / DATASET, preprocessed / DATASET)
    one_fold = [{"train": ["blob_tr000", "blob_tr001"], "val": ["blob_tr002"]}]
    (preprocessed / DATASET / "splits.json").write_text(json.dumps(one_fold))
    copy = Roots(roots.raw, preprocessed, tmp_path / "results")
    with pytest.raises(CovtransferError, match=r"splits.json has folds 0\.\.0"):
        train([1], make_strategy("scratch"), 1, copy, settings())
    assert json.loads((preprocessed / DATASET / "splits.json").read_text()) == one_fold
    assert not copy.results.exists()
