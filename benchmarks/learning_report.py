"""The learning benchmark's report, written from the run files alone (``learning_runs.py``).

Per dataset and arm: mean ± sd across seeds, each seed's DSC and take-off epoch, and the wall time; then the paired
per-case difference A − B (each case averaged over the seeds both arms have) with its bootstrap 95 % CI and Wilcoxon
p, over all seeds and over the seeds where both took off; the take-off epochs side by side; the head-initialisation
decision once its runs are complete; and the runs that are missing or stale.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from covtransfer.experiments.paired import bootstrap_ci, wilcoxon_p
from learning_runs import TAKEOFF_DICE, Run, takeoff_epoch

PRIOR, ZERO, NNUNET = "covtransfer_prior", "covtransfer_zero", "nnunet_zero"
# (A, B): each covtransfer arm against nnU-Net, and the prior against zero bias (the head-initialisation decision)
PAIRS = ((PRIOR, NNUNET), (ZERO, NNUNET), (PRIOR, ZERO))


def summarise(records: dict[Run, dict], planned: list[Run], stale: dict[Run, dict]) -> str:
    """The whole report in Markdown."""
    by_arm: dict[tuple[str, str], dict[int, dict]] = {}
    for run, record in records.items():
        by_arm.setdefault((run.kind, run.arm), {})[run.seed] = record
    lines = ["| dataset | arm | seeds | test DSC % | NSD@3 mm % | per seed DSC | take-off epoch | wall min/run |",
             "|---|---|---|---|---|---|---|---|"]
    for (dataset, arm), runs in sorted(by_arm.items()):
        means = [seed_means(runs[seed]) for seed in sorted(runs)]
        takeoff = [_epoch(takeoff_epoch(runs[seed]["curve"])) for seed in sorted(runs)]
        wall = np.mean([runs[seed]["wall_s"] for seed in runs]) / 60
        lines.append(f"| {dataset} | {arm} | {len(runs)} | {_mean_sd([m[0] for m in means])} | "
                     f"{_mean_sd([m[1] for m in means])} | {', '.join(f'{m[0]:.1f}' for m in means)} | "
                     f"{', '.join(takeoff)} | {wall:.1f} |")
    lines += ["", "Paired per-case difference A − B, each case's score averaged over the seeds named (points; "
              "bootstrap 95 % CI of the mean, Wilcoxon signed-rank p):", "",
              "| dataset | A − B | seeds | cases | Δ DSC [95 % CI] | p | Δ NSD [95 % CI] | p | cases better / worse "
              "(DSC) |", "|---|---|---|---|---|---|---|---|---|"]
    takeoff_rows = []
    for dataset in sorted({d for d, _ in by_arm}):
        for pair in PAIRS:
            if not all((dataset, arm) in by_arm for arm in pair):
                continue
            runs = {arm: by_arm[(dataset, arm)] for arm in pair}
            common = sorted(set(runs[pair[0]]) & set(runs[pair[1]]))
            took_off = [s for s in common if all(takeoff_epoch(runs[a][s]["curve"]) is not None for a in pair)]
            for label, seeds in (("all", common), ("both took off", took_off)):
                lines.append(_paired_row(dataset, pair, label, seeds, runs))
            takeoff_rows.append(_takeoff_row(dataset, pair, common, runs))
    lines += ["", f"Take-off epoch per seed, A / B (EMA pseudo Dice > {TAKEOFF_DICE}; 'never': not within the run):",
              "", "| dataset | A / B | per seed | A earlier / same / later |", "|---|---|---|---|", *takeoff_rows]
    lines += ["", "Head initialisation: " + head_init_decision(by_arm, {r.kind for r in planned},
                                                                 {r.seed for r in planned})]
    missing = [run.name for run in planned if run not in records]
    lines += ["", f"Runs: {len(records)} of {len(planned)} planned are in; missing ({len(missing)}): "
              + (", ".join(missing) or "none") + "."]
    if stale:
        lines.append(f"Stale (made by an older training engine, left out above; trained again on the next run): "
                     f"{', '.join(run.name for run in stale)}.")
    total = sum(r["wall_s"] for r in records.values())
    lines.append(f"Wall time of the {len(records)} runs: {total / 3600:.1f} h of run time in all.")
    return "\n".join(lines)


def head_init_decision(by_arm: dict[tuple[str, str], dict[int, dict]], datasets: set[str], seeds: set[int]) -> str:
    """Keep the prior only if, on every dataset, its mean test DSC is not lower than zero bias's and the upper end of
    the paired 95 % CI of Δ DSC (prior − zero) is above 0; undecided until both arms have every seed."""
    complete = all(set(by_arm.get((d, arm), {})) >= seeds for d in datasets for arm in (PRIOR, ZERO))
    if not complete:
        return "undecided: the prior and zero-bias runs are not all in."
    failing = []
    for dataset in sorted(datasets):
        runs = {arm: by_arm[(dataset, arm)] for arm in (PRIOR, ZERO)}
        prior, zero = (np.mean([seed_means(runs[arm][s])[0] for s in seeds]) for arm in (PRIOR, ZERO))
        diff = _case_differences(runs, (PRIOR, ZERO), sorted(seeds), "dice")
        if prior < zero or bootstrap_ci(diff)[1] <= 0:
            failing.append(f"{dataset} (mean {prior:.1f} vs {zero:.1f}, CI upper {bootstrap_ci(diff)[1]:+.1f})")
    if failing:
        return "zero bias: the prior fails the rule on " + "; ".join(failing) + "."
    return "keep the prior: on every dataset its mean DSC is not lower and its paired CI's upper end is above 0."


def seed_means(record: dict) -> tuple[float, float]:
    """The run's mean test DSC and NSD, in percent."""
    cases = record["cases"].values()
    return 100 * float(np.mean([c["dice"] for c in cases])), 100 * float(np.mean([c["nsd"] for c in cases]))


def _case_differences(runs: dict[str, dict[int, dict]], pair: tuple[str, str], seeds: list[int],
                      metric: str) -> np.ndarray:
    """A − B per case in points, each case's score averaged over ``seeds``."""
    ours, theirs = (_case_means([runs[arm][s] for s in seeds]) for arm in pair)
    return np.array([100 * (ours[c][metric] - theirs[c][metric]) for c in sorted(ours)])


def _paired_row(dataset: str, pair: tuple[str, str], label: str, seeds: list[int],
                runs: dict[str, dict[int, dict]]) -> str:
    """One row of the paired table: Δ per case of A − B over ``seeds``, its CI and p, for DSC and NSD."""
    first = f"| {dataset} | {pair[0]} − {pair[1]} | {label}:"
    if not seeds:
        return f"{first} none | | | | | | |"
    cells = []
    for metric in ("dice", "nsd"):
        diff = _case_differences(runs, pair, seeds, metric)
        low, high = bootstrap_ci(diff)
        cells.append(f"{diff.mean():+.1f} [{low:+.1f}, {high:+.1f}] | {wilcoxon_p(diff):.3f}")
        if metric == "dice":
            better, worse = int(np.sum(diff > 0)), int(np.sum(diff < 0))
    return f"{first} {', '.join(map(str, seeds))} | {len(diff)} | {cells[0]} | {cells[1]} | {better} / {worse} |"


def _takeoff_row(dataset: str, pair: tuple[str, str], seeds: list[int], runs: dict[str, dict[int, dict]]) -> str:
    """A's and B's take-off epochs per seed and how often A's came earlier, at the same epoch or later."""
    epochs = [[takeoff_epoch(runs[arm][s]["curve"]) for s in seeds] for arm in pair]
    ranks = [[math.inf if e is None else e for e in arm_epochs] for arm_epochs in epochs]
    earlier = sum(a < b for a, b in zip(*ranks))
    same = sum(a == b for a, b in zip(*ranks))
    cells = ", ".join(f"{s}: {_epoch(a)} / {_epoch(b)}" for s, a, b in zip(seeds, *epochs))
    return f"| {dataset} | {pair[0]} / {pair[1]} | {cells} | {earlier} / {same} / {len(seeds) - earlier - same} |"


def _epoch(epoch: int | None) -> str:
    return "never" if epoch is None else str(epoch)


def _case_means(runs: list[dict]) -> dict[str, dict[str, float]]:
    cases = runs[0]["cases"]
    return {c: {m: float(np.mean([r["cases"][c][m] for r in runs])) for m in ("dice", "nsd")} for c in cases}


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{np.mean(values):.1f} ± {sd:.1f}"


def plot_curves(records: dict[Run, dict], path: Path) -> None:
    """EMA pseudo Dice per epoch of every run, one panel per dataset, one colour per arm."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = sorted({run.kind for run in records})
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4), squeeze=False)
    colours = {PRIOR: "tab:blue", ZERO: "tab:green", NNUNET: "tab:orange"}
    for ax, kind in zip(axes[0], kinds):
        for arm, colour in colours.items():
            curves = [r["curve"] for run, r in sorted(records.items(), key=lambda i: i[0].seed)
                      if run.kind == kind and run.arm == arm]
            for k, curve in enumerate(curves):
                ax.plot([np.nan if v is None else v for v in curve], color=colour, alpha=0.7,
                        label=arm if k == 0 else None)
        ax.set(title=kind, xlabel="epoch", ylabel="EMA pseudo Dice", ylim=(0, 1))
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
