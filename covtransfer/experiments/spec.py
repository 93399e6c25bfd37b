"""The study's spec: what it runs, the checks that refuse a bad one, and the names derived from it (the runs and the
pre-trainings), so that the job graph, the jobs' work and the aggregation agree on them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from covtransfer.config import Roots
from covtransfer.errors import CovtransferError
from covtransfer.planning.fingerprint import FOREGROUND_VOXEL_BUDGET
from covtransfer.training.api import fold_folder
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import TrainingSettings

DEFAULT_STRATEGIES = ("scratch", "continual", "finetune", "encoder", "hybrid")


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


def spec_from_record(record: dict, device: str) -> StudySpec:
    """The spec recorded in a study's ``study.json``, to run on ``device``."""
    settings = TrainingSettings(**record["settings"], device=device, final_validation=False)
    return StudySpec(target=record["target"], sources=record["sources"], strategies=record["strategies"],
                     folds=record["folds"], pretrain=record["pretrain"], settings=settings,
                     pretrain_settings=TrainingSettings(**record["pretrain_settings"], device=device),
                     preset=record["preset"], gpu_memory_gb=record["gpu_memory_gb"],
                     configuration=record["configuration"], tolerance_mm=record["tolerance_mm"],
                     tta=record["tta"], num_processes=record.get("num_processes"),
                     fingerprint_voxels=record["fingerprint_voxels"])


def run_name(strategy: str, tag: str | None) -> str:
    """The folder name of a strategy's run: ``<strategy>`` or ``<strategy>__<tag>``."""
    return strategy if tag is None else f"{strategy}__{tag}"


def pretrainings(spec: StudySpec, roots: Roots, sources: list[str]) -> list[Pretraining]:
    """One multi-lesion pre-training and/or one per source (on all their cases), as ``--pretrain`` asks."""
    groups = []
    if spec.pretrain in ("multi", "both"):
        groups.append(("multi", sources))
    if spec.pretrain in ("each", "both"):
        groups += [(name, [name]) for name in sources]
    return [Pretraining(tag, datasets, fold_folder(roots, datasets, "pretrain", "all", None))
            for tag, datasets in groups]


def runs(spec: StudySpec, pretrained: list[Pretraining]) -> list[tuple[str, Pretraining | None]]:
    """Every trained run: each strategy, once per pre-training when it starts from one."""
    result: list[tuple[str, Pretraining | None]] = []
    for strategy in spec.strategies:
        if make_strategy(strategy).needs_pretrained:
            result += [(strategy, p) for p in pretrained]
        else:
            result.append((strategy, None))
    return result


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
