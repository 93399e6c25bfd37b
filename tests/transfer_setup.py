"""The datasets, multi-lesion model and strategy runs the transfer tests share, built once per test module:
a target, two sources planned with the target's plans, and a dataset of another topology.

Import its fixtures (``roots``, ``pretrained``, ``source``, ``runs``) into a test module to use them there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from covtransfer.config import Roots
from covtransfer.network.checkpoint import Checkpoint
from covtransfer.network.checkpoint_io import load_checkpoint
from covtransfer.plans import Plans
from covtransfer.workflow.plan_and_preprocess import plan_and_preprocess
from covtransfer.training.api import train
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import Trainer, TrainingSettings, TrainingTask
from tiny_data import FINGERPRINT_VOXELS, preprocessed_roots, write_raw_dataset

TARGET, SRC1, SRC2, OTHER = 1, 2, 3, 4
TARGET_NAME, SRC1_NAME, SRC2_NAME = "Dataset001_Covid", "Dataset002_Tumour", "Dataset003_Effusion"
CONFIG = "3d_fullres"
TRANSFER = ("continual", "finetune", "encoder", "hybrid")


def settings(epochs: int = 1, iters: int = 1, val_iters: int = 0, **extra) -> TrainingSettings:
    """Seconds-long runs on the CPU; no final validation unless asked."""
    options = {"device": "cpu", "save_every": 1000, "final_validation": False, "validation_tta": "off", **extra}
    return TrainingSettings(epochs=epochs, iters_per_epoch=iters, val_iters=val_iters, **options)


def results_tree(roots: Roots) -> list[str]:
    return sorted(str(p.relative_to(roots.results)) for p in roots.results.rglob("*")) \
        if roots.results.is_dir() else []


def names(state: dict, prefix: str) -> list[str]:
    return sorted(n for n in state if n.startswith(prefix + "."))


def task_of(roots: Roots, dataset: str) -> TrainingTask:
    """A training task over every preprocessed case of ``dataset`` (enough for trainers that never call ``fit``)."""
    folder = roots.preprocessed / dataset
    plans = Plans.load(folder / "plans.json")
    cases = sorted(p.stem for p in (folder / plans.configuration(CONFIG).data_identifier).glob("*.json"))
    return TrainingTask(dataset, folder, plans, cases, cases)


def random_batch(plans: Plans, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    patch = plans.configuration(CONFIG).patch_size
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 1, *patch, generator=generator)
    return images, (images > 0.5).long()


def target_trainer(roots: Roots, strategy, checkpoint: Checkpoint | None, folder: Path,
                   run_settings: TrainingSettings | None = None) -> Trainer:
    return Trainer([task_of(roots, TARGET_NAME)], CONFIG, strategy, folder, run_settings or settings(), checkpoint,
                   "pretrained.pt")


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> Roots:
    """A target, two sources with the target's plans, and a dataset planned on its own (other topology)."""
    base = tmp_path_factory.mktemp("transfer")
    roots = preprocessed_roots(base, {TARGET: ("Covid", 4, 1), SRC1: ("Tumour", 2, 0), SRC2: ("Effusion", 2, 0)},
                               plans_from=TARGET)
    write_raw_dataset(roots.raw, OTHER, "Other", 2, seed=OTHER, shape=(12, 40, 24))
    plan_and_preprocess([OTHER], roots, preset="cpu", num_processes=1, fingerprint_voxels=FINGERPRINT_VOXELS)
    return roots


@pytest.fixture(scope="module")
def pretrained(roots) -> Path:
    """The multi-lesion model: 2 epochs × 2 iterations on both sources, with final validation of each source."""
    return train([SRC1, SRC2], make_strategy("pretrain"), "all", roots,
                 settings(epochs=2, iters=2, val_iters=1, final_validation=True))


@pytest.fixture(scope="module")
def source(pretrained) -> Checkpoint:
    return load_checkpoint(pretrained / "checkpoint_final.pt")


@pytest.fixture(scope="module")
def runs(roots, pretrained) -> dict[str, Path]:
    """One iteration of every strategy on the target's fold 0, transfer strategies from the multi-lesion model."""
    return {name: train([TARGET], make_strategy(name), 0, roots, settings(),
                        pretrained=None if name == "scratch" else pretrained)
            for name in ("scratch", *TRANSFER)}
