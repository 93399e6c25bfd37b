"""The study's last job: every fold's scores and training history into one row per run, with its statistics
(mean ± sd over cases, training time, convergence epoch, the paired comparison against scratch), and the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from covtransfer.config import Roots, find_dataset
from covtransfer.errors import CovtransferError
from covtransfer.evaluation.evaluate import summarise
from covtransfer.experiments.burden_table import write_burden
from covtransfer.experiments.paired import paired_rows
from covtransfer.experiments.pretraining_summary import pretraining_rows
from covtransfer.experiments.report import write_report
from covtransfer.experiments.report_html import write_html_report
from covtransfer.experiments.spec import StudySpec, pretrainings, run_name, runs
from covtransfer.experiments.study_record import read_record
from covtransfer.experiments.work import EVALUATION_FILE
from covtransfer.training.api import fold_folder, read_metrics

METRICS = ("dice", "nsd", "sensitivity", "precision", "mcc")


def aggregated(output: Path) -> bool:
    """The report exists and is newer than every fold's scores."""
    results = output / "results.csv"
    scores = list((output / "predictions").glob(f"*/fold_*/{EVALUATION_FILE}"))
    return results.is_file() and all(results.stat().st_mtime_ns >= p.stat().st_mtime_ns for p in scores)


def aggregate_study(spec: StudySpec, roots: Roots, target: str, sources: list[str], output: Path,
                    commands: list[str]) -> tuple[list[dict], list[dict], list[dict]]:
    """Read every fold's scores and training history and write the report; returns one row per pre-training and
    strategy, the paired rows against scratch, and the pre-trainings' final per-source EMA rows."""
    pretrained = pretrainings(spec, roots, sources)
    ema_rows: list[dict] = []
    for p in pretrained:
        ema_rows += pretraining_rows(p.tag, p.sources, read_metrics(p.folder))
    rows = []
    for strategy, pretraining in runs(spec, pretrained):
        tag = None if pretraining is None else f"from_{pretraining.tag}"
        per_case, histories, times = [], [], []
        for fold in spec.folds:
            history = read_metrics(fold_folder(roots, [target], strategy, fold, tag))
            histories.append(history)
            times.append(sum(r["epoch_time"] for r in history))
            scores = output / "predictions" / run_name(strategy, tag) / f"fold_{fold}" / EVALUATION_FILE
            evaluation = read_record(scores)
            if evaluation is None:
                raise CovtransferError(f"{scores}: missing; run the study's predict job of fold {fold} first")
            per_case += evaluation["rows"]
        rows.append(aggregate("none" if pretraining is None else pretraining.tag, strategy, per_case, histories,
                              times))
        rows[-1]["per_case"] = per_case
        rows[-1]["histories"] = histories
    paired = paired_rows(rows)
    output.mkdir(parents=True, exist_ok=True)
    burden = write_burden(output, rows, find_dataset(roots.raw, target))
    write_report(output, rows, commands, target, roots, paired, ema_rows, spec.tolerance_mm, burden)
    write_html_report(output, rows, target, roots, paired, ema_rows, burden)
    return rows, paired, ema_rows


def convergence_epoch(history: list[dict], fraction: float = 0.9) -> int | None:
    """First epoch whose moving-average validation Dice reaches ``fraction`` of its final value."""
    values = [r["ema_dice"] for r in history if r.get("ema_dice") is not None and np.isfinite(r["ema_dice"])]
    if not values or values[-1] <= 0:
        return None
    goal = fraction * values[-1]
    return next(i for i, v in enumerate(values) if v >= goal)


def aggregate(pretraining: str, strategy: str, per_case: list[dict], histories: list[list[dict]],
              times: list[float]) -> dict:
    """One results row: metric mean ± std over all test cases of all folds, training time, convergence."""
    summary = summarise(per_case) if per_case else {"mean": {}, "std": {}}
    label = next(iter(summary["mean"]), None)
    row = {"pretraining": pretraining, "strategy": strategy, "num_cases": len(per_case)}
    for metric in METRICS:
        row[f"{metric}_mean"] = summary["mean"][label][metric] if label else float("nan")
        row[f"{metric}_std"] = summary["std"][label][metric] if label else float("nan")
    epochs = [e for e in (convergence_epoch(h) for h in histories) if e is not None]
    row["training_minutes"] = float(np.mean(times)) / 60 if times else float("nan")
    row["convergence_epoch"] = float(np.mean(epochs)) if epochs else float("nan")
    return row
