"""The demo: the whole transfer study on synthetic chest CTs, small enough for a laptop CPU.

It writes three synthetic datasets (a COVID-19-like target with 4 training and 8 test cases, tumour and effusion
sources), plans the target with the ``cpu`` preset, pre-trains one multi-lesion model on the sources, trains the
five strategies on the 4 target cases, predicts and scores the 8 test cases, and prints the results table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from covtransfer.config import Roots, find_dataset
from covtransfer.datasets.synthetic import make_synthetic_dataset
from covtransfer.errors import CovtransferError
from covtransfer.experiments.report import results_table
from covtransfer.experiments.study import DEFAULT_STRATEGIES, Study, StudySpec
from covtransfer.training.trainer import TrainingSettings

TARGET, TUMOR, EFFUSION = 501, 502, 503
# foreground samples for the fingerprints: a tenth of nnU-Net's 1e8 keeps the demo's memory and time down
DEMO_FINGERPRINT_VOXELS = 10 ** 7


@dataclass(frozen=True)
class DemoScale:
    """How big the demo is: data size, planning preset and training length of pre-training and transfer."""

    size: str
    preset: str | None
    n_source_cases: int
    pretrain_epochs: int
    epochs: int
    iters_per_epoch: int
    val_iters: int


CPU_SCALE = DemoScale(size="small", preset="cpu", n_source_cases=8, pretrain_epochs=36, epochs=24,
                      iters_per_epoch=24, val_iters=2)
GPU_SCALE = DemoScale(size="small", preset=None, n_source_cases=16, pretrain_epochs=50, epochs=50,
                      iters_per_epoch=50, val_iters=10)


def make_demo_data(roots: Roots, scale: DemoScale, seed: int = 0) -> None:
    """Write the three synthetic datasets unless they exist already."""
    for kind, dataset_id, n_train, n_test in (("covid", TARGET, 4, 8), ("tumor", TUMOR, scale.n_source_cases, 0),
                                              ("effusion", EFFUSION, scale.n_source_cases, 0)):
        try:
            find_dataset(roots.raw, dataset_id)
        except CovtransferError:
            make_synthetic_dataset(kind, dataset_id, n_train, n_test=n_test, size=scale.size, seed=seed,
                                   raw_root=roots.raw)


def run_demo(output: Path, device: str = "auto", seed: int = 0) -> tuple[list[dict], Path, float]:
    """Run the demo into ``output``; returns the results rows, the study folder and the run time in seconds."""
    start = time.perf_counter()
    output = Path(output)
    roots = Roots(output / "raw", output / "preprocessed", output / "results")
    on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    scale = GPU_SCALE if on_gpu else CPU_SCALE
    make_demo_data(roots, scale, seed)
    common = dict(iters_per_epoch=scale.iters_per_epoch, val_iters=scale.val_iters, save_every=5, device=device,
                  seed=seed + 12345, amp="on", final_validation=False)
    settings = TrainingSettings(epochs=scale.epochs, **common)
    pretrain_settings = TrainingSettings(epochs=scale.pretrain_epochs, **common)
    spec = StudySpec(target=str(TARGET), sources=[str(TUMOR), str(EFFUSION)], strategies=list(DEFAULT_STRATEGIES),
                     folds=["all"], pretrain="multi", settings=settings, pretrain_settings=pretrain_settings,
                     preset=scale.preset, fingerprint_voxels=DEMO_FINGERPRINT_VOXELS, tta=on_gpu)
    study_folder = output / "study"
    rows = Study(spec, roots, study_folder).run()
    return rows, study_folder, time.perf_counter() - start


def print_demo_summary(rows: list[dict], study_folder: Path, seconds: float) -> None:
    """The results table and where the plots are."""
    print("\n" + results_table(rows) + "\n")
    print(f"study outputs in {study_folder}:")
    for path in sorted(study_folder.glob("*.png")) + [study_folder / "results.md", study_folder / "results.csv"]:
        print(f"  {path}")
    print(f"demo finished in {seconds / 60:.1f} min")
