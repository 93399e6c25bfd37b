"""The paired comparison with scratch in words: one line per strategy saying how far its DSC is from scratch's, how
sure that is and whether it is significant, so that a reader gets the study's answer without decoding the table."""

from __future__ import annotations

import math

SIGNIFICANCE = 0.05
MINUS = "\u2212"
VERDICT_NOTE = ("DSC points: percentage points of the mean per-case DSC difference (strategy − scratch) on the "
                "same test cases (one pair per test case, fold and seed scored by both); brackets: its 95 % bootstrap "
                f"interval; significant: two-sided Wilcoxon signed-rank p < {SIGNIFICANCE} (not corrected for "
                "comparing several strategies).")


def run_label(row: dict) -> str:
    """A run's name in tables, plots and verdicts: the strategy, with its pre-training in brackets when it has one."""
    return row["strategy"] if row["pretraining"] == "none" else f"{row['strategy']} ({row['pretraining']})"


def signed_points(fraction: float) -> str:
    """A difference of fractions as signed percentage points with one decimal and a true minus sign."""
    return f"{100 * fraction:+.1f}".replace("-", MINUS)


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _judgement(delta: float, p: float) -> str:
    if p >= SIGNIFICANCE:
        return "not significant"
    return "significantly better" if delta > 0 else "significantly worse" if delta < 0 else "significant"


def verdict(row: dict) -> str:
    """One paired row (:func:`covtransfer.experiments.paired.paired_rows`) as a sentence on DSC, e.g. ``hybrid
    (multi): +0.7 DSC points over scratch [−0.3, +1.7], p = 0.2, not significant on 16 test cases``."""
    name, pairs = run_label(row), int(row["pairs_dice"])
    cases = f"{pairs} test case" + ("" if pairs == 1 else "s")
    if pairs == 0:
        return f"{name}: no test case scored by both it and scratch, nothing to compare"
    head = f"{name}: {signed_points(row['delta_dice'])} DSC points over scratch"
    low, high, p = row["delta_dice_ci_low"], row["delta_dice_ci_high"], row["wilcoxon_p_dice"]
    if not math.isfinite(low):
        return f"{head} on {cases}, too few to test"
    interval = f"[{signed_points(low)}, {signed_points(high)}]"
    if not math.isfinite(p):
        return f"{head} {interval}, the same DSC as scratch on each of the {cases}, nothing to test"
    return f"{head} {interval}, {_p_text(p)}, {_judgement(row['delta_dice'], p)} on {cases}"


def verdict_text(paired: list[dict]) -> str:
    """The verdicts as a Markdown list, followed by how to read them."""
    return "\n".join(f"- {verdict(row)}" for row in paired) + "\n\n" + VERDICT_NOTE
