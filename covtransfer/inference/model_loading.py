"""Finding checkpoints in run folders and rebuilding the trained networks from them, ready to predict.

A run folder is ``RESULTS/DatasetNNN_Name/<strategy>[__<tag>]/fold_K/`` holding ``checkpoint_{final,best}.pt``. A
checkpoint describes its own network and plans, so no trainer code is needed to rebuild it. The checkpoints of an
ensemble must share plans (one preprocessing per case) and classes (their probabilities are averaged).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from covtransfer.config import find_dataset
from covtransfer.devices import resolve_device
from covtransfer.errors import CovtransferError
from covtransfer.network.build import build_from_checkpoint
from covtransfer.network.checkpoint import Checkpoint
from covtransfer.network.checkpoint_io import load_checkpoint

CHECKPOINT_CHOICES = ("final", "best", "latest")
_FOLD = re.compile(r"fold_(\d+|all)")


def _from_checkpoint(name: str) -> property:
    """A read-only view of one of the held checkpoint's fields."""
    return property(lambda model: getattr(model.checkpoint, name), doc=f"The checkpoint's ``{name}``.")


@dataclass
class LoadedModel:
    """A network rebuilt from a checkpoint, holding the checkpoint (less its weights and optimizer state, which live
    in the network or are not needed) for what prediction and export need to know about it."""

    network: nn.Module
    checkpoint: Checkpoint
    source: Path

    plans = _from_checkpoint("plans")
    configuration_name = _from_checkpoint("configuration_name")
    configuration = _from_checkpoint("configuration")
    num_input_channels = _from_checkpoint("num_input_channels")
    mirror_axes = _from_checkpoint("mirror_axes")

    @property
    def task(self) -> str:
        """The head that predicts."""
        return self.checkpoint.predict_head

    @property
    def num_classes(self) -> int:
        return self.checkpoint.heads[self.task]

    @property
    def label_values(self) -> list[int]:
        return self.checkpoint.label_values(self.task)

    @property
    def run_folder(self) -> Path:
        return self.source.parent


def _fold_key(path: Path) -> tuple[int, str]:
    match = _FOLD.fullmatch(path.name)
    index = match.group(1) if match else path.name
    return (int(index), "") if index.isdigit() else (1 << 30, index)


def fold_folders(folder: Path) -> list[Path]:
    """The ``fold_*`` subfolders of a strategy folder, in fold order."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and _FOLD.fullmatch(p.name)), key=_fold_key) \
        if folder.is_dir() else []


def run_name(dataset_names: list[str]) -> str:
    """The results folder of a run: the dataset's name, or one naming every source of a multi-lesion run."""
    return dataset_names[0] if len(dataset_names) == 1 else "Pretrain__" + "__".join(dataset_names)


def checkpoint_paths(model_paths: Sequence[str | os.PathLike], which: str = "final") -> list[Path]:
    """Checkpoint files for ``-m`` arguments: a checkpoint file, a fold folder, or a strategy folder of ``fold_*``."""
    name = f"checkpoint_{which}.pt"
    found: list[Path] = []
    for raw in model_paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif (path / name).is_file():
            found.append(path / name)
        elif path.is_dir():
            folds = [fold / name for fold in fold_folders(path) if (fold / name).is_file()]
            if not folds:
                raise CovtransferError(f"{path}: no {name} here nor in any fold_* subfolder (train the model first, "
                                       f"or pick another with --checkpoint)")
            found.extend(folds)
        else:
            raise CovtransferError(f"{path}: no such checkpoint file or model folder")
    return found


def trained_runs(dataset_folder: Path, which: str = "final") -> str:
    """What is trained for a dataset, for error messages: ``trained for <dataset> with --checkpoint final: hybrid
    (folds 0, 1); scratch (fold 0)`` (or ``nothing``)."""
    runs = []
    for folder in sorted(p for p in dataset_folder.iterdir() if p.is_dir()) if dataset_folder.is_dir() else []:
        folds = [f.name[len("fold_"):] for f in fold_folders(folder) if (f / f"checkpoint_{which}.pt").is_file()]
        if folds:
            runs.append(f"{folder.name} (fold{'s' if len(folds) > 1 else ''} {', '.join(folds)})")
    return f"trained for {dataset_folder.name} with --checkpoint {which}: {'; '.join(runs) or 'nothing'}"


def strategy_folder(results_root: str | os.PathLike, dataset: str | int, strategy: str, tag: str | None = None,
                    which: str = "final", known: Sequence[str] = ()) -> Path:
    """``RESULTS/DatasetNNN_Name/<strategy>[__<tag>]`` for a dataset given by id or name; a missing one is refused
    with what is trained for the dataset, and with the closest of the ``known`` strategy names when it is none."""
    name = f"{strategy}__{tag}" if tag else strategy
    dataset_folder = find_dataset(Path(results_root), dataset)
    folder = dataset_folder / name
    if folder.is_dir():
        return folder
    trained = trained_runs(dataset_folder, which)
    if known and strategy not in known:
        close = difflib.get_close_matches(strategy, known, 1)
        hint = f"did you mean {close[0]}? " if close else f"choose one of {', '.join(known)}; "
        raise CovtransferError(f"-t {strategy}: no such strategy ({hint}{trained})")
    raise CovtransferError(f"{folder}: no such results folder (train with -t {strategy} first; {trained})")


def dataset_checkpoints(results_root: str | os.PathLike, dataset: str | int, strategy: str,
                        folds: Sequence[str | int] | None = None, tag: str | None = None,
                        which: str = "final", known: Sequence[str] = ()) -> list[Path]:
    """The checkpoints of the given folds (default: every ``fold_*`` folder that holds the checkpoint); ``known``
    strategy names answer a misspelt one with the closest."""
    folder = strategy_folder(results_root, dataset, strategy, tag, which, known)
    name = f"checkpoint_{which}.pt"
    if folds is None:
        found = [fold / name for fold in fold_folders(folder) if (fold / name).is_file()]
        if not found:
            raise CovtransferError(f"{folder}: no fold_*/{name} (train a fold first, or pick another with "
                                   f"--checkpoint; {trained_runs(folder.parent, which)})")
        return found
    found = []
    for fold in folds:
        path = folder / f"fold_{fold}" / name
        if not path.is_file():
            raise CovtransferError(f"{path}: checkpoint not found ({trained_runs(folder.parent, which)})")
        found.append(path)
    return found


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild one checkpoint's network (deep supervision off, eval mode) on ``device`` (names like auto resolved)."""
    device = resolve_device(device)
    path = Path(path)
    checkpoint = load_checkpoint(path)
    network = build_from_checkpoint(checkpoint, deep_supervision=False, source=path)
    network.eval().to(device)
    return LoadedModel(network, replace(checkpoint, state_dict={}, optimizer=None, grad_scaler=None, rng=None), path)


def check_ensemble(models: Sequence[LoadedModel]) -> None:
    """Refuse an ensemble whose members would need different preprocessing or predict different classes."""
    first = models[0]
    reference = (first.plans.transpose_forward, first.configuration.to_dict(), first.num_classes,
                 first.num_input_channels)
    for other in models[1:]:
        theirs = (other.plans.transpose_forward, other.configuration.to_dict(), other.num_classes,
                  other.num_input_channels)
        if theirs != reference:
            raise CovtransferError(f"{other.source}: its plans or classes differ from those of {first.source}; "
                                   "only models trained with the same plans can be ensembled")


def load_models(paths: Sequence[str | os.PathLike], device: torch.device | str = "cpu") -> list[LoadedModel]:
    """Load every checkpoint of an ensemble and check that they fit together."""
    if not paths:
        raise CovtransferError("no checkpoints given")
    models = [load_model(p, device) for p in paths]
    check_ensemble(models)
    return models
