"""The demo: the whole transfer study on synthetic chest CTs, small enough for a laptop CPU.

It writes three synthetic datasets (a COVID-19-like target with 4 training and 8 test cases, tumour and effusion
sources), plans the target with the ``cpu-small`` preset, pre-trains one multi-lesion model on the sources, trains
the five strategies on the 4 target cases, predicts and scores the 8 test cases, and prints the results table, the
paired comparison with scratch and the pre-training's final EMA per source. On a GPU it runs longer (epochs of 250
iterations) over 3 seeds and adds the mean ± sd across seeds. Seed N lives in ``<output>/seed_N/``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from covtransfer.config import Roots, find_dataset
from covtransfer.datasets.synthetic import make_synthetic_dataset
from covtransfer.devices import resolve_device
from covtransfer.errors import CovtransferError
from covtransfer.experiments.burden_table import burden_error_line
from covtransfer.experiments.launch_local import run_study_local
from covtransfer.experiments.report import summary_text
from covtransfer.experiments.report_html import REPORT_FILE
from covtransfer.experiments.seeds import SeedRun, seeds_summary_text, write_seeds_report
from covtransfer.experiments.spec import DEFAULT_STRATEGIES, StudySpec
from covtransfer.experiments.study import Study
from covtransfer.training.trainer import TrainingSettings

TARGET, TUMOR, EFFUSION = 501, 502, 503
# foreground samples for the fingerprints: a tenth of nnU-Net's 1e8 keeps the demo's memory and time down
DEMO_FINGERPRINT_VOXELS = 10 ** 7


@dataclass(frozen=True)
class DemoScale:
    """How big the demo is: data, planning preset, training length, target cases, seeds, test mirroring, mixed
    precision (``--amp`` of covtransfer_train), preprocessing processes (None: one per core), fingerprint samples,
    and the pre-training's share of batches per source (tumour, effusion)."""

    size: str
    preset: str | None
    n_source_cases: int
    pretrain_epochs: int
    epochs: int
    iters_per_epoch: int
    val_iters: int
    n_target_train: int = 4
    n_target_test: int = 8
    seeds: int = 1
    tta: bool = False
    amp: str = "auto"
    num_processes: int | None = None
    fingerprint_voxels: int = DEMO_FINGERPRINT_VOXELS
    source_weights: tuple[float, float] | None = None


# fp32 (bf16 autocast is over ten times slower than fp32 on CPUs without native bf16, such as AVX2-only ones); the
# cpu-small preset (patch 20 x 40 x 48: a step 2.5 times cheaper than the cpu preset's 24 x 56 x 56, and scratch
# learnt at least as well); 4,000 pre-training iterations, half per source, and 4,000 per strategy. Measured on
# seeds 0-2 (documentation/study.md): at 1,000 per strategy scratch and continual ended near 50 % test DSC and
# finetune at 36-40 %; at 2,000 scratch reached only 43 % on seed 2; at 4,000 after 2,000 pre-training iterations
# every model on seeds 0 and 1 passed 50 % but finetune on seed 1 (48 %), which 4,000 pre-training iterations
# lifted to 53.5 % (seed 2: 51.4 -> 53.6 %). Pre-training runs beside scratch, whose length it now matches, so the
# longer pre-training cost about 6 minutes of wall time with two jobs at a time (seed 0: 44.9 -> 50.8 min).
CPU_SCALE = DemoScale(size="small", preset="cpu-small", n_source_cases=8, pretrain_epochs=160, epochs=160,
                      iters_per_epoch=25, val_iters=2, source_weights=(1.0, 1.0))
# nnU-Net-like epochs of 250 iterations: 10,000 pre-training and 5,000 target iterations per model, 3 seeds
GPU_SCALE = DemoScale(size="small", preset=None, n_source_cases=16, pretrain_epochs=40, epochs=20,
                      iters_per_epoch=250, val_iters=50, seeds=3, tta=True)
# the pipeline end to end in seconds, for tests and a first try: nothing is learnt at this length
SMOKE_SCALE = DemoScale(size="tiny", preset="cpu", n_source_cases=2, pretrain_epochs=1, epochs=1,
                        iters_per_epoch=2, val_iters=1, n_target_test=2, amp="off", num_processes=1,
                        fingerprint_voxels=10 ** 5)
SCALES = {"cpu": CPU_SCALE, "gpu": GPU_SCALE, "smoke": SMOKE_SCALE}


def choose_scale(name: str, device: torch.device) -> DemoScale:
    """The named scale; ``auto`` is ``gpu`` on a CUDA device, else ``cpu``."""
    if name == "auto":
        return GPU_SCALE if device.type == "cuda" else CPU_SCALE
    if name not in SCALES:
        raise CovtransferError(f"--scale {name!r}: use auto, {', '.join(SCALES)}")
    return SCALES[name]


def make_demo_data(roots: Roots, scale: DemoScale, seed: int = 0) -> None:
    """Write the three synthetic datasets unless they exist already (then they must be this scale's and seed's)."""
    for kind, dataset_id, n_train, n_test in (("covid", TARGET, scale.n_target_train, scale.n_target_test),
                                              ("tumor", TUMOR, scale.n_source_cases, 0),
                                              ("effusion", EFFUSION, scale.n_source_cases, 0)):
        try:
            folder = find_dataset(roots.raw, dataset_id)
        except CovtransferError:
            make_synthetic_dataset(kind, dataset_id, n_train, n_test=n_test, size=scale.size, seed=seed,
                                   raw_root=roots.raw)
            continue
        wanted = {"size": scale.size, "seed": seed, "training cases": n_train, "test cases": n_test}
        found = _synthetic_record(folder)
        if found != wanted:
            raise CovtransferError(f"{folder}: synthetic data of another demo run ({_describe(found)}; this run needs "
                                   f"{_describe(wanted)}); choose another output folder (-o) or delete this one")


def _synthetic_record(folder: Path) -> dict:
    try:
        info = json.loads((folder / "dataset.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    synthetic = info.get("synthetic") or {}
    return {"size": synthetic.get("size"), "seed": synthetic.get("seed"), "training cases": info.get("numTraining"),
            "test cases": info.get("numTest", 0)}


def _describe(record: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in record.items()) or "no synthetic record"


def demo_spec(scale: DemoScale, device: torch.device, seed: int, strategies: list[str] | None = None) -> StudySpec:
    """The study the demo runs for one seed (data seed ``seed``, training seed ``seed + 12345``)."""
    common = dict(iters_per_epoch=scale.iters_per_epoch, val_iters=scale.val_iters, save_every=5, device=str(device),
                  seed=seed + 12345, amp=scale.amp, final_validation=False)
    chosen = list(DEFAULT_STRATEGIES if strategies is None else strategies)
    return StudySpec(target=str(TARGET), sources=[str(TUMOR), str(EFFUSION)], strategies=chosen, folds=["all"],
                     pretrain="multi",
                     settings=TrainingSettings(epochs=scale.epochs, **common),
                     pretrain_settings=TrainingSettings(epochs=scale.pretrain_epochs, **common,
                                                        source_weights=list(scale.source_weights)
                                                        if scale.source_weights else None),
                     preset=scale.preset, fingerprint_voxels=scale.fingerprint_voxels, tta=scale.tta,
                     num_processes=scale.num_processes)


@dataclass
class DemoResult:
    """What a demo run produced: one study per seed, the across-seeds folder (several seeds), the run time."""

    runs: list[SeedRun]
    output: Path
    across_seeds: Path | None
    seconds: float


def default_parallel(device: torch.device) -> int:
    """Jobs the demo runs at once: on a CPU one per core, at most 4 (the graph's widest point: the four transfer
    strategies), each job with its share of the cores; on a GPU one (every job wants the whole GPU)."""
    return 1 if device.type == "cuda" else max(1, min(4, os.cpu_count() or 1))


def run_demo(output: Path, device: torch.device | str = "auto", seed: int = 0, scale: str | DemoScale = "auto",
             n_seeds: int | None = None, strategies: list[str] | None = None,
             parallel: int | None = None) -> DemoResult:
    """Run the demo into ``output`` for seeds ``seed … seed + n_seeds − 1`` (default: the scale's count).

    ``parallel`` jobs run at once as separate processes (``--launcher local``, logs in ``study/logs``; default
    :func:`default_parallel`); 1 runs every job in this process, one after another.
    """
    start = time.perf_counter()
    output = Path(output)
    device = resolve_device(device)
    scale = scale if isinstance(scale, DemoScale) else choose_scale(scale, device)
    count = scale.seeds if n_seeds is None else n_seeds
    if count < 1:
        raise CovtransferError(f"--seeds {count}: run at least one seed")
    parallel = default_parallel(device) if parallel is None else parallel
    if parallel < 1:
        raise CovtransferError(f"--parallel {parallel}: run at least one job at a time")
    seeds = [seed + i for i in range(count)]
    studies = {s: Study(demo_spec(scale, device, s, strategies), _roots(output / f"seed_{s}"),
                        output / f"seed_{s}" / "study") for s in seeds}
    runs = []
    for s, study in studies.items():
        make_demo_data(study.roots, scale, s)
        rows = run_study_local(study, [None] * parallel) if parallel > 1 else study.run()
        runs.append(SeedRun(s, rows, study.paired, study.pretraining_rows, study.output))
    across = None
    if len(runs) > 1:
        across = output / "across_seeds"
        write_seeds_report(across, runs)
    return DemoResult(runs, output, across, time.perf_counter() - start)


def _roots(folder: Path) -> Roots:
    return Roots(folder / "raw", folder / "preprocessed", folder / "results")


def print_demo_summary(result: DemoResult) -> None:
    """Each seed's tables, the across-seeds tables (several seeds), and where the outputs are."""
    for run in result.runs:
        print(f"\n# seed {run.seed}\n\n" + summary_text(run.rows, run.paired, run.pretraining))
        print(burden_error_line(run.folder))
    if result.across_seeds is not None:
        print("\n# across seeds\n\n" + seeds_summary_text(result.runs))
    print("outputs:")
    for run in result.runs:
        for path in sorted(run.folder.glob("*.png")) + [run.folder / name for name in
                                                         ("results.md", "results.csv", "pretraining.csv",
                                                          "burden.csv")]:
            print(f"  {path}")
    if result.across_seeds is not None:
        print(f"  {result.across_seeds / 'results.md'}")
    for run in result.runs:
        print(f"report: {run.folder / REPORT_FILE}")
    print(f"demo finished in {result.seconds / 60:.1f} min")
