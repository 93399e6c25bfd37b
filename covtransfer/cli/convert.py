"""``covtransfer_convert``: turn a public lung-lesion dataset into a raw nnU-Net v2 dataset, with official splits."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from covtransfer.cli.common import roots_from_args, run_cli
from covtransfer.datasets.converters import LABEL_SETS, SOURCES, convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="covtransfer_convert",
        description="Convert COVID-19-CT-Seg, MSD Task06_Lung, StructSeg Lung_GTV or NSCLC pleural effusion "
                    "into RAW/DatasetNNN_Name (imagesTr, labelsTr, dataset.json, splits.json). "
                    "See documentation/data-conversion.md for the expected input layouts.")
    parser.add_argument("source", choices=sorted(SOURCES), help="which public dataset the input folder holds")
    parser.add_argument("-i", "--input", required=True, help="the downloaded (unpacked) dataset folder")
    parser.add_argument("-d", "--dataset-id", required=True, type=int, help="numeric id of the new dataset (0-999)")
    parser.add_argument("--name", help="dataset name (default: COVID19CTSeg, MSDLung, StructSegGTV, NSCLCEffusion)")
    parser.add_argument("--labels", choices=LABEL_SETS, default=None,
                        help="covid19ctseg only: 'infection' (default; 0 background, 1 infection) or "
                             "'lung-infection' (1 left lung, 2 right lung, 3 infection)")
    parser.add_argument("--raw", help="raw datasets root ($COVTRANSFER_RAW, default ./covtransfer_data/raw)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = convert(args.source, args.input, args.dataset_id, name=args.name, raw_root=roots_from_args(args).raw,
                     labels=args.labels or "infection", overwrite=args.overwrite, progress=True)
    print(report.summary())
    return 0


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
