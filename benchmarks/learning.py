"""Side-by-side learning benchmark: covtransfer and nnU-Net 2.8.1 trained at the same budget on the same data.

Four synthetic datasets, each drawn with a generator seed the script takes from a fixed list (``FRESH_DATA_SEEDS``,
never tuned on; ``--data-round`` moves to the next unseen draw): ``covid`` (4 training, 8 test cases), ``tumor``
(8 and 4), ``effusion`` (4 and 8), all of size ``small``, and ``covid-thick`` (4 and 8) with 5–7 mm slices. For each:

1. writes the raw dataset and plans and preprocesses it with covtransfer (``--preset cpu``);
2. plans it with nnU-Net in a separate virtual environment and overwrites nnU-Net's ``3d_fullres`` with covtransfer's
   spacing, transpose, patch, batch and topology, then preprocesses it with nnU-Net (``learning_nnunet.py``);
3. trains both tools on every training case (fold ``all``) for each seed, fp32 on the CPU, with the same epochs,
   iterations per epoch and validation iterations; nnU-Net through its own trainer class, only the schedule changed;
4. predicts the test cases without mirroring and scores both tools with covtransfer's evaluator (DSC, NSD at 3 mm),
   cross-checked against DeepMind's ``surface-distance`` in the nnU-Net environment.

The report gives, per dataset, mean ± sd across seeds and each run's take-off epoch (first epoch whose EMA pseudo
Dice exceeds ``TAKEOFF_DICE``), then the paired per-case difference covtransfer − nnU-Net (each case averaged over
seeds) with its bootstrap 95 % CI and Wilcoxon p, once over all seeds and once over the seeds where both tools took
off, so that a take-off failure and a slower learner are told apart; and the wall time of every run.

Outputs under ``--work``: ``learning.json`` (every run, per case), ``learning.md`` (the report) and
``learning_curves.png`` (EMA pseudo Dice per epoch of every run). Runs are resumable: a finished run
(``runs/<tool>_<dataset>_<seed>/scores.json``) is not repeated.

Usage::

    python -m venv /tmp/nnunet && /tmp/nnunet/bin/pip install torch==2.13.0 nnunetv2==2.8.1 surface-distance
    python benchmarks/learning.py --nnunet-venv /tmp/nnunet --jobs 2 --threads 1     # 4 datasets x 5 seeds x 2 tools
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from covtransfer.config import Roots
from covtransfer.datasets.synthetic import make_synthetic_dataset
from covtransfer.evaluation.evaluate import evaluate_case
from covtransfer.experiments.paired import bootstrap_ci, wilcoxon_p
from covtransfer.workflow.plan_and_preprocess import plan_and_preprocess
from covtransfer.training.api import read_metrics

HERE = Path(__file__).resolve().parent


class DatasetSpec(NamedTuple):
    """One benchmark dataset: its id, the phantom kind and size, and how many training and test cases."""

    dataset_id: int
    kind: str
    n_train: int
    n_test: int
    size: str = "small"


DATASETS = {"covid": DatasetSpec(801, "covid", 4, 8), "tumor": DatasetSpec(802, "tumor", 8, 4),
            "effusion": DatasetSpec(803, "effusion", 4, 8), "covid-thick": DatasetSpec(804, "covid", 4, 8, "thick")}
# Generator seeds of the datasets, fixed before any run and never tuned on: round r gives dataset i the seed
# FRESH_DATA_SEEDS[r * len(DATASETS) + i] (in DATASETS' order), so every round is a new, unseen draw.
FRESH_DATA_SEEDS = (48611, 90217, 13759, 66403, 27581, 71933, 35107, 84229, 52361, 19697, 60859, 7793)
TOOLS = ("covtransfer", "nnunet")
TOLERANCE_MM = 3.0
TAKEOFF_DICE = 0.01  # a run has taken off in the first epoch whose EMA pseudo Dice exceeds this


def data_seed(name: str, data_round: int) -> int:
    """The generator seed of dataset ``name`` in round ``data_round`` of ``FRESH_DATA_SEEDS``."""
    index = data_round * len(DATASETS) + list(DATASETS).index(name)
    if index >= len(FRESH_DATA_SEEDS):
        raise SystemExit(f"--data-round {data_round}: FRESH_DATA_SEEDS holds {len(FRESH_DATA_SEEDS) // len(DATASETS)}"
                         " rounds")
    return FRESH_DATA_SEEDS[index]


@dataclass(frozen=True)
class Run:
    """One training run: which tool, on which benchmark dataset (a key of ``DATASETS``), with which seed."""

    tool: str
    kind: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.tool}_{self.kind}_{self.seed}"


class Bench:
    """Paths, schedule and environments shared by every run."""

    def __init__(self, args: argparse.Namespace):
        self.work = args.work.resolve()
        self.roots = Roots(self.work / "raw", self.work / "preprocessed", self.work / "results")
        self.nnunet_python = args.nnunet_venv.resolve() / "bin" / "python" if args.nnunet_venv else None
        self.epochs, self.iters, self.val_iters = args.epochs, args.iters_per_epoch, args.val_iters
        self.threads = args.threads
        self.data_round = args.data_round

    def dataset_folder(self, name: str) -> Path:
        dataset_id = DATASETS[name].dataset_id
        return next(self.roots.raw.glob(f"Dataset{dataset_id:03d}_*"))

    def nnunet_env(self) -> dict:
        nn = self.work / "nnunet"
        return dict(os.environ, nnUNet_raw=str(self.roots.raw), nnUNet_preprocessed=str(nn / "preprocessed"),
                    nnUNet_results=str(nn / "results"), nnUNet_n_proc_DA="1", OMP_NUM_THREADS=str(self.threads),
                    nnUNet_compile="false")

    def nnunet(self, *args: str) -> None:
        if self.nnunet_python is None:
            raise SystemExit("nnU-Net runs need --nnunet-venv")
        subprocess.run([str(self.nnunet_python), str(HERE / "learning_nnunet.py"), *args], check=True,
                       env=self.nnunet_env())

    def covtransfer(self, command: str, *args: str) -> None:
        script = Path(sys.executable).parent / command
        roots = ["--raw", str(self.roots.raw), "--preprocessed", str(self.roots.preprocessed),
                 "--results", str(self.roots.results)]
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
        subprocess.run([str(script), *args, *roots], check=True, env=env)


def prepare(bench: Bench, dataset: str, with_nnunet: bool) -> None:
    """Raw data, covtransfer's plans and preprocessing, and (optionally) nnU-Net's preprocessing with those plans."""
    spec, seed = DATASETS[dataset], data_seed(dataset, bench.data_round)
    if not any(bench.roots.raw.glob(f"Dataset{spec.dataset_id:03d}_*")):
        make_synthetic_dataset(spec.kind, spec.dataset_id, spec.n_train, n_test=spec.n_test, size=spec.size,
                               seed=seed, name=f"Synthetic{dataset.title().replace('-', '')}", raw_root=bench.roots.raw)
    drawn = json.loads((bench.dataset_folder(dataset) / "dataset.json").read_text())["synthetic"]["seed"]
    if drawn != seed:
        raise SystemExit(f"{bench.dataset_folder(dataset)}: drawn with generator seed {drawn}, but --data-round "
                         f"{bench.data_round} asks for {seed}; use another --work")
    dataset_id = spec.dataset_id
    name = bench.dataset_folder(dataset).name
    plans = bench.roots.preprocessed / name / "plans.json"
    if not plans.is_file():
        plan_and_preprocess([dataset_id], bench.roots, preset="cpu", num_processes=2)
    marker = bench.work / "nnunet" / f"{name}.ready"
    if with_nnunet and not marker.is_file():
        bench.nnunet("plan", str(dataset_id), str(plans))
        marker.write_text("ok\n")


def train_and_predict(bench: Bench, run: Run) -> Path:
    """Train, predict the test cases and score them; returns the run folder (skipped when already scored)."""
    folder = bench.work / "runs" / run.name
    if (folder / "scores.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dataset = bench.dataset_folder(run.kind)
    predictions = folder / "predictions"
    if run.tool == "covtransfer":
        tag = f"learning{run.seed}"
        bench.covtransfer("covtransfer_train", "-d", dataset.name, "-t", "scratch", "-f", "all", "--tag", tag,
                          "--epochs", str(bench.epochs), "--iters-per-epoch", str(bench.iters),
                          "--val-iters", str(bench.val_iters), "--seed", str(run.seed), "--device", "cpu",
                          "--amp", "off", "--no-final-validation")
        bench.covtransfer("covtransfer_predict", "-i", str(dataset / "imagesTs"), "-o", str(predictions),
                          "-d", dataset.name, "-t", "scratch", "--tag", tag, "-f", "all", "--no-tta",
                          "--device", "cpu", "--quiet")
        history = read_metrics(bench.roots.results / dataset.name / f"scratch__{tag}" / "fold_all")
        curve = [r["ema_dice"] for r in history]
    else:
        model = folder / "model"
        bench.nnunet("train", str(DATASETS[run.kind][0]), str(run.seed), str(bench.epochs), str(bench.iters),
                     str(bench.val_iters), str(model))
        bench.nnunet("predict", str(model), str(dataset / "imagesTs"), str(predictions))
        curve = json.loads((model / "curve.json").read_text())["ema_dice"]
    scores = score(dataset / "labelsTs", predictions)
    record = {"run": run.__dict__, "cases": scores, "curve": curve, "wall_s": round(time.perf_counter() - started, 1)}
    tmp = folder / "scores.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(folder / "scores.json")
    return folder


def score(references: Path, predictions: Path) -> dict[str, dict[str, float]]:
    """covtransfer's DSC and NSD (label 1, 3 mm) for every reference case."""
    scores = {}
    for reference in sorted(references.glob("*.nii.gz")):
        case = reference.name[:-len(".nii.gz")]
        rows, _, _ = evaluate_case(case, reference, predictions / reference.name, [1], TOLERANCE_MM)
        scores[case] = {"dice": float(rows[0]["dice"]), "nsd": float(rows[0]["nsd"])}
    return scores


def check_against_surface_distance(bench: Bench, folder: Path, kind: str) -> float:
    """Largest |covtransfer − surface-distance| over the run's cases and both metrics."""
    out = folder / "surface_distance.json"
    if not out.is_file():
        bench.nnunet("surface", str(bench.dataset_folder(kind) / "labelsTs"), str(folder / "predictions"),
                     str(TOLERANCE_MM), str(out))
    theirs = json.loads(out.read_text())
    ours = json.loads((folder / "scores.json").read_text())["cases"]
    return max(abs(ours[c][m] - theirs[c][m]) for c in ours for m in ("dice", "nsd"))


def takeoff_epoch(curve: list) -> int | None:
    """The first epoch whose EMA pseudo Dice exceeds ``TAKEOFF_DICE``; None if the run never took off."""
    return next((epoch for epoch, value in enumerate(curve) if value is not None and value > TAKEOFF_DICE), None)


def _seed_means(record: dict) -> tuple[float, float]:
    """The run's mean test DSC and NSD, in percent."""
    cases = record["cases"].values()
    return 100 * float(np.mean([c["dice"] for c in cases])), 100 * float(np.mean([c["nsd"] for c in cases]))


def summarise(records: list[dict]) -> str:
    """Markdown: per dataset and tool mean ± sd and take-off, paired per-case Δ (all seeds, took-off seeds), wall time."""
    by_key: dict[tuple[str, str], dict[int, dict]] = {}
    for record in records:
        by_key.setdefault((record["run"]["kind"], record["run"]["tool"]), {})[record["run"]["seed"]] = record
    lines = ["| dataset | tool | seeds | test DSC % | NSD@3 mm % | per seed DSC | take-off epoch | wall min/run |",
             "|---|---|---|---|---|---|---|---|"]
    for (dataset, tool), runs in sorted(by_key.items()):
        means = [_seed_means(runs[seed]) for seed in sorted(runs)]
        takeoff = [takeoff_epoch(runs[seed]["curve"]) for seed in sorted(runs)]
        walls = [runs[seed].get("wall_s") for seed in sorted(runs)]
        wall = f"{np.mean(walls) / 60:.1f}" if None not in walls else "n/a"
        lines.append(f"| {dataset} | {tool} | {len(runs)} | {_mean_sd([m[0] for m in means])} | "
                     f"{_mean_sd([m[1] for m in means])} | {', '.join(f'{m[0]:.1f}' for m in means)} | "
                     f"{', '.join('never' if t is None else str(t) for t in takeoff)} | {wall} |")
    lines += ["", "Paired per-case difference covtransfer − nnU-Net, each case's score averaged over the seeds named "
              "(points; bootstrap 95 % CI of the mean, Wilcoxon signed-rank p):", "",
              "| dataset | seeds | cases | Δ DSC [95 % CI] | p | Δ NSD [95 % CI] | p | cases better / worse (DSC) |",
              "|---|---|---|---|---|---|---|---|"]
    for dataset in sorted({d for d, _ in by_key}):
        if not all((dataset, tool) in by_key for tool in TOOLS):
            continue
        runs = {tool: by_key[(dataset, tool)] for tool in TOOLS}
        common = sorted(set(runs["covtransfer"]) & set(runs["nnunet"]))
        took_off = [s for s in common if all(takeoff_epoch(runs[t][s]["curve"]) is not None for t in TOOLS)]
        for label, seeds in (("all", common), ("both took off", took_off)):
            lines.append(_paired_row(dataset, label, seeds, runs))
    total = sum(r.get("wall_s") or 0.0 for r in records)
    lines += ["", f"Wall time of the {len(records)} runs: {total / 3600:.1f} h of run time in all (runs in parallel "
              "overlap)."]
    return "\n".join(lines)


def _paired_row(dataset: str, label: str, seeds: list[int], runs: dict[str, dict[int, dict]]) -> str:
    """One row of the paired table: Δ per case over ``seeds``, its CI and p, for DSC and NSD."""
    if not seeds:
        return f"| {dataset} | {label}: none | | | | | | |"
    per_tool = {tool: _case_means([runs[tool][s] for s in seeds]) for tool in TOOLS}
    cases = sorted(per_tool["covtransfer"])
    cells = []
    for metric in ("dice", "nsd"):
        diff = np.array([100 * (per_tool["covtransfer"][c][metric] - per_tool["nnunet"][c][metric]) for c in cases])
        low, high = bootstrap_ci(diff)
        cells.append(f"{diff.mean():+.1f} [{low:+.1f}, {high:+.1f}] | {wilcoxon_p(diff):.3f}")
        if metric == "dice":
            better = int(np.sum(diff > 0))
    return (f"| {dataset} | {label}: {', '.join(map(str, seeds))} | {len(cases)} | {cells[0]} | {cells[1]} | "
            f"{better} / {len(cases) - better} |")


def _case_means(runs: list[dict]) -> dict[str, dict[str, float]]:
    cases = runs[0]["cases"]
    return {c: {m: float(np.mean([r["cases"][c][m] for r in runs])) for m in ("dice", "nsd")} for c in cases}


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{np.mean(values):.1f} ± {sd:.1f}"


def plot_curves(records: list[dict], path: Path) -> None:
    """EMA pseudo Dice per epoch of every run, one panel per dataset, one colour per tool."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = sorted({r["run"]["kind"] for r in records})
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4), squeeze=False)
    colours = {"covtransfer": "tab:blue", "nnunet": "tab:orange"}
    for ax, kind in zip(axes[0], kinds):
        for record in records:
            if record["run"]["kind"] == kind:
                curve = [np.nan if v is None else v for v in record["curve"]]
                ax.plot(curve, color=colours[record["run"]["tool"]], alpha=0.8,
                        label=f"{record['run']['tool']} seed {record['run']['seed']}")
        ax.set(title=kind, xlabel="epoch", ylabel="EMA pseudo Dice", ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("learning_benchmark"), help="working folder")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--data-round", type=int, default=0,
                        help="which draw of FRESH_DATA_SEEDS generates the datasets (a new round is unseen data)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--iters-per-epoch", type=int, default=25)
    parser.add_argument("--val-iters", type=int, default=5)
    parser.add_argument("--nnunet-venv", type=Path, help="virtual environment with nnunetv2==2.8.1 and surface-distance")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="torch threads per run (default: half the cores)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: summarise the runs of --work that have finished")
    args = parser.parse_args(argv)
    bench = Bench(args)
    runs = [Run(tool, kind, seed) for kind in args.datasets for seed in args.seeds for tool in args.tools]
    if args.report_only:
        folders = {run: bench.work / "runs" / run.name for run in runs}
        runs = [run for run in runs if (folders[run] / "scores.json").is_file()]
    else:
        for kind in args.datasets:
            prepare(bench, kind, "nnunet" in args.tools)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            folders = dict(zip(runs, pool.map(lambda run: train_and_predict(bench, run), runs)))
    records = [json.loads((folders[run] / "scores.json").read_text()) for run in runs]
    for run, record in zip(runs, records):  # scored again, so that every run uses today's evaluator
        record["cases"] = score(bench.dataset_folder(run.kind) / "labelsTs", folders[run] / "predictions")
        (folders[run] / "scores.json").write_text(json.dumps(record, indent=1))
    if bench.nnunet_python is not None:
        worst = max(check_against_surface_distance(bench, folders[run], run.kind) for run in runs)
        print(f"covtransfer's evaluator vs surface-distance: largest difference {worst:.2e}")
    report = summarise(records)
    print(report)
    (bench.work / "learning.md").write_text(report + "\n")
    (bench.work / "learning.json").write_text(json.dumps(records, indent=1))
    plot_curves(records, bench.work / "learning_curves.png")


if __name__ == "__main__":
    main()
