"""The CPU demo's study for one seed with some of its scale changed: how documentation/study.md measured what
each lever does to the strategies' test DSC (more source cases, a longer pre-training, a wider network, fewer
strategies).

Everything not named keeps the ``cpu`` scale's value (``covtransfer.experiments.demo.CPU_SCALE``). The study lands in
``OUTPUT/seed_N/study/`` like the demo's, and the tables are printed at the end. ``--base-features`` /
``--max-features`` widen the network of the ``cpu-small`` planning preset for this run; the jobs then run in this
process, one after another, because the launcher's job processes would plan with the unchanged preset.

Usage: ``python benchmarks/demo_variants.py -o OUT --seed 1 --strategies finetune --pretrain-epochs 80``
(one thread per run: ``OMP_NUM_THREADS=1``, to run two variants side by side on two cores).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from covtransfer.experiments.demo import CPU_SCALE, print_demo_summary, run_demo
from covtransfer.experiments.spec import DEFAULT_STRATEGIES
from covtransfer.planning import planner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", nargs="+", default=list(DEFAULT_STRATEGIES))
    parser.add_argument("--source-cases", type=int, default=CPU_SCALE.n_source_cases)
    parser.add_argument("--pretrain-epochs", type=int, default=CPU_SCALE.pretrain_epochs)
    parser.add_argument("--epochs", type=int, default=CPU_SCALE.epochs)
    parser.add_argument("--base-features", type=int, help="features of the first stage (cpu-small: 8)")
    parser.add_argument("--max-features", type=int, help="features of the deepest stages (cpu-small: 64)")
    parser.add_argument("--parallel", type=int, default=None, help="jobs at a time (default: the demo's)")
    args = parser.parse_args()

    parallel = args.parallel
    widths = {k: v for k, v in (("base_features", args.base_features), ("max_features", args.max_features)) if v}
    if widths:
        if parallel not in (None, 1):
            parser.error("--base-features/--max-features run the jobs in this process: leave --parallel at 1")
        planner.PRESETS[CPU_SCALE.preset] = dataclasses.replace(planner.PRESETS[CPU_SCALE.preset], **widths)
        parallel = 1
    scale = dataclasses.replace(CPU_SCALE, n_source_cases=args.source_cases, pretrain_epochs=args.pretrain_epochs,
                                epochs=args.epochs)
    result = run_demo(args.output, torch.device("cpu"), args.seed, scale, strategies=args.strategies,
                      parallel=parallel)
    print_demo_summary(result)


if __name__ == "__main__":
    main()
