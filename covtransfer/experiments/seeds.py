"""Several seeds of the same study, summarised: each metric's mean ± sd across seeds, the paired comparison with
scratch over the test cases of every seed pooled, and each pre-training's final EMA per source across seeds.

A seed's value of a metric is its study's mean over its test cases; the sd across seeds is the sample standard
deviation (n − 1), n/a with one seed. Pooled pairs are keyed by (seed, fold, case), so a case is paired only with
itself, scored by the two models of its own seed and fold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covtransfer.atomic import write_text
from covtransfer.experiments.markdown import markdown_table, mean_sd_cell
from covtransfer.experiments.paired import PAIRED_METRICS, paired_rows, paired_table
from covtransfer.experiments.report import COLUMNS, NO_PAIRS, PAIRED_NOTE, write_csv
from covtransfer.experiments.verdict import verdict_text
from covtransfer.experiments.aggregation import METRICS


@dataclass
class SeedRun:
    """One seed's study: its results rows, paired statistics, pre-training EMA rows and study folder."""

    seed: int
    rows: list[dict]
    paired: list[dict]
    pretraining: list[dict]
    folder: Path


def _mean_sd(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")


def _key(row: dict) -> tuple[str, str]:
    return row["pretraining"], row["strategy"]


def seed_rows(runs: list[SeedRun]) -> list[dict]:
    """One row per (pre-training, strategy): every metric and Δ vs scratch as mean and sd across seeds."""
    keys = list(dict.fromkeys(_key(row) for run in runs for row in run.rows))
    out = []
    for key in keys:
        rows = [row for run in runs for row in run.rows if _key(row) == key]
        deltas = [p for run in runs for p in run.paired if _key(p) == key]
        result = {"pretraining": key[0], "strategy": key[1], "seeds": len(rows)}
        for metric in METRICS:
            result[f"{metric}_mean"], result[f"{metric}_sd"] = _mean_sd([r[f"{metric}_mean"] for r in rows])
        for metric in PAIRED_METRICS:
            values = [p[f"delta_{metric}"] for p in deltas] if deltas else []
            result[f"delta_{metric}_mean"], result[f"delta_{metric}_sd"] = _mean_sd(values)
        out.append(result)
    return out


def pooled_paired(runs: list[SeedRun]) -> list[dict]:
    """The paired statistics against scratch over the test cases of every seed (pairs keyed by seed, fold, case)."""
    pooled: dict[tuple[str, str], dict] = {}
    for run in runs:
        for row in run.rows:
            entry = pooled.setdefault(_key(row), {"pretraining": row["pretraining"], "strategy": row["strategy"],
                                                  "per_case": []})
            entry["per_case"] += [{**case, "seed": run.seed} for case in row["per_case"]]
    return paired_rows(list(pooled.values()))


def pretraining_across_seeds(runs: list[SeedRun]) -> list[dict]:
    """Final EMA pseudo Dice per (pre-training, source): mean and sd across seeds (n/a values left out)."""
    keys = list(dict.fromkeys((r["pretraining"], r["source"]) for run in runs for r in run.pretraining))
    out = []
    for tag, source in keys:
        values = [r["final_ema"] for run in runs for r in run.pretraining
                  if (r["pretraining"], r["source"]) == (tag, source)]
        mean, sd = _mean_sd(values)
        out.append({"pretraining": tag, "source": source, "seeds": len(values), "final_ema_mean": mean,
                    "final_ema_sd": sd})
    return out


def seeds_table(rows: list[dict]) -> str:
    """The across-seeds rows as a Markdown table (metrics in %, Δ in percentage points; mean ± sd across seeds)."""
    header = ["pre-training", "strategy", "seeds"] + [c for c, _ in COLUMNS] + ["Δ DSC (pp)", "Δ NSD (pp)"]
    table = []
    for row in rows:
        cells = [row["pretraining"], row["strategy"], str(row["seeds"])]
        cells += [mean_sd_cell(row[f"{m}_mean"], row[f"{m}_sd"]) for _, m in COLUMNS]
        cells += [mean_sd_cell(row[f"delta_{m}_mean"], row[f"delta_{m}_sd"], signed=True) for m in PAIRED_METRICS]
        table.append(cells)
    return markdown_table(header, table)


def pretraining_seeds_table(rows: list[dict]) -> str:
    """Final EMA pseudo Dice per source across seeds as a Markdown table."""
    lines = ["| pre-training | source | seeds | final EMA pseudo Dice |", "|---|---|---|---|"]
    lines += [f"| {r['pretraining']} | {r['source']} | {r['seeds']} | "
              f"{mean_sd_cell(r['final_ema_mean'], r['final_ema_sd'], scale=1.0, digits=3)} |" for r in rows]
    return "\n".join(lines)


def seeds_summary_text(runs: list[SeedRun]) -> str:
    """The verdicts against scratch and the three across-seeds tables in Markdown."""
    seeds = ", ".join(str(run.seed) for run in runs)
    paired = pooled_paired(runs)
    parts = ["## Verdict: each strategy against scratch, test cases of every seed pooled", verdict_text(paired)] \
        if paired else []
    parts += [f"Seeds {seeds}: mean ± sd across seeds of each seed's mean over its test cases.",
              seeds_table(seed_rows(runs)), "## Paired comparison with scratch, test cases of every seed pooled",
              paired_table(paired) if paired else NO_PAIRS, PAIRED_NOTE,
              "## Pre-training: final EMA pseudo Dice per source, across seeds",
              pretraining_seeds_table(pretraining_across_seeds(runs))]
    return "\n\n".join(parts) + "\n"


def write_seeds_report(folder: Path, runs: list[SeedRun]) -> None:
    """``results.md``, ``results.csv`` (with pooled paired columns) and ``pretraining.csv`` across seeds."""
    rows = seed_rows(runs)
    by_run = {_key(p): p for p in pooled_paired(runs)}
    table = [{**row, **by_run.get(_key(row), {})} for row in rows]
    write_csv(Path(folder) / "results.csv", table, list(dict.fromkeys(k for row in table for k in row)))
    write_csv(Path(folder) / "pretraining.csv", pretraining_across_seeds(runs),
              ["pretraining", "source", "seeds", "final_ema_mean", "final_ema_sd"])
    write_text(Path(folder) / "results.md", "# Transfer study across seeds\n\n" + seeds_summary_text(runs))
