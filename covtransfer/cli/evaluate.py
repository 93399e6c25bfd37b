"""``covtransfer_evaluate``: score a folder of predictions against a folder of references and print a summary."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from covtransfer.cli.common import run_cli
from covtransfer.data.raw_guard import summary_output
from covtransfer.evaluation.evaluate import evaluate_folders, format_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="covtransfer_evaluate",
        description="Per-case DSC, NSD, HD95, sensitivity, precision, specificity, accuracy and MCC of predicted "
                    "label maps against references (files paired by name), with a per-label summary.")
    parser.add_argument("-r", "--ref", required=True, help="folder of reference label maps")
    parser.add_argument("-p", "--pred", required=True, help="folder of predicted label maps")
    parser.add_argument("--labels", type=int, nargs="+",
                        help="labels to score (default: dataset.json of the reference folder or its parent, "
                             "else every label in the references)")
    parser.add_argument("--tolerance-mm", type=float, default=3.0, help="NSD tolerance in mm (default 3)")
    parser.add_argument("-o", "--output", help="summary JSON path (default PRED/summary.json, CSV beside it; never "
                                               "inside a raw dataset folder)")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="cases evaluated in parallel")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = summary_output(args.ref, args.pred, args.output, "summary.json")
    summary = evaluate_folders(args.ref, args.pred, args.labels, args.tolerance_mm, output, args.num_processes)
    print(format_table(summary))
    print(f"summary written to {output} and {output.with_suffix('.csv')}")
    return 0


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
