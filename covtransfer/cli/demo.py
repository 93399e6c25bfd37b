"""``covtransfer_demo``: the transfer study end to end on synthetic chest CTs (minutes on a CPU)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from covtransfer.cli.common import run_cli
from covtransfer.experiments.demo import print_demo_summary, run_demo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covtransfer_demo", description=__doc__)
    parser.add_argument("-o", "--output", default="covtransfer_demo",
                        help="folder for the demo's data, models and study outputs (default ./covtransfer_demo); "
                             "a rerun resumes and skips finished steps")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default); on a GPU the demo runs larger")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and training (default 0)")
    args = parser.parse_args(argv)
    rows, folder, seconds = run_demo(args.output, args.device, args.seed)
    print_demo_summary(rows, folder, seconds)
    return 0


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
