"""Side-by-side learning benchmark: covtransfer and nnU-Net 2.8.1 trained at the same budget on the same data.

For each synthetic dataset (``covid``: 4 training and 8 test cases; ``tumor``: 8 and 4; size ``small``) it:

1. writes the raw dataset and plans and preprocesses it with covtransfer (``--preset cpu``);
2. plans it with nnU-Net in a separate virtual environment and overwrites nnU-Net's ``3d_fullres`` with covtransfer's
   spacing, transpose, patch, batch and topology, then preprocesses it with nnU-Net (``learning_nnunet.py``);
3. trains both tools on every training case (fold ``all``) for each seed, fp32 on the CPU, with the same epochs,
   iterations per epoch and validation iterations; nnU-Net through its own trainer class, only the schedule changed;
4. predicts the test cases without mirroring and scores both tools with covtransfer's evaluator (DSC, NSD at 3 mm),
   cross-checked against DeepMind's ``surface-distance`` in the nnU-Net environment.

Outputs under ``--work``: ``learning.json`` (every run, per case), ``learning.md`` (mean ± sd across seeds, paired
per-case differences) and ``learning_curves.png`` (EMA pseudo Dice per epoch of every run). Runs are resumable: a
finished run (``runs/<tool>_<dataset>_<seed>/scores.json``) is not repeated.

Usage::

    python -m venv /tmp/nnunet && /tmp/nnunet/bin/pip install torch==2.13.0 nnunetv2==2.8.1 surface-distance
    python benchmarks/learning.py --nnunet-venv /tmp/nnunet --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covtransfer.config import Roots
from covtransfer.datasets.synthetic import make_synthetic_dataset
from covtransfer.evaluation.evaluate import evaluate_case
from covtransfer.workflow.plan_and_preprocess import plan_and_preprocess
from covtransfer.training.api import read_metrics

HERE = Path(__file__).resolve().parent
DATASETS = {"covid": (801, 4, 8), "tumor": (802, 8, 4)}  # kind: (dataset id, training cases, test cases)
TOOLS = ("covtransfer", "nnunet")
TOLERANCE_MM = 3.0


@dataclass(frozen=True)
class Run:
    """One training run: which tool, on which dataset, with which seed."""

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

    def dataset_folder(self, kind: str) -> Path:
        dataset_id = DATASETS[kind][0]
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


def prepare(bench: Bench, kind: str, with_nnunet: bool) -> None:
    """Raw data, covtransfer's plans and preprocessing, and (optionally) nnU-Net's preprocessing with those plans."""
    dataset_id, n_train, n_test = DATASETS[kind]
    if not any(bench.roots.raw.glob(f"Dataset{dataset_id:03d}_*")):
        make_synthetic_dataset(kind, dataset_id, n_train, n_test=n_test, size="small", seed=0,
                               raw_root=bench.roots.raw)
    name = bench.dataset_folder(kind).name
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
    record = {"run": run.__dict__, "cases": scores, "curve": curve}
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


def summarise(records: list[dict]) -> str:
    """Markdown: mean ± sd across seeds per tool and dataset, then the paired per-case differences."""
    lines = ["| dataset | tool | seeds | test DSC % | NSD@3 mm % | per seed DSC |", "|---|---|---|---|---|---|"]
    by_key: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        by_key.setdefault((record["run"]["kind"], record["run"]["tool"]), []).append(record)
    for (kind, tool), runs in sorted(by_key.items()):
        dsc = [100 * np.mean([c["dice"] for c in r["cases"].values()]) for r in runs]
        nsd = [100 * np.mean([c["nsd"] for c in r["cases"].values()]) for r in runs]
        lines.append(f"| {kind} | {tool} | {len(runs)} | {_mean_sd(dsc)} | {_mean_sd(nsd)} | "
                     f"{', '.join(f'{v:.1f}' for v in dsc)} |")
    lines += ["", "Paired per-case difference covtransfer − nnU-Net (each case's score averaged over seeds):", "",
              "| dataset | cases | Δ DSC % | Δ NSD % | cases better / worse (DSC) |", "|---|---|---|---|---|"]
    for kind in sorted({k for k, _ in by_key}):
        if not all((kind, tool) in by_key for tool in TOOLS):
            continue
        per_tool = {tool: _case_means(by_key[(kind, tool)]) for tool in TOOLS}
        cases = sorted(per_tool["covtransfer"])
        diff = {m: [100 * (per_tool["covtransfer"][c][m] - per_tool["nnunet"][c][m]) for c in cases]
                for m in ("dice", "nsd")}
        better = sum(d > 0 for d in diff["dice"])
        lines.append(f"| {kind} | {len(cases)} | {_mean_sd(diff['dice'])} | {_mean_sd(diff['nsd'])} | "
                     f"{better} / {len(cases) - better} |")
    return "\n".join(lines)


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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
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
