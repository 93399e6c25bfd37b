"""Training as a library call: resolve datasets, plans, fold and pre-trained model, run the trainer, validate.

Every check that can refuse a run happens before the fold folder is created, so a refused run leaves nothing. The
run holds the fold folder's lock (:mod:`covtransfer.training.run_lock`) from creating it to the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from covtransfer.config import Roots, find_dataset
from covtransfer.data.raw_guard import refuse_raw_dataset
from covtransfer.errors import CovtransferError
from covtransfer.inference.model_loading import run_name
from covtransfer.plans import Plans
from covtransfer.training.run_lock import run_lock
from covtransfer.training.splits import fold_cases, load_or_create_splits
from covtransfer.training.pretrained import (Pretrained, check_pretrained_kind, check_pretrained_topology,
                                            load_pretrained)
from covtransfer.training.strategies import Strategy
from covtransfer.training.trainer import Trainer, TrainingSettings, TrainingTask
from covtransfer.training.validation import validate_fold


def fold_folder(roots: Roots, dataset_names: list[str], strategy: str, fold: str | int, tag: str | None = None) -> Path:
    """``RESULTS/<run>/<strategy>[__<tag>]/fold_<K>``."""
    name = f"{strategy}__{tag}" if tag else strategy
    return roots.results / run_name(dataset_names) / name / f"fold_{fold}"


def load_task(roots: Roots, dataset_id: str | int, configuration: str, fold: str | int) -> TrainingTask:
    """A dataset to train on: its preprocessed folder, plans and the training/validation cases of ``fold``."""
    try:
        folder = find_dataset(roots.preprocessed, dataset_id)
    except CovtransferError as exc:
        raise CovtransferError(f"{exc}; preprocess it first (covtransfer_plan_and_preprocess -d {dataset_id})"
                               ) from None
    plans_path = folder / "plans.json"
    if not plans_path.is_file():
        raise CovtransferError(f"{folder}: not preprocessed (run covtransfer_plan_and_preprocess -d {dataset_id})")
    plans = Plans.load(plans_path)
    data_folder = folder / plans.configuration(configuration).data_identifier
    # a dot name is a temporary file a killed preprocessing run left, not a case
    case_ids = sorted(p.stem for p in data_folder.glob("*.json") if not p.name.startswith(".")) \
        if data_folder.is_dir() else []
    if not case_ids:
        raise CovtransferError(f"{data_folder}: no preprocessed cases (run covtransfer_plan_and_preprocess "
                               f"-d {dataset_id} -c {configuration})")
    train_ids, val_ids = fold_cases(load_or_create_splits(folder, case_ids), fold, case_ids)
    return TrainingTask(folder.name, folder, plans, train_ids, val_ids)


def _same_plans(a: Plans, b: Plans, configuration: str) -> bool:
    ca, cb = a.configuration(configuration).to_dict(), b.configuration(configuration).to_dict()
    return ca == cb and a.transpose_forward == b.transpose_forward and a.channel_names == b.channel_names


def _check_source_weights(weights: list[float] | None, tasks: list[TrainingTask]) -> None:
    if weights is None:
        return
    if len(weights) != len(tasks):
        raise CovtransferError(f"--source-weights has {len(weights)} values for {len(tasks)} datasets")
    if any(not w > 0 for w in weights):
        raise CovtransferError(f"--source-weights {' '.join(str(w) for w in weights)}: every weight must be > 0")


def train(dataset_ids: list[str | int], strategy: Strategy, fold: str | int, roots: Roots,
          settings: TrainingSettings, configuration: str = "3d_fullres", pretrained: str | Path | None = None,
          resume: bool = False, tag: str | None = None, resume_from: str | Path | None = None) -> Path:
    """Train one fold and validate it, holding the fold folder's run lock; returns the fold folder.

    ``resume_from`` (with ``resume``) names the checkpoint to resume from instead of the folder's newest.
    """
    if len(dataset_ids) > 1 and strategy.name != "pretrain":
        raise CovtransferError(f"-t {strategy.name} trains on one dataset; several datasets need -t pretrain")
    tasks = [load_task(roots, d, configuration, fold) for d in dataset_ids]
    for task in tasks[1:]:
        if not _same_plans(tasks[0].plans, task.plans, configuration):
            raise CovtransferError(
                f"{task.name} and {tasks[0].name} have different plans; multi-lesion pre-training needs one plans "
                f"file: run covtransfer_plan_and_preprocess -d {task.name} --plans-from TARGET for every source")
    _check_source_weights(settings.source_weights, tasks)
    if strategy.needs_pretrained and pretrained is None:
        raise CovtransferError(f"-t {strategy.name} needs --pretrained (a checkpoint, a run folder, or a model "
                               "package: a .zip or an installed model's name)")
    if not strategy.needs_pretrained and pretrained is not None:
        raise CovtransferError(f"-t {strategy.name} does not use --pretrained")
    source = load_pretrained(pretrained, roots, tasks[0].name) if pretrained is not None else None
    if source is not None:
        check_pretrained_kind(source, strategy.name)
        check_pretrained_topology(source, tasks[0].plans.configuration(configuration), tasks[0].name)
    folder = fold_folder(roots, [t.name for t in tasks], strategy.name, fold, tag)
    refuse_raw_dataset(folder, "--results", roots.raw)
    new_root = _first_missing(folder)
    with run_lock(folder) if _is_main_process() else contextlib.nullcontext():
        try:
            _run_fold(tasks, configuration, strategy, folder, settings, source, resume or resume_from is not None,
                      resume_from)
        except BaseException:
            if new_root is not None and not any(folder.glob("checkpoint_*.pt")):
                _remove_new_folders(folder, new_root)
            raise
    return folder


def _run_fold(tasks: list[TrainingTask], configuration: str, strategy: Strategy, folder: Path,
              settings: TrainingSettings, source: Pretrained | None, resume: bool,
              resume_from: str | Path | None) -> None:
    """Train and validate in ``folder`` (its lock held): resume first with ``resume``."""
    if not resume and any(folder.glob("checkpoint_*.pt")):
        raise CovtransferError(f"{folder}: already holds checkpoints; use --continue to resume, or delete it")
    trainer = Trainer(tasks, configuration, strategy, folder, settings, source.checkpoint if source else None,
                      source.source if source else "")
    if trainer.load_report is not None:
        trainer.load_report.origin = source.origin
    try:
        if resume:
            trainer.resume(Path(resume_from) if resume_from is not None else None)
        _copy_run_files(tasks[0], folder.parent)
        trainer.fit()
        if settings.final_validation and trainer.context.is_main:
            for task in tasks:
                validate_fold(trainer, task, folder / "validation" if len(tasks) == 1
                              else folder / "validation" / task.name)
    finally:
        trainer.close()


def _is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` launch (or a plain process): the one that takes the run lock."""
    return int(os.environ.get("RANK", "0")) == 0


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist yet (None when ``folder`` exists)."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _remove_new_folders(folder: Path, new_root: Path) -> None:
    """Delete ``folder`` and its parents up to ``new_root``, which this run created; parents only while empty, so a
    run started beside it meanwhile keeps its folder."""
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if new_root not in (parent, *parent.parents):
            break
        with contextlib.suppress(OSError):
            parent.rmdir()


def _copy_run_files(task: TrainingTask, run_folder: Path) -> None:
    """Copy the plans and dataset description next to the folds, as nnU-Net does, for inspection."""
    run_folder.mkdir(parents=True, exist_ok=True)
    for name in ("plans.json", "dataset.json"):
        source = task.preprocessed_folder / name
        if source.is_file() and not (run_folder / name).is_file():
            shutil.copyfile(source, run_folder / name)


def read_metrics(folder: Path) -> list[dict]:
    """The per-epoch records of a fold folder's ``metrics.jsonl``."""
    path = Path(folder) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
