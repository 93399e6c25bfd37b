"""The HU lung extraction on synthetic phantoms with known lungs: worst lung volume, PO and PHO errors per size.

Each case is measured given its true lesion mask (``covtransfer.evaluation.burden_accuracy.phantom_errors``); the
targets are a lung volume within 5 % of each true lung and PO and PHO within 0.5 points, on every case.

Usage: ``python benchmarks/burden_accuracy.py [--sizes small tiny] [--cases 10] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from covtransfer.datasets.synthetic import KINDS  # noqa: E402
from covtransfer.evaluation.burden_accuracy import phantom_errors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "tiny"])
    parser.add_argument("--cases", type=int, default=10, help="cases per kind and size (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| phantoms | cases | worst lung volume error | worst PO error | worst PHO error |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        worst = {"volume_percent": 0.0, "po": 0.0, "pho": 0.0}
        for kind in KINDS:
            for index in range(args.cases):
                errors = phantom_errors(kind, size, args.seed, index)
                for side in ("right", "left"):
                    for key in worst:
                        if abs(errors[side][key]) > abs(worst[key]):
                            worst[key] = errors[side][key]
        print(f"| `{size}`, {', '.join(KINDS)} | {args.cases * len(KINDS)} ({2 * args.cases * len(KINDS)} lungs) | "
              f"{worst['volume_percent']:+.2f} % | {worst['po']:+.3f} points | {worst['pho']:+.3f} points |",
              flush=True)


if __name__ == "__main__":
    main()
