"""``covtransfer_predict --statistics``: the burden statistics of each case, measured as it is written.

The predictor hands the label map in memory, so each CT is read once, for the statistics and (with ``--overlays``)
for the overlay titled with its PO and PHO. Cases that ``--continue`` skips are measured from their files at the end,
when ``statistics.csv`` is written for every case.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from covtransfer.data.image_io import read_image
from covtransfer.errors import CovtransferError
from covtransfer.evaluation.quantify import STATISTICS_CSV, measure, quantify_case, record_case, \
    write_statistics_csv
from covtransfer.inference.case_result import CaseResult
from covtransfer.inference.inputs import InputCase
from covtransfer.inference.overlays import burden_title, save_overlay


class StatisticsWriter:
    """The predictor's writer of ``<case>.statistics.json`` (and, with ``overlays``, ``<case>_overlay.png``)."""

    def __init__(self, labels: dict[str, int], overlays: bool):
        self.labels = labels
        self.overlays = overlays
        self.rows: dict[str, dict] = {}

    def __call__(self, result: CaseResult, output_folder: Path, case: InputCase) -> None:
        image, geometry = read_image(case.images[0])
        segmentation = output_folder / case.output_name()
        try:
            stats = measure(image, geometry, result.segmentation, self.labels, None, str(segmentation))
            row = record_case(output_folder, case.case_id, case.images[0], segmentation, stats)
        except CovtransferError as exc:
            row = {"case": case.case_id, "error": str(exc)}
            print(f"warning: no statistics: {exc}", file=sys.stderr)
        self.rows[case.case_id] = row
        if self.overlays:
            save_overlay(output_folder / f"{case.case_id}_overlay.png", image, result.segmentation, geometry.spacing,
                         burden_title(case.case_id, row))

    def finish(self, cases: Sequence[InputCase], output_folder: Path) -> list[dict]:
        """``statistics.csv`` of every case in input order, measuring from their files the cases not predicted
        now; returns its rows."""
        rows = []
        for case in cases:
            row = self.rows.get(case.case_id)
            if row is None:
                row, problem = quantify_case(case.case_id, case.images[0], output_folder / case.output_name(),
                                             output_folder, self.labels)
                if problem:
                    print(f"warning: no statistics: {problem}", file=sys.stderr)
            rows.append(row)
        write_statistics_csv(output_folder / STATISTICS_CSV, rows)
        return rows
