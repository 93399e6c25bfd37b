"""Burden error of a trained lung-and-lesion model: predicted PO and PHO against the reference, beside the DSC.

Writes a synthetic COVID dataset with lung labels (4 training, 8 test cases, ``--labels lung-lesion``), plans it with
the CPU demo's ``cpu-small`` preset, trains ``scratch`` on every training case with the CPU demo's schedule (160 epochs
of 25 iterations, fp32), predicts the test cases with ``--statistics`` (the model's own lungs), and compares each
case's PO and PHO with those of the reference label maps (``covtransfer_quantify``); the DSC of both labels comes
from ``covtransfer_evaluate``. Everything goes through the commands, as a user would run them.

Usage: ``python benchmarks/burden_model.py [--work burden_model] [--seed 0] [--epochs 160] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATASET_ID = 905


def command(work: Path, name: str, *args: str) -> None:
    """Run a covtransfer command of this environment with the benchmark's data roots."""
    env = dict(os.environ, COVTRANSFER_RAW=str(work / "raw"), COVTRANSFER_PREPROCESSED=str(work / "preprocessed"),
               COVTRANSFER_RESULTS=str(work / "results"))
    subprocess.run([str(Path(sys.executable).parent / name), *args], check=True, env=env)


def read_rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("burden_model"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training (default 0)")
    parser.add_argument("--epochs", type=int, default=160, help="training epochs of 25 iterations (default 160)")
    parser.add_argument("--json", type=Path, help="write the per-case figures here")
    args = parser.parse_args()
    work = args.work.resolve()
    started = time.perf_counter()
    if not any((work / "raw").glob(f"Dataset{DATASET_ID}_*")):
        command(work, "covtransfer_make_synthetic", "covid", "-d", str(DATASET_ID), "-n", "4", "--test", "8", "--size",
                "small", "--seed", str(args.seed), "--labels", "lung-lesion", "--name", "BurdenCOVID")
    raw = next((work / "raw").glob(f"Dataset{DATASET_ID}_*"))
    command(work, "covtransfer_plan_and_preprocess", "-d", str(DATASET_ID), "--preset", "cpu-small")
    if not (work / "results" / raw.name / "scratch" / "fold_all" / "checkpoint_final.pt").is_file():
        command(work, "covtransfer_train", "-d", str(DATASET_ID), "-t", "scratch", "-f", "all", "--epochs",
                str(args.epochs),
                "--iters-per-epoch", "25", "--val-iters", "2", "--seed", str(args.seed), "--device", "cpu", "--amp",
                "off", "--no-final-validation")
    predictions, references, scores = work / "predictions", work / "reference_statistics", work / "evaluation.json"
    command(work, "covtransfer_predict", "-i", str(raw / "imagesTs"), "-o", str(predictions), "-d", str(DATASET_ID), "-t",
            "scratch", "-f", "all", "--no-tta", "--statistics", "--device", "cpu", "--quiet")
    command(work, "covtransfer_quantify", "-i", str(raw / "imagesTs"), "-s", str(raw / "labelsTs"), "-o",
            str(references))
    command(work, "covtransfer_evaluate", "-r", str(raw / "labelsTs"), "-p", str(predictions), "-o", str(scores))
    predicted, reference = read_rows(predictions / "statistics.csv"), read_rows(references / "statistics.csv")
    summary = json.loads(scores.read_text())["mean"]
    dice = {label: round(100 * values["dice"], 1) for label, values in summary.items()}
    cases = {}
    print("| case | PO reference | PO predicted | PHO reference | PHO predicted | lung source |")
    print("|---|---|---|---|---|---|")
    for case in sorted(reference):
        ours, truth = predicted[case], reference[case]
        cases[case] = {key: (float(truth[key]), float(ours[key])) for key in ("po_total", "pho_total")}
        print(f"| {case} | {float(truth['po_total']):.2f} | {float(ours['po_total']):.2f} | "
              f"{float(truth['pho_total']):.2f} | {float(ours['pho_total']):.2f} | {ours['lung_source']} |")
    errors = {key: float(np.mean([abs(t - o) for t, o in (c[key] for c in cases.values())]))
              for key in ("po_total", "pho_total")}
    print(f"\nmean absolute error over {len(cases)} test cases: PO {errors['po_total']:.2f} points, "
          f"PHO {errors['pho_total']:.2f} points; test DSC % per label (1 lung, 2 lesion): {dice}; "
          f"{(time.perf_counter() - started) / 60:.1f} min in all, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    if args.json:
        args.json.write_text(json.dumps({"cases": cases, "mean_abs_error": errors, "dice_percent": dice,
                                         "seed": args.seed, "epochs": args.epochs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
