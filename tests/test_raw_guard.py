"""No command writes into a raw dataset folder: evaluate, determine_postprocessing, predict, study, demo and
plan_and_preprocess refuse such an output through their entry points with one line, exit 1 and nothing written."""

from pathlib import Path

import pytest

from covtransfer.cli import demo, determine_postprocessing, evaluate, plan_and_preprocess, predict, study, train
from covtransfer.cli.common import run_cli
from covtransfer.data.raw_guard import raw_dataset_containing
from cli_checks import refusal
from tiny_data import preprocessed_roots, write_raw_dataset


@pytest.fixture
def raw(tmp_path):
    """A raw root with one dataset of 2 training and 2 test cases; returns (root, dataset folder)."""
    root = tmp_path / "raw"
    return root, write_raw_dataset(root, 1, "Blobs", 2, 2, shape=(4, 8, 8))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*"))


def test_evaluate_refuses_references_scored_against_themselves(raw, capsys):
    root, dataset = raw
    before = _files(dataset)
    labels = str(dataset / "labelsTs")
    refusal(evaluate.main, ["-r", labels, "-p", labels], capsys, "labelsTs", "-p", "-r")
    refusal(determine_postprocessing.main, ["-r", labels, "-p", labels], capsys, "labelsTs", "-p", "-r")
    assert _files(dataset) == before


def test_summary_is_never_written_into_a_raw_dataset(raw, tmp_path, capsys):
    root, dataset = raw
    copy = tmp_path / "copy"  # predictions identical to the references, kept outside the dataset
    copy.mkdir()
    for path in (dataset / "labelsTs").iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    before = _files(dataset)
    # -p inside the raw dataset and no -o: the default place beside the predictions is refused
    line = refusal(evaluate.main, ["-r", str(copy), "-p", str(dataset / "labelsTs")], capsys,
                   "summary.json", str(dataset), "-o")
    assert "raw dataset" in line
    for where in (dataset / "labelsTr" / "s.json", dataset / "s.json", dataset / "new" / "s.json"):
        refusal(evaluate.main, ["-r", str(dataset / "labelsTs"), "-p", str(copy), "-o", str(where)], capsys,
                str(where), "raw dataset")
        refusal(determine_postprocessing.main, ["-r", str(dataset / "labelsTs"), "-p", str(copy), "-o", str(where)],
                capsys, str(where), "raw dataset")
    assert _files(dataset) == before
    # outside the dataset it is written as before
    assert run_cli(evaluate.main, ["-r", str(dataset / "labelsTs"), "-p", str(copy)]) == 0
    assert (copy / "summary.json").is_file() and (copy / "summary.csv").is_file()


def test_outputs_of_predict_study_demo_and_preprocessing_refused_inside_raw(raw, tmp_path, capsys):
    root, dataset = raw
    before = _files(tmp_path)
    inside = str(dataset / "predictions")
    roots = ["--raw", str(root), "--results", str(tmp_path / "results")]
    refusal(predict.main, ["-i", str(dataset / "imagesTs"), "-o", inside, "-d", "1", "-t", "scratch", *roots],
            capsys, inside, "raw dataset")
    refusal(study.main, ["--target", "1", "--sources", "1", "-o", inside, *roots], capsys, inside)
    refusal(demo.main, ["-o", str(dataset / "imagesTr")], capsys, "imagesTr", "raw dataset")
    refusal(plan_and_preprocess.main, ["-d", "1", "--raw", str(root), "--preprocessed", str(root)], capsys,
            str(dataset), "--preprocessed")
    assert _files(tmp_path) == before


def test_what_counts_as_a_raw_dataset_folder(raw, tmp_path):
    root, dataset = raw
    assert raw_dataset_containing(dataset / "labelsTs" / "x.json", root) == dataset.resolve()
    bare = root / "Dataset002_Bare"  # under the raw root, even before it holds a dataset.json
    bare.mkdir()
    assert raw_dataset_containing(bare / "out", root) == bare.resolve()
    assert raw_dataset_containing(root / "Dataset004_New" / "out", root) == (root / "Dataset004_New").resolve()
    elsewhere = write_raw_dataset(tmp_path / "other", 3, "Moved", 1, shape=(4, 8, 8))  # recognised by its layout
    assert raw_dataset_containing(elsewhere / "imagesTr", root) == elsewhere.resolve()
    assert raw_dataset_containing(root / "predictions", root) is None
    assert raw_dataset_containing(tmp_path / "results" / "Dataset001_Blobs", root) is None


def test_training_results_are_never_written_into_a_raw_dataset(tmp_path, capsys):
    roots = preprocessed_roots(tmp_path, {1: ("Blob", 2, 0)})
    before = _files(roots.raw)
    refusal(train.main, ["-d", "1", "-f", "all", "--preprocessed", str(roots.preprocessed), "--raw", str(roots.raw),
                         "--results", str(roots.raw)], capsys, "Dataset001_Blob", "--results")
    assert _files(roots.raw) == before
