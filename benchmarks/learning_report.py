"""The learning benchmark's report, written from the run files alone (``learning_runs.py``).

Per dataset and arm: mean ± sd across seeds, each seed's DSC and take-off epoch, and the wall time; then the paired
per-case difference A − B (each case averaged over the seeds both arms have) with its bootstrap 95 % CI and Wilcoxon
p, over all seeds and over the seeds where both took off; the take-off epochs side by side; the head-initialisation
decision once its runs are complete; and the runs that are missing or stale. Two headline tables come first: the prior
against zero bias under the head-initialisation rule, and covtransfer's default against nnU-Net under the issue's
targets, with the difference over seeds (Welch) beside the per-case one.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
from scipy import stats

from covtransfer.experiments.paired import bootstrap_ci, wilcoxon_p
from covtransfer.network.unet import DEFAULT_HEAD_INIT
from learning_runs import TAKEOFF_DICE, Run, estimated_minutes, takeoff_epoch

PRIOR, ZERO, NNUNET = "covtransfer_prior", "covtransfer_zero", "nnunet_zero"
DEFAULT = f"covtransfer_{DEFAULT_HEAD_INIT}"  # the arm that trains as covtransfer_train does by default
# (A, B): each covtransfer arm against nnU-Net, and the prior against zero bias (the head-initialisation decision)
PAIRS = ((PRIOR, NNUNET), (ZERO, NNUNET), (PRIOR, ZERO))


def summarise(records: dict[Run, dict], planned: list[Run], stale: dict[Run, dict]) -> str:
    """The whole report in Markdown."""
    by_arm: dict[tuple[str, str], dict[int, dict]] = {}
    for run, record in records.items():
        by_arm.setdefault((run.kind, run.arm), {})[run.seed] = record
    lines = headline(by_arm) + ["## Every arm", "",
                                "| dataset | arm | seeds | test DSC % | NSD@3 mm % | per seed DSC | take-off epoch | "
                                "wall min/run |", "|---|---|---|---|---|---|---|---|"]
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
            lines.append(_paired_row(dataset, pair, "all" if took_off != common else "all, all took off", common,
                                     runs))
            if took_off != common:
                lines.append(_paired_row(dataset, pair, "both took off", took_off, runs))
            takeoff_rows.append(_takeoff_row(dataset, pair, common, runs))
    lines += ["", f"Take-off epoch per seed, A / B (EMA pseudo Dice > {TAKEOFF_DICE}; 'never': not within the run); "
              "the last rows pool every dataset, with the two-sided sign test p of earlier against later (ties left "
              "out):", "", "| dataset | A / B | per seed | A earlier / same / later |", "|---|---|---|---|",
              *takeoff_rows, *[_pooled_takeoff_row(pair, by_arm) for pair in PAIRS]]
    lines += ["", "Head initialisation: " + head_init_decision(by_arm, {r.kind for r in planned},
                                                                 {r.seed for r in planned})]
    missing = [run for run in planned if run not in records]
    lines += ["", f"Runs: {len(planned) - len(missing)} of {len(planned)} planned are in; missing ({len(missing)}): "
              + (", ".join(run.name for run in missing) or "none") + "."]
    if missing and records:
        hours = sum(estimated_minutes(records, run.tool) for run in missing) / 60
        lines.append(f"The missing runs need about {hours:.1f} h of run time at the median wall time of each tool's "
                     f"earlier runs ({hours / 2:.1f} h with --jobs 2 on two cores).")
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
        c = compare({arm: by_arm[(dataset, arm)] for arm in (PRIOR, ZERO)}, (PRIOR, ZERO), sorted(seeds))
        if not prior_passes(c):
            failing.append(f"{dataset} (mean {c['dice'][0]:.1f} vs {c['dice'][1]:.1f}, CI upper "
                           f"{c['dice_ci'][1]:+.1f})")
    if failing:
        return "zero bias: the prior fails the rule on " + "; ".join(failing) + "."
    return "keep the prior: on every dataset its mean DSC is not lower and its paired CI's upper end is above 0."


def compare(runs: dict[str, dict[int, dict]], pair: tuple[str, str], seeds: list[int]) -> dict:
    """Arm A against arm B over ``seeds``: mean DSC and NSD of each (percent), the per-case paired Δ (points) with
    its bootstrap CI and Wilcoxon p, how many cases A has better and worse (DSC), and the take-off epochs per seed
    (None: never)."""
    out: dict = {"seeds": seeds}
    for metric in ("dice", "nsd"):
        index = 0 if metric == "dice" else 1
        out[metric] = tuple(float(np.mean([seed_means(runs[arm][s])[index] for s in seeds])) for arm in pair)
        diff = _case_differences(runs, pair, seeds, metric)
        out[f"{metric}_delta"], out[f"{metric}_ci"], out[f"{metric}_p"] = \
            float(diff.mean()), bootstrap_ci(diff), wilcoxon_p(diff)
        if metric == "dice":
            out["cases"], out["better"], out["worse"] = len(diff), int(np.sum(diff > 0)), int(np.sum(diff < 0))
    out["takeoff"] = [tuple(takeoff_epoch(runs[arm][s]["curve"]) for arm in pair) for s in seeds]
    out["seed_level"] = seed_level_delta([[seed_means(runs[arm][s])[0] for s in seeds] for arm in pair])
    return out


def seed_level_delta(per_seed: list[list[float]]) -> tuple[float, float, float] | None:
    """A − B of the mean per-seed DSC with the Welch 95 % CI and p, seeds as the unit (None below two seeds).

    The per-case CI holds each case's seed average fixed; this one carries the seed-to-seed spread of training,
    which is what a rerun with other seeds would meet."""
    a, b = (np.asarray(values, dtype=float) for values in per_seed)
    if min(len(a), len(b)) < 2 or (a.std() == 0 and b.std() == 0):
        return None
    test = stats.ttest_ind(a, b, equal_var=False)
    low, high = test.confidence_interval()
    return float(low), float(high), float(test.pvalue)


def prior_passes(c: dict) -> bool:
    """The head-initialisation rule on one dataset: mean DSC not lower, paired CI's upper end above 0."""
    return c["dice"][0] >= c["dice"][1] and c["dice_ci"][1] > 0


def missed_targets(c: dict) -> list[str]:
    """The targets covtransfer (A) misses against nnU-Net (B) on one dataset: mean DSC and NSD not lower, the paired
    CI's upper end of Δ DSC above 0, take-off at the same epoch or earlier on every seed."""
    later = takeoff_order([a for a, _ in c["takeoff"]], [b for _, b in c["takeoff"]])[2]
    return ([f"DSC lower by {c['dice'][1] - c['dice'][0]:.1f}"] if c["dice"][0] < c["dice"][1] else []) + \
        ([f"NSD lower by {c['nsd'][1] - c['nsd'][0]:.1f}"] if c["nsd"][0] < c["nsd"][1] else []) + \
        ([f"CI upper {c['dice_ci'][1]:+.1f}"] if not c["dice_ci"][1] > 0 else []) + \
        ([f"take-off later on {later} seed(s)"] if later else [])


def headline(by_arm: dict[tuple[str, str], dict[int, dict]]) -> list[str]:
    """The two headline tables, over the seeds both arms of a pair have on each dataset."""
    lines = ["## Head initialisation: the prior against zero bias", "",
             "Paired per case, each case averaged over the seeds both arms have (points; bootstrap 95 % CI, Wilcoxon "
             "p). The rule keeps the prior only if, on every dataset, its mean DSC is not lower and the CI's upper "
             "end of Δ DSC is above 0.", "",
             "| dataset | seeds | prior DSC % | zero DSC % | Δ DSC [95 % CI] | p | Δ NSD [95 % CI] | p | "
             "take-off prior / zero | rule |", "|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, c in _comparisons(by_arm, (PRIOR, ZERO)):
        lines.append(f"| {dataset} | {len(c['seeds'])} | {c['dice'][0]:.1f} | {c['dice'][1]:.1f} | "
                     f"{_delta(c, 'dice')} | {_delta(c, 'nsd')} | {_takeoffs(c)} | "
                     f"{'passes' if prior_passes(c) else 'fails'} |")
    lines += ["", f"## covtransfer's default ({DEFAULT}) against nnU-Net 2.8.1", "",
              "Targets: mean DSC and NSD not lower than nnU-Net's, the paired CI's upper end of Δ DSC above 0, and "
              "take-off at the same epoch or earlier on every seed.", "",
              "| dataset | seeds | DSC % covtransfer / nnU-Net | NSD % covtransfer / nnU-Net | Δ DSC [95 % CI] | p | "
              "Δ NSD [95 % CI] | p | Δ DSC over seeds [Welch 95 % CI], p | take-off covtransfer / nnU-Net | "
              "targets |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, c in _comparisons(by_arm, (DEFAULT, NNUNET)):
        missed = missed_targets(c)
        lines.append(f"| {dataset} | {len(c['seeds'])} | {c['dice'][0]:.1f} / {c['dice'][1]:.1f} | "
                     f"{c['nsd'][0]:.1f} / {c['nsd'][1]:.1f} | {_delta(c, 'dice')} | {_delta(c, 'nsd')} | "
                     f"{_seed_level(c)} | {_takeoffs(c)} | "
                     f"{'met' if not missed else 'missed: ' + '; '.join(missed)} |")
    return lines + [""]


def _comparisons(by_arm: dict[tuple[str, str], dict[int, dict]], pair: tuple[str, str]):
    """(dataset, :func:`compare`) for every dataset where both arms share a seed."""
    for dataset in sorted({d for d, _ in by_arm}):
        runs = {arm: by_arm.get((dataset, arm), {}) for arm in pair}
        seeds = sorted(set(runs[pair[0]]) & set(runs[pair[1]]))
        if seeds:
            yield dataset, compare(runs, pair, seeds)


def _delta(c: dict, metric: str) -> str:
    low, high = c[f"{metric}_ci"]
    return f"{c[f'{metric}_delta']:+.1f} [{low:+.1f}, {high:+.1f}] | {c[f'{metric}_p']:.3f}"


def _seed_level(c: dict) -> str:
    if c["seed_level"] is None:
        return "–"
    low, high, p = c["seed_level"]
    return f"{c['dice'][0] - c['dice'][1]:+.1f} [{low:+.1f}, {high:+.1f}], {p:.3f}"


def _takeoffs(c: dict) -> str:
    return ", ".join(f"{_epoch(a)} / {_epoch(b)}" for a, b in c["takeoff"])


def _rank(epoch: int | None) -> float:
    return math.inf if epoch is None else epoch


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
    c = compare(runs, pair, seeds)
    return (f"{first} {', '.join(map(str, seeds))} | {c['cases']} | {_delta(c, 'dice')} | {_delta(c, 'nsd')} | "
            f"{c['better']} / {c['worse']} |")


def _takeoff_row(dataset: str, pair: tuple[str, str], seeds: list[int], runs: dict[str, dict[int, dict]]) -> str:
    """A's and B's take-off epochs per seed and how often A's came earlier, at the same epoch or later."""
    epochs = [[takeoff_epoch(runs[arm][s]["curve"]) for s in seeds] for arm in pair]
    earlier, same, later = takeoff_order(*epochs)
    cells = ", ".join(f"{s}: {_epoch(a)} / {_epoch(b)}" for s, a, b in zip(seeds, *epochs))
    return f"| {dataset} | {pair[0]} / {pair[1]} | {cells} | {earlier} / {same} / {later} |"


def _pooled_takeoff_row(pair: tuple[str, str], by_arm: dict[tuple[str, str], dict[int, dict]]) -> str:
    """The take-off order of A and B over every dataset and seed both have, with the sign test p."""
    epochs: list[list[int | None]] = [[], []]
    for dataset in sorted({d for d, _ in by_arm}):
        runs = [by_arm.get((dataset, arm), {}) for arm in pair]
        for seed in sorted(set(runs[0]) & set(runs[1])):
            for arm_epochs, arm_runs in zip(epochs, runs):
                arm_epochs.append(takeoff_epoch(arm_runs[seed]["curve"]))
    earlier, same, later = takeoff_order(*epochs)
    p = stats.binomtest(earlier, earlier + later).pvalue if earlier + later else 1.0
    shown = f"{p:.3f}" if p >= 0.001 else "< 0.001"
    return (f"| all | {pair[0]} / {pair[1]} | {len(epochs[0])} seeds | {earlier} / {same} / {later}, sign test p "
            f"{shown} |")


def takeoff_order(a: list[int | None], b: list[int | None]) -> tuple[int, int, int]:
    """How many of the paired take-off epochs of A came earlier than, at the same epoch as and later than B's
    (never taking off counts as latest)."""
    pairs = [(_rank(x), _rank(y)) for x, y in zip(a, b)]
    earlier, same = sum(x < y for x, y in pairs), sum(x == y for x, y in pairs)
    return earlier, same, len(pairs) - earlier - same


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
