"""``covtransfer_quantify``: disease burden (lung and lesion volumes, PO, PHO, grades) of existing segmentations."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from covtransfer.cli.common import run_cli
from covtransfer.evaluation.quantify import (STATISTICS_CSV, STATISTICS_SUFFIX, quantify_cases, segmentation_labels,
                                             segmentation_pairs)
from covtransfer.inference.inputs import discover_cases


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="covtransfer_quantify",
        description="Per-case burden statistics of segmentations on their CT: volume of each label, lung and lesion "
                    "volume per lung, percentage of opacity (PO) and of high opacity (PHO, lesion >= -200 HU) per "
                    "lung and in total, lesion count and mean HU, and a per-lung grade 0-4. The lungs are the "
                    "segmentation's lung labels when it has any, else extracted from the HU values.")
    parser.add_argument("-i", "--images", required=True,
                        help="the CT images: any input covtransfer_predict takes (a folder of <case>_0000 files or "
                             "plain images, a raw dataset folder, DICOM series)")
    parser.add_argument("-s", "--segmentations", required=True,
                        help="folder of label maps named <case>.<ending>, on the images' grids")
    parser.add_argument("-o", "--output", required=True,
                        help=f"output folder for <case>{STATISTICS_SUFFIX} and {STATISTICS_CSV} (not a raw dataset "
                             "folder; it may be the segmentation folder)")
    parser.add_argument("--lung-labels", type=int, nargs="+",
                        help="label values that are lung (default: labels whose name in a dataset.json beside the "
                             "segmentations contains 'lung'; without one, every label is lesion)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    images = {case.case_id: case.images[0] for case in discover_cases(args.images)}
    rows, problems = quantify_cases(segmentation_pairs(images, args.segmentations), args.output,
                                    segmentation_labels(args.segmentations), args.lung_labels)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"statistics of {len(rows) - len(problems)} of {len(rows)} case(s) written to {args.output}")
    return 1 if problems else 0


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
