"""``covtransfer_verify``: check a raw dataset and list every problem, one per line (exit 1), or print a summary."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from covtransfer.cli.common import add_root_arguments, roots_from_args, run_cli
from covtransfer.config import find_dataset
from covtransfer.data.verify import verify_dataset


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, verify the dataset, print the problems or the summary; 0 when the dataset is valid."""
    parser = argparse.ArgumentParser(prog="covtransfer_verify", description="Check a raw dataset: list every problem, "
                                     "one per line (exit 1), or print a one-line summary (exit 0).")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (1, 001) or folder name (Dataset001_Name)")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="cases read in parallel (default 1)")
    add_root_arguments(parser)
    args = parser.parse_args(argv)
    folder = find_dataset(roots_from_args(args).raw, args.dataset)
    report = verify_dataset(folder, num_processes=args.num_processes)
    if report.ok:
        print(report.summary)
        return 0
    for problem in report.problems:
        print(problem)
    print(f"{len(report.problems)} problem(s) in {folder}", file=sys.stderr)
    return 1


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
