"""The study's outputs: ``results.csv`` and ``results.md`` (one row per pre-training and strategy, with the paired
comparison against scratch), ``pretraining.csv`` (final EMA per source), the convergence plot, the per-case DSC box
plot, overlay PNGs of a few test cases, ``per_case.csv`` and ``commands.txt``. Undefined values are written n/a.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from covtransfer.atomic import atomic_path, write_text
from covtransfer.config import Roots
from covtransfer.experiments.markdown import markdown_table, mean_sd_cell
from covtransfer.experiments.paired import N_RESAMPLES, paired_table
from covtransfer.experiments.pretraining_summary import pretraining_table
from covtransfer.experiments.report_figures import convergence_figure, dice_boxplot, save_png, write_overlays
from covtransfer.experiments.verdict import verdict_text

COLUMNS = [("DSC %", "dice"), ("NSD@τ %", "nsd"), ("sensitivity %", "sensitivity"), ("precision %", "precision"),
           ("MCC %", "mcc")]
PER_CASE_COLUMNS = ["pretraining", "strategy", "fold", "case", "label", "dice", "nsd", "hd95"]


def _number(value: float) -> str:
    return f"{value:.1f}" if np.isfinite(value) else "n/a"


def results_table(rows: list[dict]) -> str:
    """The results as a Markdown table (metrics in %, mean ± std over all test cases of all folds)."""
    header = ["pre-training", "strategy", "cases"] + [c for c, _ in COLUMNS] + ["train min/fold", "conv. epoch"]
    table = []
    for row in rows:
        cells = [row["pretraining"], row["strategy"], str(row["num_cases"])]
        cells += [mean_sd_cell(row[f"{m}_mean"], row[f"{m}_std"]) for _, m in COLUMNS]
        cells += [_number(row["training_minutes"]), _number(row["convergence_epoch"])]
        table.append(cells)
    return markdown_table(header, table)


def results_note(tolerance_mm: float | None = None) -> str:
    """What the results table's columns mean, τ included (its value when known)."""
    tau = f"τ = {tolerance_mm:g} mm" if tolerance_mm is not None else "τ: the study's --tolerance-mm, 3 mm by default"
    return ("Metrics in %, mean ± sd over the test cases of all folds, of the first foreground label. NSD@τ: "
            "normalised surface Dice, the share of the reference and predicted surfaces that lie within τ of each "
            f"other ({tau}). MCC: Matthews correlation coefficient of the voxels. train min/fold: minutes of "
            "training per fold (the sum of its epoch times). conv. epoch: the first epoch (counted from 0) whose "
            "moving-average validation pseudo Dice reaches 90 % of its last value, mean over folds; it tells how "
            "soon a strategy gets near where it ends. n/a: undefined, e.g. precision when a model predicted nothing "
            "on every test case, sensitivity when no reference has a lesion, conv. epoch when the pseudo Dice "
            "never rose above 0.")


PAIRED_NOTE = ("Each strategy minus scratch on the same test cases (same fold), in percentage points; 95 % CI: "
               f"percentile bootstrap of the mean difference ({N_RESAMPLES:,} resamples of the pairs, seeded); "
               "Wilcoxon p: two-sided signed-rank test of the paired differences. n/a: fewer than 2 pairs, or every "
               "difference zero.")
NO_PAIRS = "n/a: the paired comparison needs scratch and at least one other strategy."


def summary_text(rows: list[dict], paired: list[dict], pretraining: list[dict],
                 tolerance_mm: float | None = None) -> str:
    """In Markdown: the verdict of every strategy against scratch, the results table and what its columns mean, the
    paired comparison with scratch and the pre-training EMA per source."""
    parts = ["## Verdict: each strategy against scratch", verdict_text(paired)] if paired else []
    parts += ["## Results", results_table(rows), results_note(tolerance_mm), "## Paired comparison with scratch",
              paired_table(paired) if paired else NO_PAIRS, PAIRED_NOTE]
    if pretraining:
        parts += ["## Pre-training: final EMA pseudo Dice per source", pretraining_table(pretraining)]
    return "\n\n".join(parts) + "\n"


def results_markdown(target: str, rows: list[dict], paired: list[dict], pretraining: list[dict],
                     tolerance_mm: float | None = None) -> str:
    """``results.md``: a title and the :func:`summary_text`."""
    return f"# Transfer study on {target}\n\n" + summary_text(rows, paired, pretraining, tolerance_mm)


def _cell(value):
    """A CSV cell: undefined values (NaN, infinite, None as read back from JSON) as n/a."""
    return "n/a" if value is None or isinstance(value, float) and not np.isfinite(value) else value


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Write ``rows`` (dicts) with ``columns`` atomically, undefined values as n/a."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", restval="n/a")
        writer.writeheader()
        writer.writerows({key: _cell(value) for key, value in row.items()} for row in rows)


def write_report(folder: Path, rows: list[dict], commands: list[str], target: str, roots: Roots,
                 paired: list[dict] | None = None, pretraining: list[dict] | None = None,
                 tolerance_mm: float | None = None, burden: str = "") -> list[Path]:
    """Write every study output into ``folder`` (``burden``: a Markdown section appended to results.md); returns the
    plot paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paired, pretraining = paired or [], pretraining or []
    by_run = {(p["pretraining"], p["strategy"]): p for p in paired}
    table = [{**row, **by_run.get((row["pretraining"], row["strategy"]), {})} for row in rows]
    keys = list(dict.fromkeys(k for row in table for k in row if k not in ("per_case", "histories")))
    write_csv(folder / "results.csv", table, keys)
    write_csv(folder / "pretraining.csv", pretraining,
              ["pretraining", "source", "epochs", "final_ema", "final_pseudo_dice"])
    write_text(folder / "results.md", results_markdown(target, rows, paired, pretraining, tolerance_mm) + (
        "\n" + burden if burden else ""))
    write_text(folder / "commands.txt", "\n".join(dict.fromkeys(commands)) + "\n")
    write_csv(folder / "per_case.csv", [{"pretraining": row["pretraining"], "strategy": row["strategy"], **case}
                                        for row in rows for case in row["per_case"]], PER_CASE_COLUMNS)
    plots = []
    for name, draw in (("convergence.png", convergence_figure), ("dice_boxplot.png", dice_boxplot)):
        fig = draw(rows)
        save_png(fig, folder / name)
        plt.close(fig)
        plots.append(folder / name)
    return plots + write_overlays(folder, rows, target, roots)
