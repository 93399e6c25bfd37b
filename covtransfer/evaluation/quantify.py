"""Burden statistics of a folder of segmentations against their CT images.

Per case ``<case>.statistics.json`` (see :mod:`~covtransfer.evaluation.burden`) and per folder ``statistics.csv``
with one row per case, both written atomically into the output folder. Segmentations pair with images by case id
(the callers find the images: ``covtransfer_quantify`` as ``covtransfer_predict`` finds its inputs). A case that cannot be
measured (no image, another grid, no lung) gets a row holding only its ``error``; the other cases are unaffected.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from covtransfer.atomic import atomic_path, write_json
from covtransfer.data.dataset_json import load_dataset_json
from covtransfer.data.geometry import Geometry
from covtransfer.data.image_io import read_image
from covtransfer.data.raw_guard import RAW_SUBFOLDERS, refuse_raw_dataset
from covtransfer.errors import CovtransferError
from covtransfer.evaluation.burden import CSV_COLUMNS, case_statistics, csv_row, lung_label_values
from covtransfer.evaluation.evaluate import as_labels, json_safe, list_images, present_labels

STATISTICS_CSV = "statistics.csv"
STATISTICS_SUFFIX = ".statistics.json"


def refuse_raw_folder(folder: str | os.PathLike) -> None:
    """Refuse an output folder inside a raw dataset (:mod:`covtransfer.data.raw_guard`), and any folder named like a
    raw dataset's image or label folder."""
    if Path(folder).resolve().name in RAW_SUBFOLDERS:
        raise CovtransferError(f"{folder}: named like a raw dataset folder's {Path(folder).resolve().name}; write the "
                               "statistics to another folder")
    refuse_raw_dataset(folder, "-o")


def segmentation_labels(folder: str | os.PathLike) -> dict[str, int] | None:
    """The labels of a ``dataset.json`` in the segmentation folder or its parent; None when there is none."""
    for candidate in (Path(folder), Path(folder).parent):
        if (candidate / "dataset.json").is_file():
            return load_dataset_json(candidate).labels
    return None


def measure(image: np.ndarray, geometry: Geometry, segmentation: np.ndarray, labels: dict[str, int] | None,
            lung_values: Sequence[int] | None, source: str) -> dict:
    """The statistics of a label map on its CT, both in memory; errors name ``source``.

    ``labels`` None names every value present ``label_<value>``; ``lung_values`` None takes the labels named lung.
    """
    if labels is None:
        labels = {f"label_{value}": value for value in sorted(present_labels(segmentation))}
    lungs = lung_label_values(labels) if lung_values is None else list(lung_values)
    return case_statistics(image, segmentation, geometry, {"background": 0, **labels}, lungs, source=source)


def measure_case(image_path: Path, segmentation_path: Path, labels: dict[str, int] | None,
                 lung_values: Sequence[int] | None) -> dict:
    """:func:`measure` of a segmentation file on its CT file; an error naming both files when their grids differ."""
    image, geometry = read_image(image_path)
    segmentation, seg_geometry = read_image(segmentation_path)
    fields = (["shape"] if segmentation.shape != image.shape else []) + geometry.mismatches(seg_geometry)
    if fields:
        raise CovtransferError(f"{segmentation_path}: {', '.join(fields)} differ(s) from the image {image_path}; "
                               "a segmentation must lie on its image's grid")
    segmentation = as_labels(segmentation, segmentation_path)
    return measure(image, geometry, segmentation, labels, lung_values, str(segmentation_path))


def record_case(output_folder: Path, case_id: str, image_path: Path, segmentation_path: Path, stats: dict) -> dict:
    """Write ``<case>.statistics.json`` (naming the CT and label map measured) atomically; returns the case's
    ``statistics.csv`` row."""
    record = {"case": case_id, "image": str(image_path), "segmentation": str(segmentation_path), **stats}
    write_json(output_folder / f"{case_id}{STATISTICS_SUFFIX}", json_safe(record))
    return csv_row(case_id, stats)


def quantify_case(case_id: str, image_path: Path | None, segmentation_path: Path, output_folder: Path,
                  labels: dict[str, int] | None = None,
                  lung_values: Sequence[int] | None = None) -> tuple[dict, str | None]:
    """Measure and record one case; returns its CSV row and, when it cannot be measured, the one-line problem
    (then the row holds only the ``error``)."""
    try:
        if image_path is None:
            raise CovtransferError(f"{segmentation_path}: no image of case {case_id!r} among the inputs")
        stats = measure_case(image_path, segmentation_path, labels, lung_values)
    except CovtransferError as exc:
        return {"case": case_id, "error": str(exc)}, str(exc)
    return record_case(output_folder, case_id, image_path, segmentation_path, stats), None


def _cell(value) -> object:
    """A CSV cell: None empty, floats to 1/1000 of their unit (mL, percent points, HU)."""
    if value is None:
        return ""
    return round(value, 3) if isinstance(value, float) else value


def write_statistics_csv(path: Path, rows: list[dict]) -> None:
    """``statistics.csv``: the fixed columns, one ``volume_ml_<label>`` column per label seen, then ``error``."""
    extra = sorted({key for row in rows for key in row} - set(CSV_COLUMNS) - {"error"})
    columns = list(CSV_COLUMNS) + extra + ["error"]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns, restval="")
            writer.writeheader()
            for row in json_safe(rows):
                writer.writerow({k: _cell(v) for k, v in row.items()})


def quantify_cases(pairs: Sequence[tuple[str, Path | None, Path]], output_folder: str | os.PathLike,
                   labels: dict[str, int] | None = None,
                   lung_values: Sequence[int] | None = None) -> tuple[list[dict], list[str]]:
    """Statistics of every ``(case, image or None, segmentation)``: per-case JSON and ``statistics.csv`` in
    ``output_folder``. Returns the CSV rows and the one-line problems of the cases that failed."""
    output_folder = Path(output_folder)
    refuse_raw_folder(output_folder)
    rows, problems = [], []
    for case_id, image_path, segmentation_path in pairs:
        row, problem = quantify_case(case_id, image_path, segmentation_path, output_folder, labels, lung_values)
        rows.append(row)
        problems += [problem] if problem else []
    write_statistics_csv(output_folder / STATISTICS_CSV, rows)
    return rows, problems


def segmentation_pairs(images: dict[str, Path], segmentation_folder: str | os.PathLike
                       ) -> list[tuple[str, Path | None, Path]]:
    """``(case, image or None, segmentation)`` of every segmentation in a folder, with its case's image from
    ``images`` (case id -> CT file)."""
    segmentations = list_images(segmentation_folder)
    if not segmentations:
        raise CovtransferError(f"{segmentation_folder}: no segmentation files found")
    return [(case, images.get(case), path) for case, path in sorted(segmentations.items())]
