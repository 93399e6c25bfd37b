"""Accuracy cost of ``covtransfer_predict --fast`` against the default prediction, on short trained models.

Uses the learning benchmark's synthetic ``covid`` dataset (4 training, 8 test cases, size ``small``; prepared by
``benchmarks/learning.py``'s :func:`prepare`), trains covtransfer ``scratch`` on fold ``all`` for each seed with a
short schedule (default 8 epochs × 25 iterations), predicts the test cases with the default settings (step 0.5, no
mirroring: the CPU default) and with ``--fast`` (step 1.0), and scores both with covtransfer's evaluator (DSC, NSD
at 3 mm). Writes ``fast_cost.json`` under ``--work`` and prints mean DSC/NSD per seed and their differences.

Usage: ``python benchmarks/fast_cost.py --work DIR --seeds 0 1 2 [--epochs 8 --iters-per-epoch 25]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from learning import Bench, prepare, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("fast_cost_benchmark"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iters-per-epoch", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1, help="threads per process (default 1)")
    args = parser.parse_args()
    args.val_iters, args.nnunet_venv = 2, None
    bench = Bench(args)
    prepare(bench, "covid", with_nnunet=False)
    dataset = bench.dataset_folder("covid")
    records = []
    for seed in args.seeds:
        tag = f"fastcost{seed}"
        model = ["-d", dataset.name, "-t", "scratch", "--tag", tag, "-f", "all"]
        if not (bench.roots.results / dataset.name / f"scratch__{tag}" / "fold_all" / "checkpoint_final.pt").is_file():
            bench.covtransfer("covtransfer_train", *model, "--epochs", str(args.epochs), "--iters-per-epoch",
                              str(args.iters_per_epoch), "--val-iters", "2", "--seed", str(seed), "--device", "cpu",
                              "--amp", "off", "--no-final-validation")
        record = {"seed": seed}
        for name, flags in (("default", ["--no-tta"]), ("fast", ["--fast"])):
            output = bench.work / "predictions" / f"{seed}_{name}"
            start = time.perf_counter()
            bench.covtransfer("covtransfer_predict", "-i", str(dataset / "imagesTs"), "-o", str(output), *model,
                              *flags, "--device", "cpu", "--quiet")
            seconds = time.perf_counter() - start
            cases = score(dataset / "labelsTs", output)
            record[name] = {"seconds": round(seconds, 1), "cases": cases,
                            "dice": statistics.mean(c["dice"] for c in cases.values()),
                            "nsd": statistics.mean(c["nsd"] for c in cases.values())}
        record["dice_cost"] = record["default"]["dice"] - record["fast"]["dice"]
        record["nsd_cost"] = record["default"]["nsd"] - record["fast"]["nsd"]
        records.append(record)
        print(json.dumps({k: v if not isinstance(v, dict) else {m: v[m] for m in ("seconds", "dice", "nsd")}
                          for k, v in record.items()}), flush=True)
        (bench.work / "fast_cost.json").write_text(json.dumps(records, indent=1) + "\n")
    for metric in ("dice", "nsd"):
        costs = [r[f"{metric}_cost"] for r in records]
        print(f"{metric}: default {statistics.mean(r['default'][metric] for r in records):.4f}, fast "
              f"{statistics.mean(r['fast'][metric] for r in records):.4f}, cost {statistics.mean(costs):+.4f} "
              f"(per seed {', '.join(f'{c:+.4f}' for c in costs)})")


if __name__ == "__main__":
    main()
