"""The transfer study: plan the target, preprocess the sources with the target's plans, pre-train on the source
lesions, train every strategy on every fold of the target, predict each fold's test cases, evaluate, aggregate.

Every step is skipped when its output exists, so a rerun (or a run after an interruption) continues where the
last one stopped; ``study.json`` records the spec so a rerun with another configuration is refused. Results go to
``<study folder>/``: ``results.csv`` and ``results.md`` (with the paired comparison against scratch),
``pretraining.csv``, plots, ``commands.txt``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from covtransfer.config import Roots, find_dataset
from covtransfer.devices import resolve_device
from covtransfer.errors import CovtransferError
from covtransfer.data.dataset_json import list_cases, load_dataset_json
from covtransfer.data.image_io import file_ending
from covtransfer.evaluation.evaluate import evaluate_case, summarise
from covtransfer.experiments.paired import paired_rows
from covtransfer.experiments.pretraining_summary import pretraining_line, pretraining_rows
from covtransfer.experiments.report import write_report
from covtransfer.experiments.study_record import (check_reusable, check_study_folder, settings_identity,
                                                  write_study_record)
from covtransfer.inference.inputs import InputCase
from covtransfer.inference.model_loading import checkpoint_paths, load_models
from covtransfer.inference.predictor import Predictor
from covtransfer.planning.fingerprint import FOREGROUND_VOXEL_BUDGET
from covtransfer.plans import Plans
from covtransfer.workflow.plan_and_preprocess import plan_and_preprocess
from covtransfer.training.api import fold_folder, load_task, read_metrics, train
from covtransfer.training.checkpoint import newest_checkpoint
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import TrainingSettings

DEFAULT_STRATEGIES = ("scratch", "continual", "finetune", "encoder", "hybrid")
METRICS = ("dice", "nsd", "sensitivity", "precision", "mcc")


@dataclass
class StudySpec:
    """What the study runs: datasets, strategies, folds, pre-training mode, and the training settings."""

    target: str
    sources: list[str]
    strategies: list[str] = field(default_factory=lambda: list(DEFAULT_STRATEGIES))
    folds: list[str] = field(default_factory=lambda: ["0", "1", "2", "3", "4"])
    pretrain: str = "multi"
    settings: TrainingSettings = field(default_factory=TrainingSettings)
    pretrain_settings: TrainingSettings | None = None
    preset: str | None = None
    gpu_memory_gb: float = 8.0
    configuration: str = "3d_fullres"
    tolerance_mm: float = 3.0
    tta: bool = True
    num_processes: int | None = None
    fingerprint_voxels: int = FOREGROUND_VOXEL_BUDGET


@dataclass
class Pretraining:
    """One pre-trained model of the study: its tag (``multi`` or a source name) and its fold folder."""

    tag: str
    sources: list[str]
    folder: Path


class Study:
    """Runs a :class:`StudySpec` step by step and records the equivalent commands.

    The device is resolved once here (``settings.device``: auto, cpu, cuda, cuda:K) and used for every training
    and prediction; after :meth:`run`, ``paired`` and ``pretraining_rows`` hold the paired statistics against
    scratch and the final per-source EMA of each pre-training.
    """

    def __init__(self, spec: StudySpec, roots: Roots, output: Path | None = None):
        check_spec(spec)
        self.device = resolve_device(spec.settings.device)
        self.settings = replace(spec.settings, device=str(self.device))
        self.pretrain_settings = replace(spec.pretrain_settings or spec.settings, device=str(self.device),
                                         final_validation=False)
        self.spec, self.roots = spec, roots
        self.output = Path(output) if output else None
        self.commands: list[str] = []
        self.paired: list[dict] = []
        self.pretraining_rows: list[dict] = []
        self._target: tuple[str, dict] = ("", {})  # the target's name and plans configuration, set by prepare

    def _command(self, text: str) -> None:
        self.commands.append(text)

    def _flags(self, settings: TrainingSettings) -> str:
        weights = f" --source-weights {' '.join(map(str, settings.source_weights))}" if settings.source_weights else ""
        return (f"--epochs {settings.epochs} --iters-per-epoch {settings.iters_per_epoch} "
                f"--val-iters {settings.val_iters} --device {settings.device} --seed {settings.seed}{weights}")

    def record(self, target: str, sources: list[str]) -> dict:
        """The spec as recorded in ``study.json`` (dataset names resolved, execution-only settings left out)."""
        s = self.spec
        return {"target": target, "sources": sources, "strategies": list(s.strategies), "folds": list(s.folds),
                "pretrain": s.pretrain, "configuration": s.configuration, "preset": s.preset,
                "gpu_memory_gb": s.gpu_memory_gb, "fingerprint_voxels": s.fingerprint_voxels, "tta": s.tta,
                "tolerance_mm": s.tolerance_mm, "settings": settings_identity(self.settings),
                "pretrain_settings": settings_identity(self.pretrain_settings), "device": str(self.device)}

    # ------------------------------------------------------------------------------------------ steps
    def prepare(self) -> tuple[str, list[str]]:
        """Plan and preprocess the target, then the sources with the target's plans; returns their names."""
        s = self.spec
        preset = f" --preset {s.preset}" if s.preset else ""
        self._command(f"covtransfer_plan_and_preprocess -d {s.target}{preset} --gpu-memory-gb {s.gpu_memory_gb}")
        target = plan_and_preprocess([s.target], self.roots, gpu_memory_gb=s.gpu_memory_gb, preset=s.preset,
                                     configurations=[s.configuration], num_processes=s.num_processes,
                                     fingerprint_voxels=s.fingerprint_voxels)[0]
        self._target = (target.name, Plans.load(target / "plans.json").configuration(s.configuration).to_dict())
        self._command(f"covtransfer_plan_and_preprocess -d {' '.join(s.sources)} --plans-from {target.name}")
        sources = plan_and_preprocess(s.sources, self.roots, plans_from=target.name,
                                      configurations=[s.configuration], num_processes=s.num_processes,
                                      fingerprint_voxels=s.fingerprint_voxels)
        return target.name, [p.name for p in sources]

    def _train(self, datasets: list[str], strategy: str, fold: str, settings: TrainingSettings,
               pretrained: Path | None = None, tag: str | None = None) -> Path:
        folder = fold_folder(self.roots, datasets, strategy, fold, tag)
        flags = f" --pretrained {pretrained}" if pretrained else ""
        flags += f" --tag {tag}" if tag else ""
        self._command(f"covtransfer_train -d {' '.join(datasets)} -t {strategy} -f {fold}{flags} "
                      f"{self._flags(settings)}")
        final = folder / "checkpoint_final.pt"
        existing = final if final.is_file() else newest_checkpoint(folder) if folder.is_dir() else None
        if existing is not None:
            name, configuration = self._target
            check_reusable(existing, settings, configuration, self.spec.configuration, name)
        if final.is_file():
            return folder
        resume = existing is not None
        return train(datasets, make_strategy(strategy), fold, self.roots, settings, self.spec.configuration,
                     pretrained, resume=resume, tag=tag)

    def pretrain(self, sources: list[str]) -> list[Pretraining]:
        """Pre-train one multi-lesion model and/or one model per source (on all their cases)."""
        settings = self.pretrain_settings
        groups = []
        if self.spec.pretrain in ("multi", "both"):
            groups.append(("multi", sources))
        if self.spec.pretrain in ("each", "both"):
            groups += [(name, [name]) for name in sources]
        return [Pretraining(tag, datasets, self._train(datasets, "pretrain", "all", settings))
                for tag, datasets in groups]

    def test_cases(self, target: str, fold: str) -> list[tuple[str, list[Path], Path]]:
        """Test cases of a fold: the split's ``test`` list when it has one, else the labelled ``imagesTs`` cases."""
        raw = find_dataset(self.roots.raw, target)
        info = load_dataset_json(raw)
        splits_path = find_dataset(self.roots.preprocessed, target) / "splits.json"
        splits = json.loads(splits_path.read_text()) if splits_path.is_file() else []
        if fold != "all" and int(fold) < len(splits) and "test" in splits[int(fold)]:
            wanted = set(splits[int(fold)]["test"])
            return [(c.case_id, c.images, c.label) for c in list_cases(raw, info, "Tr") if c.case_id in wanted]
        return [(c.case_id, c.images, c.label) for c in list_cases(raw, info, "Ts") if c.label is not None]

    def evaluate_fold(self, target: str, model_folder: Path, fold: str, predictions: Path) -> list[dict]:
        """Predict the fold's test cases with one model (skipping finished ones) and score them."""
        cases = self.test_cases(target, fold)
        labels = sorted(v for v in load_dataset_json(find_dataset(self.roots.raw, target)).labels.values() if v)
        inputs = [InputCase(case_id, tuple(images), file_ending(images[0])) for case_id, images, _ in cases]
        self._command(f"covtransfer_predict -m {model_folder} -i <fold {fold} test images> -o {predictions}")
        models = load_models(checkpoint_paths([model_folder]), self.device)
        Predictor(models, self.device, self.spec.tta).predict_cases(inputs, predictions, skip_existing=True)
        rows = []
        for case, (case_id, _, reference) in zip(inputs, cases):
            rows += [{"fold": fold, **row} for row in evaluate_case(case_id, reference, predictions /
                                                                    case.output_name(), labels,
                                                                    self.spec.tolerance_mm)[0]]
        return rows

    def check_prepared(self, target: str, sources: list[str]) -> None:
        """Before any training: every source shares the target's plans, every fold exists and has test cases."""
        name = self.spec.configuration
        target_plans = Plans.load(find_dataset(self.roots.preprocessed, target) / "plans.json")
        for source in sources:
            plans = Plans.load(find_dataset(self.roots.preprocessed, source) / "plans.json")
            if name not in plans.configurations or plans.configuration(name).to_dict() != self._target[1] \
                    or plans.transpose_forward != target_plans.transpose_forward:
                raise CovtransferError(f"{source}: planned with other plans than {target}'s; preprocess it with "
                                       f"covtransfer_plan_and_preprocess -d {source} --plans-from {target}")
        for fold in self.spec.folds:
            load_task(self.roots, target, name, fold)
            if not self.test_cases(target, fold):
                raise CovtransferError(f"fold {fold} of {target} has no test cases: give its splits.json entry a "
                                       "'test' list, or add labelled imagesTs/labelsTs cases")

    def run(self) -> list[dict]:
        """Every step of the study; returns the aggregated rows (one per pre-training and strategy)."""
        s = self.spec
        target_name = find_dataset(self.roots.raw, s.target).name
        source_names = [find_dataset(self.roots.raw, source).name for source in s.sources]
        if target_name in source_names:
            raise CovtransferError(f"--sources includes the target {target_name}; sources are the other lesions")
        if len(set(source_names)) < len(source_names):
            raise CovtransferError(f"--sources names a dataset twice ({', '.join(source_names)})")
        output = self.output or self.roots.results / target_name / "study"
        record = self.record(target_name, source_names)
        check_study_folder(output, record)
        target, sources = self.prepare()
        self.check_prepared(target, sources)
        write_study_record(output, record)
        pretrainings = self.pretrain(sources)
        self.pretraining_rows = []
        for pretraining in pretrainings:
            rows = pretraining_rows(pretraining.tag, pretraining.sources, read_metrics(pretraining.folder))
            print(pretraining_line(rows), flush=True)
            self.pretraining_rows += rows
        runs = []
        for strategy in s.strategies:
            if make_strategy(strategy).needs_pretrained:
                runs += [(p.tag, strategy, p) for p in pretrainings]
            else:
                runs.append(("none", strategy, None))
        rows = []
        for pretrain_tag, strategy, pretraining in runs:
            tag = None if pretraining is None else f"from_{pretrain_tag}"
            per_case, histories, times = [], [], []
            for fold in s.folds:
                model = self._train([target], strategy, fold, self.settings,
                                    pretraining.folder if pretraining else None, tag)
                history = read_metrics(model)
                histories.append(history)
                times.append(sum(r["epoch_time"] for r in history))
                name = strategy if tag is None else f"{strategy}__{tag}"
                per_case += self.evaluate_fold(target, model, fold, output / "predictions" / name / f"fold_{fold}")
            rows.append(aggregate(pretrain_tag, strategy, per_case, histories, times))
            rows[-1]["per_case"] = per_case
            rows[-1]["histories"] = histories
        self.paired = paired_rows(rows)
        write_report(output, rows, self.commands, target, self.roots, self.paired, self.pretraining_rows)
        return rows


def check_spec(spec: StudySpec) -> None:
    """Refuse an unknown pre-training mode, strategy or fold name, and empty or repeated lists, with one line."""
    if spec.pretrain not in ("multi", "each", "both"):
        raise CovtransferError(f"--pretrain must be multi, each or both, not {spec.pretrain!r}")
    if not spec.sources:
        raise CovtransferError("--sources is empty: the study needs at least one source dataset")
    if not spec.strategies:
        raise CovtransferError("--strategies is empty")
    for name in spec.strategies:
        if name not in DEFAULT_STRATEGIES:
            raise CovtransferError(f"unknown strategy {name!r}: the study compares {', '.join(DEFAULT_STRATEGIES)} "
                                   "(pre-training runs by itself)")
    if len(set(spec.strategies)) < len(spec.strategies):
        raise CovtransferError(f"--strategies names a strategy twice ({','.join(spec.strategies)})")
    for settings in (spec.settings, spec.pretrain_settings or spec.settings):
        if settings.epochs < 1 or settings.iters_per_epoch < 1 or settings.val_iters < 0:
            raise CovtransferError(f"epochs {settings.epochs}, iterations per epoch {settings.iters_per_epoch}, "
                                   f"validation iterations {settings.val_iters}: need at least 1, 1 and 0")
    if not spec.folds:
        raise CovtransferError("--folds is empty")
    for fold in spec.folds:
        if str(fold) != "all" and not str(fold).isdigit():
            raise CovtransferError(f"unknown fold {fold!r}: use fold numbers of splits.json (0, 1, ...) or 'all'")
    if len({str(fold) for fold in spec.folds}) < len(spec.folds):
        raise CovtransferError(f"--folds names a fold twice ({' '.join(str(f) for f in spec.folds)})")


def convergence_epoch(history: list[dict], fraction: float = 0.9) -> int | None:
    """First epoch whose moving-average validation Dice reaches ``fraction`` of its final value."""
    values = [r["ema_dice"] for r in history if r.get("ema_dice") is not None and np.isfinite(r["ema_dice"])]
    if not values or values[-1] <= 0:
        return None
    goal = fraction * values[-1]
    return next(i for i, v in enumerate(values) if v >= goal)


def aggregate(pretraining: str, strategy: str, per_case: list[dict], histories: list[list[dict]],
              times: list[float]) -> dict:
    """One results row: metric mean ± std over all test cases of all folds, training time, convergence."""
    summary = summarise(per_case) if per_case else {"mean": {}, "std": {}}
    label = next(iter(summary["mean"]), None)
    row = {"pretraining": pretraining, "strategy": strategy, "num_cases": len(per_case)}
    for metric in METRICS:
        row[f"{metric}_mean"] = summary["mean"][label][metric] if label else float("nan")
        row[f"{metric}_std"] = summary["std"][label][metric] if label else float("nan")
    epochs = [e for e in (convergence_epoch(h) for h in histories) if e is not None]
    row["training_minutes"] = float(np.mean(times)) / 60 if times else float("nan")
    row["convergence_epoch"] = float(np.mean(epochs)) if epochs else float("nan")
    return row
