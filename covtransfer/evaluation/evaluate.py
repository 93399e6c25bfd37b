"""Evaluate a folder of predicted label maps against a folder of references: per-case metrics and their summary.

Files pair by case name (the file name without its image ending, so ``a.nii.gz`` pairs with ``a.nrrd``); every file
must have a partner. Each pair must share shape, spacing, origin and direction. Labels default to the foreground
labels of a ``dataset.json`` in the reference folder or its parent (the raw layout ``labelsTr/../dataset.json``),
else to every positive value found in the references.

The summary (``summary.json`` plus ``summary.csv`` with one row per case and label) holds per label the mean, standard
deviation (population, ddof = 0) and median of every metric over cases, ignoring NaN, the mean over labels of those
means (``foreground_mean``), and how many cases had an empty reference or prediction. JSON has no NaN: undefined
values are written as ``null`` (and as empty cells in the CSV).
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from covtransfer.atomic import atomic_path, write_json
from covtransfer.data.dataset_json import load_dataset_json
from covtransfer.data.image_io import SUPPORTED_ENDINGS, file_ending, read_image, refuse_dangling_link
from covtransfer.errors import CovtransferError
from covtransfer.evaluation.metrics import METRIC_NAMES, case_metrics, empty_label_row

ROW_KEYS = ("case", "label") + METRIC_NAMES + ("n_ref", "n_pred")
_SHOWN = 5  # file names listed in an error message


def list_images(folder: str | os.PathLike) -> dict[str, Path]:
    """Case name -> image file of every readable-looking image in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CovtransferError(f"{folder}: folder not found")
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        refuse_dangling_link(path)
        ending = file_ending(path)
        if not path.is_file() or ending not in SUPPORTED_ENDINGS or path.name.startswith("."):
            continue
        case = path.name[:-len(ending)]
        if case in images:
            raise CovtransferError(f"{folder}: two files for case {case!r}: {images[case].name}, {path.name}")
        images[case] = path
    return images


def _names(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:_SHOWN])
    return shown + (f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else "")


def pair_files(ref_folder: str | os.PathLike, pred_folder: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """``(case, reference, prediction)`` for every case, sorted; unmatched file names are an error."""
    refs, preds = list_images(ref_folder), list_images(pred_folder)
    if not refs:
        raise CovtransferError(f"{ref_folder}: no reference images found (endings {', '.join(SUPPORTED_ENDINGS)})")
    missing = [refs[c] for c in sorted(set(refs) - set(preds))]
    extra = [preds[c] for c in sorted(set(preds) - set(refs))]
    if missing or extra:
        parts = ([f"references without prediction in {pred_folder}: {_names(missing)}"] if missing else []) + \
                ([f"predictions without reference in {ref_folder}: {_names(extra)}"] if extra else [])
        raise CovtransferError("unmatched file names: " + "; ".join(parts))
    return [(case, refs[case], preds[case]) for case in sorted(refs)]


def as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    """The label map as integers; an error naming ``path`` when it holds non-integer values."""
    if array.dtype.kind in "iub":
        return array
    rounded = np.rint(array)
    if not np.array_equal(rounded, array):
        raise CovtransferError(f"{path}: not a label map (non-integer voxel values)")
    return rounded.astype(np.int32)


def read_pair(ref_path: Path, pred_path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Both label maps and the spacing (z, y, x); an error names both files when their grids differ."""
    ref, ref_geometry = read_image(ref_path)
    pred, pred_geometry = read_image(pred_path)
    if ref.shape != pred.shape:
        raise CovtransferError(f"{pred_path}: shape {pred.shape} differs from reference {ref_path} {ref.shape}")
    fields = ref_geometry.mismatches(pred_geometry)
    if fields:
        detail = ", ".join(f"{f} {getattr(pred_geometry, f)} vs {getattr(ref_geometry, f)}" for f in fields)
        raise CovtransferError(f"{pred_path}: {', '.join(fields)} differ(s) from reference {ref_path} ({detail})")
    return as_labels(ref, ref_path), as_labels(pred, pred_path), tuple(ref_geometry.spacing)


def present_labels(array: np.ndarray) -> set[int]:
    """The positive values of a label map."""
    values = array[array > 0]
    if values.size == 0:
        return set()
    low, high = int(values.min()), int(values.max())
    if high - low < 64:
        return {v for v in range(low, high + 1) if np.any(values == v)}
    return {int(v) for v in np.unique(values)}


def dataset_labels(ref_folder: str | os.PathLike) -> list[int] | None:
    """Foreground labels of a ``dataset.json`` in ``ref_folder`` or its parent; None when there is none."""
    for folder in (Path(ref_folder), Path(ref_folder).parent):
        if (folder / "dataset.json").is_file():
            return load_dataset_json(folder).foreground_labels
    return None


def check_labels(labels: Sequence[int]) -> list[int]:
    """The labels as a list of distinct positive ints; an error otherwise."""
    checked = [int(v) for v in labels]
    if not checked or any(v <= 0 for v in checked) or len(set(checked)) != len(checked):
        raise CovtransferError(f"labels must be distinct positive integers, got {list(labels)}")
    return checked


def evaluate_case(case: str, ref_path: Path, pred_path: Path, labels: list[int] | None,
                  tolerance_mm: float) -> tuple[list[dict], set[int], int]:
    """Rows of one case (for ``labels``, or for every label present when None), its reference labels, its size."""
    ref, pred, spacing = read_pair(ref_path, pred_path)
    ref_present = present_labels(ref)
    chosen = labels if labels is not None else sorted(ref_present | present_labels(pred))
    rows = [{"case": case, **row} for row in case_metrics(ref, pred, spacing, chosen, tolerance_mm)]
    return rows, ref_present, int(ref.size)


def map_cases(function, jobs: list[tuple], num_processes: int) -> list:
    """``function(*job)`` for every job, in order; in a pool of spawned processes when ``num_processes > 1``. A
    progress bar counts the cases on a terminal."""
    progress = dict(total=len(jobs), desc="scoring", unit="case", disable=None, leave=False)
    if num_processes <= 1 or len(jobs) <= 1:
        return [function(*job) for job in tqdm(jobs, **progress)]
    with ProcessPoolExecutor(min(num_processes, len(jobs)), mp_context=get_context("spawn")) as pool:
        return list(tqdm(pool.map(function, *zip(*jobs)), **progress))


def evaluate_folders(ref_folder: str | os.PathLike, pred_folder: str | os.PathLike, labels: Sequence[int] | None = None,
                     tolerance_mm: float = 3.0, output: str | os.PathLike | None = None,
                     num_processes: int = 1) -> dict:
    """Metrics of every prediction against its reference, summarised; written to ``output`` (+ ``.csv``) if given."""
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise CovtransferError(f"tolerance must be a non-negative number of mm, got {tolerance_mm}")
    pairs = pair_files(ref_folder, pred_folder)
    chosen = check_labels(labels) if labels is not None else dataset_labels(ref_folder)
    results = map_cases(evaluate_case, [(c, r, p, chosen, tolerance_mm) for c, r, p in pairs], num_processes)
    if chosen is None:
        chosen = sorted(set().union(*(present for _, present, _ in results)))
    if not chosen:
        raise CovtransferError(f"{ref_folder}: no foreground label in the references or dataset.json; pass labels")
    per_case = []
    for (case, _, _), (rows, _, size) in zip(pairs, results):
        by_label = {row["label"]: row for row in rows}
        per_case += [by_label.get(label) or {"case": case, **empty_label_row(label, size)} for label in chosen]
    summary = {"reference_folder": str(ref_folder), "prediction_folder": str(pred_folder),
               "tolerance_mm": float(tolerance_mm), **summarise(per_case, chosen), "per_case": per_case}
    if output is not None:
        write_summary(summary, output)
    return summary


def _value(v) -> float:
    return float("nan") if v is None else float(v)


def summarise(per_case: list[dict], labels: Sequence[int] | None = None) -> dict:
    """Per-label mean / std / median (NaN ignored), foreground mean and empty-case counts of per-case rows.

    Rows need ``label``, ``n_ref``, ``n_pred`` and the metric keys (``None`` counts as NaN, so rows read back from a
    summary JSON work). Label keys in the result are strings, as JSON needs.
    """
    labels = sorted({int(row["label"]) for row in per_case}) if labels is None else list(labels)
    stats: dict[str, dict] = {"mean": {}, "std": {}, "median": {}}
    empty_ref, empty_pred = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, which is what we want
        for label in labels:
            rows = [row for row in per_case if int(row["label"]) == label]
            for name, function in (("mean", np.nanmean), ("std", np.nanstd), ("median", np.nanmedian)):
                stats[name][str(label)] = {m: float(function([_value(r[m]) for r in rows])) if rows else float("nan")
                                           for m in METRIC_NAMES}
            empty_ref[str(label)] = sum(1 for r in rows if r["n_ref"] == 0)
            empty_pred[str(label)] = sum(1 for r in rows if r["n_pred"] == 0)
        foreground = {m: float(np.nanmean([stats["mean"][str(label)][m] for label in labels])) if labels
                      else float("nan") for m in METRIC_NAMES}
    return {"labels": labels, "num_cases": len({row["case"] for row in per_case if "case" in row}),
            **stats, "foreground_mean": foreground, "empty_reference": empty_ref, "empty_prediction": empty_pred}


def json_safe(obj):
    """``obj`` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_summary(summary: dict, output: str | os.PathLike) -> None:
    """Write ``summary`` as JSON to ``output`` and its per-case rows as CSV beside it (same name, ``.csv``)."""
    output = Path(output)
    write_json(output, json_safe(summary))
    with atomic_path(output.with_suffix(".csv")) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(ROW_KEYS)
            for row in json_safe(summary["per_case"]):
                writer.writerow(["" if row[k] is None else row[k] for k in ROW_KEYS])


def _cell(mean, std, percent: bool) -> str:
    mean, std = _value(mean), _value(std)
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if percent else f"{mean:.2f} ± {std:.2f}"


def format_table(summary: dict) -> str:
    """A small text table: per label, the mean ± SD of DSC, NSD, HD95, sensitivity, precision and MCC."""
    tolerance = summary.get("tolerance_mm")
    nsd_title = f"NSD@{tolerance:g}mm %" if tolerance is not None else "NSD %"
    columns = [("dice", "DSC %", True), ("nsd", nsd_title, True), ("hd95", "HD95 mm", False),
               ("sensitivity", "sens %", True), ("precision", "prec %", True), ("mcc", "MCC", False)]
    header = ["label", "cases", "empty ref/pred"] + [title for _, title, _ in columns]
    lines = []
    for label in summary["labels"]:
        key = str(label)
        empty = f"{summary['empty_reference'][key]}/{summary['empty_prediction'][key]}"
        lines.append([key, str(summary["num_cases"]), empty] +
                     [_cell(summary["mean"][key][m], summary["std"][key][m], pct) for m, _, pct in columns])
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header] + lines)
