"""Paired comparison of each strategy with scratch on the same test cases: mean difference, a seeded percentile
bootstrap 95 % confidence interval of that mean, and the Wilcoxon signed-rank p-value.

Cases are paired by (seed, fold, case, label): the same test case scored by two models trained on the same fold (and,
in the multi-seed demo, the same seed). The label is the row's metric label, the first foreground label, as in the
results table. Pairs where either value is undefined (NaN) are left out. Undefined statistics are NaN, shown as n/a:
the interval and the p-value need at least 2 pairs, and the p-value needs at least one non-zero difference.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.stats import wilcoxon

from covtransfer.experiments.markdown import markdown_table

PAIRED_METRICS = ("dice", "nsd")
BASELINE = "scratch"
N_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20210
CONFIDENCE = 0.95


def _value(value) -> float:
    return float("nan") if value is None else float(value)


def _metric_label(per_case: list[dict]) -> int | None:
    labels = {int(case["label"]) for case in per_case}
    return min(labels) if labels else None


def _scores(per_case: list[dict], metric: str, label: int) -> dict[tuple, float]:
    return {(str(c.get("seed", "")), str(c["fold"]), str(c["case"])): _value(c[metric])
            for c in per_case if int(c["label"]) == label}


def paired_differences(per_case: list[dict], baseline: list[dict], metric: str) -> np.ndarray:
    """``per_case − baseline`` of ``metric`` for every test case both scored (same seed, fold, case, label)."""
    label = _metric_label(baseline)
    if label is None:
        return np.zeros(0)
    ours, theirs = _scores(per_case, metric, label), _scores(baseline, metric, label)
    differences = [ours[key] - theirs[key] for key in sorted(set(ours) & set(theirs))]
    return np.asarray([d for d in differences if math.isfinite(d)], dtype=np.float64)


def bootstrap_ci(differences: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean difference (resampling the pairs); NaN with fewer than 2 pairs."""
    differences = np.asarray(differences, dtype=np.float64)
    if differences.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, differences.size, (n_resamples, differences.size))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; NaN with fewer than 2 pairs or when every difference is zero."""
    differences = np.asarray(differences, dtype=np.float64)
    if differences.size < 2 or not np.any(differences != 0):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about ties and zeros, which its method handles
        return float(wilcoxon(differences).pvalue)


def paired_statistics(differences: np.ndarray, metric: str) -> dict:
    """The paired columns of one metric: pairs, mean difference, its bootstrap interval, the Wilcoxon p-value."""
    low, high = bootstrap_ci(differences)
    mean = float(np.mean(differences)) if len(differences) else float("nan")
    return {f"pairs_{metric}": len(differences), f"delta_{metric}": mean, f"delta_{metric}_ci_low": low,
            f"delta_{metric}_ci_high": high, f"wilcoxon_p_{metric}": wilcoxon_p(differences)}


def paired_rows(rows: list[dict]) -> list[dict]:
    """One row per (pre-training, strategy) other than scratch: its paired statistics against scratch."""
    baseline = next((row for row in rows if row["strategy"] == BASELINE), None)
    if baseline is None:
        return []
    out = []
    for row in rows:
        if row is baseline:
            continue
        result = {"pretraining": row["pretraining"], "strategy": row["strategy"]}
        for metric in PAIRED_METRICS:
            result.update(paired_statistics(paired_differences(row["per_case"], baseline["per_case"], metric),
                                            metric))
        out.append(result)
    return out


def _points(value: float) -> str:
    return f"{100 * value:+.1f}" if math.isfinite(value) else "n/a"


def _p_value(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if value >= 0.001 else "<0.001"


def paired_table(paired: list[dict]) -> str:
    """The paired statistics as a Markdown table (differences in percentage points)."""
    header = ["pre-training", "strategy", "pairs", "Δ DSC (pp)", "95 % CI", "Wilcoxon p", "Δ NSD (pp)", "95 % CI",
              "Wilcoxon p"]
    table = []
    for row in paired:
        pairs = {row[f"pairs_{m}"] for m in PAIRED_METRICS}
        cells = [row["pretraining"], row["strategy"], " / ".join(str(row[f"pairs_{m}"]) for m in PAIRED_METRICS)
                 if len(pairs) > 1 else str(pairs.pop())]
        for metric in PAIRED_METRICS:
            low, high = row[f"delta_{metric}_ci_low"], row[f"delta_{metric}_ci_high"]
            interval = f"[{_points(low)}, {_points(high)}]" if math.isfinite(low) else "n/a"
            cells += [_points(row[f"delta_{metric}"]), interval, _p_value(row[f"wilcoxon_p_{metric}"])]
        table.append(cells)
    return markdown_table(header, table)
