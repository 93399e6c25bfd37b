"""Side-by-side learning benchmark: covtransfer and nnU-Net 2.8.1 trained at the same budget on the same data.

Four synthetic datasets, each drawn with a generator seed the script takes from a fixed list (``FRESH_DATA_SEEDS``,
never tuned on; ``--data-round`` moves to the next unseen draw): ``covid`` (4 training, 8 test cases), ``tumor``
(8 and 4), ``effusion`` (4 and 8), all of size ``small``, and ``covid-thick`` (4 and 8) with 5–7 mm slices. For each:

1. writes the raw dataset and plans and preprocesses it with covtransfer (``--preset cpu``);
2. plans it with nnU-Net in a separate virtual environment and overwrites nnU-Net's ``3d_fullres`` with covtransfer's
   spacing, transpose, patch, batch and topology, then preprocesses it with nnU-Net (``learning_nnunet.py``);
3. trains three arms on every training case (fold ``all``) for each seed, fp32 on the CPU, with the same epochs,
   iterations per epoch and validation iterations: covtransfer with its heads at the foreground prior
   (``--head-init prior``),
   covtransfer with nnU-Net's zero-bias heads (``--head-init zero``), and nnU-Net through its own trainer class,
   only the schedule changed;
4. predicts the test cases without mirroring and scores every arm with covtransfer's evaluator (DSC, NSD at 3 mm),
   cross-checked against DeepMind's ``surface-distance`` in the nnU-Net environment.

Each finished run writes ``<tool>_<init>_<dataset>_<seed>.json`` into ``--results`` (``benchmarks/results/learning``
by default; ``learning_runs.py``), and ``--commit`` commits it at once, so the benchmark grows in slices that survive
the session that ran them. A run whose file is there is not trained again (nnU-Net's runs are made once and kept); a
covtransfer run made by an older training engine is stale and trained again, and one predicted by an older export is
predicted again from its kept model (``--work`` keeps covtransfer's models). ``--budget-minutes`` starts no run that
the wall times of earlier runs say cannot finish in time. The report (``learning.md`` and ``learning_curves.png``
beside the run files; ``learning_report.py``) is written from whatever runs are there and names the missing ones.

Usage::

    python -m venv /tmp/nnunet && /tmp/nnunet/bin/pip install torch==2.13.0 nnunetv2==2.8.1 surface-distance
    python benchmarks/learning.py --nnunet-venv /tmp/nnunet --jobs 2 --threads 1 --budget-minutes 90 --commit
    python benchmarks/learning.py --report-only                                  # the report from the run files
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from covtransfer.config import Roots
from covtransfer.datasets.synthetic import make_synthetic_dataset
from covtransfer.evaluation.evaluate import evaluate_case
from covtransfer.inference import EXPORT_VERSION
from covtransfer.training import ENGINE_VERSION
from covtransfer.training.api import read_metrics
from covtransfer.workflow.plan_and_preprocess import plan_and_preprocess
from learning_report import plot_curves, summarise
from learning_runs import ARMS, RESULTS, Run, commit_file, estimated_minutes, git_commit, is_stale, load_records, \
    make_record, only_export_stale, write_record

HERE = Path(__file__).resolve().parent
NNUNET_ENGINE = "nnunetv2 2.8.1"


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
TOLERANCE_MM = 3.0


def data_seed(name: str, data_round: int) -> int:
    """The generator seed of dataset ``name`` in round ``data_round`` of ``FRESH_DATA_SEEDS``."""
    index = data_round * len(DATASETS) + list(DATASETS).index(name)
    if index >= len(FRESH_DATA_SEEDS):
        raise SystemExit(f"--data-round {data_round}: FRESH_DATA_SEEDS holds {len(FRESH_DATA_SEEDS) // len(DATASETS)}"
                         " rounds")
    return FRESH_DATA_SEEDS[index]


def raw_dataset_folder(raw: Path, name: str) -> Path:
    """The raw folder of benchmark dataset ``name`` (a key of ``DATASETS``) under the raw root ``raw``."""
    return next(raw.glob(f"Dataset{DATASETS[name].dataset_id:03d}_*"))


def nnunet_env(work: Path, results: Path, threads: int, augmentation_workers: int) -> dict:
    """The environment for nnU-Net's scripts on ``work``'s raw data and nnU-Net-preprocessed copy."""
    return dict(os.environ, nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "nnunet" / "preprocessed"),
                nnUNet_results=str(results), nnUNet_n_proc_DA=str(augmentation_workers), OMP_NUM_THREADS=str(threads))


class Bench:
    """Paths, schedule and environments shared by every run."""

    def __init__(self, args: argparse.Namespace):
        self.work = args.work.resolve()
        self.roots = Roots(self.work / "raw", self.work / "preprocessed", self.work / "results")
        self.nnunet_python = args.nnunet_venv.resolve() / "bin" / "python" if args.nnunet_venv else None
        self.epochs, self.iters, self.val_iters = args.epochs, args.iters_per_epoch, args.val_iters
        self.threads = args.threads
        self.data_round = args.data_round
        self.results = args.results.resolve()
        self.protocol = {"epochs": self.epochs, "iters_per_epoch": self.iters, "val_iters": self.val_iters,
                         "data_round": self.data_round}

    def dataset_folder(self, name: str) -> Path:
        return raw_dataset_folder(self.roots.raw, name)

    def nnunet_env(self) -> dict:
        return dict(nnunet_env(self.work, self.work / "nnunet" / "results", self.threads, 1), nnUNet_compile="false")

    def nnunet(self, *args: str) -> None:
        if self.nnunet_python is None:
            raise SystemExit("nnU-Net runs need --nnunet-venv")
        subprocess.run([str(self.nnunet_python), str(HERE / "learning_nnunet.py"), *args], check=True,
                       env=self.nnunet_env())

    def covtransfer(self, command: str, *args: str) -> None:
        """Run covtransfer's console script ``command`` on the benchmark's roots, with the run's thread count."""
        roots = ["--raw", str(self.roots.raw), "--preprocessed", str(self.roots.preprocessed),
                 "--results", str(self.roots.results)]
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
        subprocess.run([str(Path(sys.executable).parent / command), *args, *roots], check=True, env=env)


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


def covtransfer_tag(run: Run) -> str:
    """The ``--tag`` of covtransfer's run: its training results go to ``scratch__<tag>``."""
    return f"learning{run.seed}_{run.init}"


def covtransfer_model(bench: Bench, run: Run) -> Path:
    """The fold folder covtransfer's run trains into (kept in ``--work``)."""
    return bench.roots.results / bench.dataset_folder(run.kind).name / f"scratch__{covtransfer_tag(run)}" / "fold_all"


def predict_covtransfer(bench: Bench, run: Run, predictions: Path) -> None:
    """covtransfer's prediction of the test cases with the run's model, without mirroring."""
    shutil.rmtree(predictions, ignore_errors=True)
    bench.covtransfer("covtransfer_predict", "-i", str(bench.dataset_folder(run.kind) / "imagesTs"), "-o",
                      str(predictions), "-m", str(covtransfer_model(bench, run)), "--no-tta", "--device", "cpu",
                      "--quiet")


def attempt_leftovers(bench: Bench, run: Run) -> list[Path]:
    """The folders an unfinished attempt at ``run`` may have left: its run folder and, for covtransfer, its model
    folder. An nnU-Net run has none of covtransfer's: the zero-bias covtransfer run of its seed has that tag."""
    return [bench.work / "runs" / run.name] + ([covtransfer_model(bench, run).parent] if run.tool == "covtransfer"
                                               else [])


def train_and_predict(bench: Bench, run: Run) -> dict:
    """Train, predict the test cases and score them; returns the run's record (not yet written)."""
    folder = bench.work / "runs" / run.name
    dataset = bench.dataset_folder(run.kind)
    for leftover in attempt_leftovers(bench, run):
        shutil.rmtree(leftover, ignore_errors=True)
    folder.mkdir(parents=True)
    commit, load_at_start = git_commit(), os.getloadavg()[0]
    started = time.perf_counter()
    predictions = folder / "predictions"
    if run.tool == "covtransfer":
        bench.covtransfer("covtransfer_train", "--head-init", run.init, "-d", dataset.name, "-t", "scratch",
                          "-f", "all", "--tag", covtransfer_tag(run), "--epochs", str(bench.epochs),
                          "--iters-per-epoch", str(bench.iters), "--val-iters", str(bench.val_iters),
                          "--seed", str(run.seed), "--device", "cpu", "--amp", "off", "--no-final-validation")
        trained = time.perf_counter()
        predict_covtransfer(bench, run, predictions)
        history = read_metrics(covtransfer_model(bench, run))
        curve, engine = [r["ema_dice"] for r in history], str(ENGINE_VERSION)
    else:
        model = folder / "model"
        bench.nnunet("train", str(DATASETS[run.kind][0]), str(run.seed), str(bench.epochs), str(bench.iters),
                     str(bench.val_iters), str(model))
        trained = time.perf_counter()
        bench.nnunet("predict", str(model), str(dataset / "imagesTs"), str(predictions))
        curve, engine = json.loads((model / "curve.json").read_text())["ema_dice"], NNUNET_ENGINE
    predicted = time.perf_counter()
    cases = score(dataset / "labelsTs", predictions)
    record = make_record(run, cases, curve, time.perf_counter() - started, bench.protocol, engine,
                         commit)
    if run.tool == "covtransfer":
        record["export"] = EXPORT_VERSION
    record["phases_s"] = {"train": round(trained - started, 1), "predict": round(predicted - trained, 1),
                          "score": round(time.perf_counter() - predicted, 1)}
    # the machine's 1-minute load average at the start and end: wall times are comparable only at similar load
    record["load"] = [round(load_at_start, 2), round(os.getloadavg()[0], 2)]
    if bench.nnunet_python is not None:
        record["surface_distance_max_diff"] = check_against_surface_distance(bench, folder, run.kind, cases)
    return record


def predict_again(bench: Bench, run: Run, record: dict) -> dict:
    """A covtransfer run's record with its test cases predicted and scored again by this checkout's export, from the
    model the run trained; the training fields (curve, take-off, training time) stay, the earlier scores are kept
    under ``earlier_export``."""
    folder = bench.work / "runs" / run.name
    started = time.perf_counter()
    predict_covtransfer(bench, run, folder / "predictions")
    predicted = time.perf_counter()
    cases = score(bench.dataset_folder(run.kind) / "labelsTs", folder / "predictions")
    again = {**record, "cases": cases, "export": EXPORT_VERSION,
             "earlier_export": {"export": record.get("export", 1), "cases": record["cases"]},
             "predicted_again": {"commit": git_commit(), "finished": time.strftime("%Y-%m-%d %H:%M"),
                                 "predict_s": round(predicted - started, 1)}}
    if bench.nnunet_python is not None:
        again["surface_distance_max_diff"] = check_against_surface_distance(bench, folder, run.kind, cases)
    return again


def score(references: Path, predictions: Path) -> dict[str, dict[str, float]]:
    """covtransfer's DSC and NSD (label 1, 3 mm) for every reference case."""
    scores = {}
    for reference in sorted(references.glob("*.nii.gz")):
        case = reference.name[:-len(".nii.gz")]
        rows, _, _ = evaluate_case(case, reference, predictions / reference.name, [1], TOLERANCE_MM)
        scores[case] = {"dice": float(rows[0]["dice"]), "nsd": float(rows[0]["nsd"])}
    return scores


def check_against_surface_distance(bench: Bench, folder: Path, kind: str, ours: dict) -> float:
    """Largest |covtransfer − surface-distance| over the run's cases and both metrics."""
    out = folder / "surface_distance.json"
    bench.nnunet("surface", str(bench.dataset_folder(kind) / "labelsTs"), str(folder / "predictions"),
                 str(TOLERANCE_MM), str(out))
    theirs = json.loads(out.read_text())
    return max(abs(ours[c][m] - theirs[c][m]) for c in ours for m in ("dice", "nsd"))


class Scheduler:
    """Runs the pending runs, at most ``jobs`` at a time; starts none the budget cannot fit; writes and commits each."""

    def __init__(self, bench: Bench, records: dict[Run, dict], budget_minutes: float | None, commit: bool):
        self.bench, self.records, self.commit = bench, records, commit
        self.deadline = None if budget_minutes is None else time.monotonic() + 60 * budget_minutes
        self.lock = threading.Lock()
        self.failed: list[Run] = []

    def __call__(self, run: Run) -> None:
        try:
            self._run(run)
        except Exception as exc:  # noqa: BLE001  (one failed run must not stop or hide the others)
            self.failed.append(run)
            print(f"{run.name}: failed ({type(exc).__name__}: {exc}); the next invocation tries it again", flush=True)

    def _run(self, run: Run) -> None:
        earlier = self.records.get(run)
        if earlier is not None and only_export_stale(earlier) and covtransfer_model(self.bench, run).is_dir():
            print(f"{run.name}: predicting again with this checkout's export", flush=True)
            self._finish(run, predict_again(self.bench, run, earlier), "predicted again")
            return
        with self.lock:
            estimate = estimated_minutes(self.records, run.tool)
            if self.deadline is not None and estimate is not None and \
                    time.monotonic() + 60 * estimate > self.deadline:
                print(f"{run.name}: not started, {estimate:.1f} min would end after the budget")
                return
            prepare(self.bench, run.kind, run.tool == "nnunet")
        print(f"{run.name}: started (about {estimate or float('nan'):.1f} min)", flush=True)
        record = train_and_predict(self.bench, run)
        self._finish(run, record, f"done in {record['wall_s'] / 60:.1f} min")

    def _finish(self, run: Run, record: dict, what: str) -> None:
        """Write (and commit) the run's file and say what happened."""
        with self.lock:
            path = write_record(self.bench.results, record)
            self.records[run] = record
            dice = sum(c["dice"] for c in record["cases"].values()) / len(record["cases"])
            print(f"{run.name}: {what}, test DSC {100 * dice:.1f} %", flush=True)
            if self.commit:
                commit_file(path, f"Learning benchmark: {run.name}, {what}, test DSC {100 * dice:.1f} %")


def report(results: Path, records: dict[Run, dict], planned: list[Run]) -> str:
    """Write ``learning.md`` and ``learning_curves.png`` into ``results`` from the current, non-stale runs."""
    stale = {run: r for run, r in records.items() if is_stale(r)}
    current = {run: r for run, r in records.items() if run not in stale}
    text = summarise(current, planned, stale)
    (results / "learning.md").write_text(text + "\n")
    if current:
        plot_curves(current, results / "learning_curves.png")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("learning_benchmark"),
                        help="working folder (datasets, preprocessed data, models; not kept)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="folder of the run files and the report (default: benchmarks/results/learning)")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    parser.add_argument("--arms", nargs="+", choices=[f"{t}_{i}" for t, i in ARMS],
                        default=[f"{t}_{i}" for t, i in ARMS],
                        help="tool and head initialisation of each arm; runs start in this order within a seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--data-round", type=int, default=0,
                        help="which draw of FRESH_DATA_SEEDS generates the datasets (a new round is unseen data)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--iters-per-epoch", type=int, default=25)
    parser.add_argument("--val-iters", type=int, default=5)
    parser.add_argument("--nnunet-venv", type=Path,
                        help="virtual environment with nnunetv2==2.8.1 and surface-distance")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="torch threads per run (default: half the cores)")
    parser.add_argument("--budget-minutes", type=float,
                        help="start no run that cannot end within this many minutes, judged by earlier wall times")
    parser.add_argument("--commit", action="store_true", help="git-commit each run file as soon as it is written")
    parser.add_argument("--report-only", action="store_true", help="train nothing: report the runs that are there")
    args = parser.parse_args(argv)
    bench = Bench(args)
    records = load_records(bench.results, bench.protocol)
    arms = [tuple(arm.split("_")) for arm in args.arms]
    planned = [Run(tool, init, kind, seed) for seed in args.seeds for kind in args.datasets for tool, init in arms]
    pending = [run for run in planned if run not in records or is_stale(records[run])]
    if not args.report_only and pending:
        if any(run.tool == "nnunet" for run in pending) and bench.nnunet_python is None:
            raise SystemExit("nnU-Net runs are pending: pass --nnunet-venv, or leave nnunet_zero out of --arms")
        scheduler = Scheduler(bench, records, args.budget_minutes, args.commit)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(scheduler, pending))
    print(report(bench.results, records, planned))
    if not args.report_only and pending and scheduler.failed:
        raise SystemExit(f"{len(scheduler.failed)} run(s) failed: {', '.join(run.name for run in scheduler.failed)}")


if __name__ == "__main__":
    main()
