"""The study's disease-burden table: predicted against reference PO per test case and the error per strategy."""

import csv

import numpy as np
import pytest

from covtransfer.data.image_io import read_image, write_image
from covtransfer.datasets.synthetic import make_synthetic_dataset
from covtransfer.experiments.burden_table import (BURDEN_FILE, burden_error_line, burden_rows, mean_absolute_error,
                                                 write_burden)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A raw dataset of two tiny phantoms with lung labels in labelsTs, and a study folder with two strategies'
    predictions: scratch predicts the reference exactly, finetune predicts no lesion at all."""
    root = tmp_path_factory.mktemp("study")
    raw = make_synthetic_dataset("covid", 41, 1, n_test=2, raw_root=root / "raw", size="tiny", with_lungs=True)
    rows = []
    for strategy in ("scratch", "finetune"):
        per_case = []
        for case in ("covid_001", "covid_002"):
            label, geometry = read_image(raw / "labelsTs" / f"{case}.nii.gz")
            prediction = label if strategy == "scratch" else np.where(label == 2, 1, label).astype(np.uint8)
            write_image(root / "out" / "predictions" / strategy / "fold_0" / f"{case}.nii.gz", prediction, geometry)
            per_case += [{"fold": 0, "case": case, "label": 1}, {"fold": 0, "case": case, "label": 2}]
        rows.append({"pretraining": "none", "strategy": strategy, "per_case": per_case})
    return raw, root / "out", rows


def test_po_per_case_and_the_error_per_strategy(study):
    raw, folder, rows = study
    table = burden_rows(folder, rows, raw)
    assert [(e["fold"], e["case"]) for e in table] == [(0, "covid_001"), (0, "covid_002")]
    for entry in table:
        label, _ = read_image(raw / "labelsTs" / f"{entry['case']}.nii.gz")
        assert entry["reference"] == pytest.approx(100 * (label == 2).sum() / (label >= 1).sum())
        assert entry["scratch"] == entry["reference"] and entry["finetune"] == 0
    assert mean_absolute_error(table, "scratch") == 0
    assert mean_absolute_error(table, "finetune") == pytest.approx(np.mean([e["reference"] for e in table]))


def test_burden_csv_and_markdown(study):
    raw, folder, rows = study
    text = write_burden(folder, rows, raw)
    with open(folder / BURDEN_FILE, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [row["case"] for row in written] == ["covid_001", "covid_002"]
    assert list(written[0]) == ["fold", "case", "reference", "scratch", "finetune"]
    error = mean_absolute_error(burden_rows(folder, rows, raw), "finetune")
    assert "| scratch | 0.00 |" in text and f"| finetune | {error:.2f} |" in text
    assert text.startswith("## Disease burden")
    assert burden_error_line(folder) == f"mean absolute PO error (burden), points: scratch 0.00, finetune {error:.2f}"
