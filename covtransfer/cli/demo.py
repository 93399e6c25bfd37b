"""``covtransfer_demo``: the transfer study end to end on synthetic chest CTs (minutes on a CPU)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from covtransfer.cli.common import add_device_argument, help_description, run_cli
from covtransfer.data.raw_guard import refuse_raw_dataset
from covtransfer.devices import resolve_device
from covtransfer.experiments.demo import SCALES, print_demo_summary, run_demo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covtransfer_demo", description=help_description(__doc__))
    parser.add_argument("-o", "--output", default="covtransfer_demo",
                        help="folder for the demo's data, models and study outputs (default ./covtransfer_demo); "
                             "a rerun resumes and skips finished steps")
    add_device_argument(parser, "on a GPU the demo runs at the gpu scale")
    parser.add_argument("--scale", default="auto",
                        help=f"auto, {', '.join(SCALES)} (default auto: gpu on a CUDA device, else cpu); cpu: "
                             "51–54 minutes on 2 cores; "
                             "gpu: epochs of 250 iterations, 3 seeds; smoke: tiny data and a few iterations, "
                             "to check the pipeline in 1-2 minutes on 2 cores (learns nothing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and training (default 0)")
    parser.add_argument("--seeds", type=int, metavar="K",
                        help="run seeds SEED..SEED+K-1 and report mean ± sd across them (default: 3 at the gpu "
                             "scale, else 1)")
    parser.add_argument("--strategies", help="comma-separated subset of scratch,continual,finetune,encoder,hybrid "
                                             "(default: all five)")
    parser.add_argument("--parallel", type=int, metavar="N",
                        help="jobs at a time, each its own process with its share of the cores, logs in "
                             "<output>/seed_N/study/logs (default: on a CPU one per core, at most 4; on a GPU 1); "
                             "1: every job in this process, one after another, with its training log on screen")
    args = parser.parse_args(argv)
    refuse_raw_dataset(args.output, "-o")
    device = resolve_device(args.device)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()] if args.strategies is not None else None
    result = run_demo(args.output, device, args.seed, args.scale, args.seeds, strategies, args.parallel)
    print_demo_summary(result)
    return 0


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
