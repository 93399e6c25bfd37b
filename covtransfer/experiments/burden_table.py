"""The study's disease-burden table: per test case, the percentage of opacity (PO) of each strategy's prediction
against the reference's PO, and the mean absolute PO error per strategy, in ``burden.csv``, ``results.md`` and
``report.html``. PO comes from :func:`covtransfer.evaluation.burden.case_statistics` (the dataset's lung labels when
the label map has them, else lungs from HU); a case without lung has no PO and is left out of the error."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from covtransfer.data.dataset_json import load_dataset_json
from covtransfer.data.geometry import Geometry
from covtransfer.data.image_io import read_image
from covtransfer.errors import CovtransferError
from covtransfer.evaluation.burden import case_statistics, lung_label_values
from covtransfer.experiments.markdown import markdown_table
from covtransfer.experiments.report import write_csv
from covtransfer.experiments.report_figures import case_files, read_prediction
from covtransfer.experiments.verdict import run_label

BURDEN_FILE = "burden.csv"


def _po(image: np.ndarray, segmentation: np.ndarray, geometry: Geometry, labels: dict[str, int]) -> float | None:
    try:
        return case_statistics(image, segmentation, geometry, labels, lung_label_values(labels))["total"]["po"]
    except CovtransferError:
        return None


def burden_rows(folder: Path, rows: list[dict], raw: Path) -> list[dict]:
    """Per (fold, test case): the reference PO and each strategy's predicted PO (None where there is none)."""
    labels = load_dataset_json(raw).labels
    table = []
    for fold, case in dict.fromkeys((c["fold"], c["case"]) for row in rows for c in row["per_case"]):
        files = case_files(raw, case)
        if files is None:
            continue
        image, geometry = read_image(files[0])
        entry = {"fold": fold, "case": case, "reference": _po(image, read_image(files[1])[0], geometry, labels)}
        for row in rows:
            prediction = read_prediction(folder, row, fold, case)
            entry[run_label(row)] = None if prediction is None else _po(image, prediction, geometry, labels)
        table.append(entry)
    return table


def mean_absolute_error(table: list[dict], name: str) -> float:
    """The mean |predicted - reference| PO of one strategy over the cases where both exist (NaN when none)."""
    errors = [abs(e[name] - e["reference"]) for e in table if e.get(name) is not None and e["reference"] is not None]
    return float(np.mean(errors)) if errors else float("nan")


def _cell(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"


def write_burden(folder: Path, rows: list[dict], raw: Path) -> str:
    """Write ``burden.csv`` and return the Markdown section: PO per case and strategy, then the error per strategy."""
    table = burden_rows(folder, rows, raw)
    names = [run_label(row) for row in rows]
    write_csv(folder / BURDEN_FILE, [{k: "n/a" if v is None else v for k, v in e.items()} for e in table],
              ["fold", "case", "reference"] + names)
    cases = markdown_table(["fold", "case", "reference PO %"] + [f"{n} PO %" for n in names],
                           [[str(e["fold"]), e["case"], _cell(e["reference"])] + [_cell(e.get(n)) for n in names]
                            for e in table])
    errors = markdown_table(["strategy", "mean absolute PO error, points"],
                            [[n, _cell(mean_absolute_error(table, n))] for n in names])
    return ("## Disease burden: percentage of opacity\n\nPO = 100 × lesion volume / lung volume per test case "
            "(lungs from the label map's lung labels, else from HU), the reference's against each strategy's "
            f"prediction.\n\n{cases}\n\n{errors}\n")


def burden_error_line(folder: Path) -> str:
    """One line for the demo's summary: the mean absolute PO error per strategy, from ``folder/burden.csv``."""
    with open(folder / BURDEN_FILE, newline="") as handle:
        table = [{k: None if v == "n/a" else (v if k in ("fold", "case") else float(v)) for k, v in row.items()}
                 for row in csv.DictReader(handle)]
    names = [k for k in (table[0] if table else {}) if k not in ("fold", "case", "reference")]
    return "mean absolute PO error (burden), points: " + ", ".join(
        f"{name} {_cell(mean_absolute_error(table, name))}" for name in names)
