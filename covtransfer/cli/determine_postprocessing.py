"""``covtransfer_determine_postprocessing``: decide largest-component post-processing on validation predictions."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from covtransfer.cli.common import run_cli
from covtransfer.data.raw_guard import summary_output
from covtransfer.evaluation.postprocessing import POSTPROCESSING_FILE, determine_postprocessing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="covtransfer_determine_postprocessing",
        description="Try keeping only the largest connected component (of all foreground, then of each label) on "
                    "predictions with references; keep each step only if it improves Dice. Writes the rules as JSON.")
    parser.add_argument("-r", "--ref", required=True, help="folder of reference label maps")
    parser.add_argument("-p", "--pred", required=True, help="folder of (validation) predicted label maps")
    parser.add_argument("--labels", type=int, nargs="+",
                        help="labels to consider (default: as covtransfer_evaluate)")
    parser.add_argument("-o", "--output", help="rules JSON path (default PRED/postprocessing.json; never inside a "
                                               "raw dataset folder)")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="cases processed in parallel")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = summary_output(args.ref, args.pred, args.output, POSTPROCESSING_FILE)
    rules = determine_postprocessing(args.ref, args.pred, args.labels, output, args.num_processes)
    labels = ", ".join(str(v) for v in rules["largest_component_labels"]) or "none"
    print(f"largest component of all foreground: {'yes' if rules['largest_component_foreground'] else 'no'}; "
          f"per label: {labels}")
    print(f"mean foreground Dice {rules['dice_before']:.4f} -> {rules['dice_after']:.4f} "
          f"over {rules['num_cases']} cases; rules written to {output}")
    return 0


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
