"""The transfer study: plan the target, preprocess the sources with the target's plans, pre-train on the source
lesions, train every strategy on every fold of the target, predict each fold's test cases, evaluate, aggregate.

Every step is skipped when its output exists, so a rerun (or a run after an interruption) continues where the
last one stopped; ``study.json`` records the spec so a rerun with another configuration is refused. Results go to
``<study folder>/``: ``results.csv`` and ``results.md`` (with the paired comparison against scratch),
``pretraining.csv``, plots, ``commands.txt``.

The steps are jobs (:meth:`Study.jobs`): ``plan_target``, ``plan_sources``, ``pretrain_<tag>`` (after
``plan_sources``), ``train_<run>_fold_K`` (after its pre-training, or ``plan_target`` for scratch),
``predict_<run>_fold_K`` (after its training) and ``aggregate`` (after every pre-training and prediction). Each is a
command a user could run by hand; :meth:`Study.run` runs them here, the launchers in other processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from covtransfer.atomic import write_json, write_text
from covtransfer.config import Roots, find_dataset
from covtransfer.devices import resolve_device
from covtransfer.errors import CovtransferError
from covtransfer.data.dataset_json import list_cases, load_dataset_json
from covtransfer.data.image_io import file_ending
from covtransfer.evaluation.evaluate import evaluate_case, summarise
from covtransfer.experiments.jobs import AGGREGATE_JOB, Job, check_graph
from covtransfer.experiments.paired import paired_rows
from covtransfer.experiments.pretraining_summary import pretraining_line, pretraining_rows
from covtransfer.experiments.report import write_report
from covtransfer.experiments.report_html import write_html_report
from covtransfer.experiments.study_commands import StudyCommands
from covtransfer.experiments.study_record import (RECORD_FILE, check_reusable, check_study_folder,
                                                  checkpoint_identity, read_record, settings_identity,
                                                  write_study_record)
from covtransfer.inference.inputs import InputCase
from covtransfer.inference.model_loading import checkpoint_paths, load_models
from covtransfer.inference.predictor import Predictor
from covtransfer.planning.fingerprint import FOREGROUND_VOXEL_BUDGET
from covtransfer.plans import Plans
from covtransfer.workflow.plan_and_preprocess import plan_and_preprocess
from covtransfer.training.api import fold_folder, load_task, read_metrics, train
from covtransfer.training.checkpoint import find_checkpoint, newest_checkpoint
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import TrainingSettings

DEFAULT_STRATEGIES = ("scratch", "continual", "finetune", "encoder", "hybrid")
METRICS = ("dice", "nsd", "sensitivity", "precision", "mcc")
MODEL_FILE = "model.json"  # beside a fold's predictions: the checkpoint they were made with
EVALUATION_FILE = "evaluation.json"  # beside a fold's predictions: their per-case scores


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
    """Runs a :class:`StudySpec` as a graph of jobs (:mod:`covtransfer.experiments.jobs`), here one after another.

    The device is resolved once here (``settings.device``: auto, cpu, cuda, cuda:K) and used for every training
    and prediction, unless ``resolve`` is off (jobs submitted to other machines resolve it there); after
    :meth:`run`, ``paired`` and ``pretraining_rows`` hold the paired statistics against scratch and the final
    per-source EMA of each pre-training.
    """

    def __init__(self, spec: StudySpec, roots: Roots, output: Path | None = None, resolve: bool = True):
        check_spec(spec)
        self.device = resolve_device(spec.settings.device) if resolve else None
        device = str(self.device) if resolve else spec.settings.device
        self.settings = replace(spec.settings, device=device)
        self.pretrain_settings = replace(spec.pretrain_settings or spec.settings, device=device,
                                         final_validation=False)
        self.spec, self.roots = spec, roots
        self.output = Path(output) if output else None
        self.commands: list[str] = []
        self.paired: list[dict] = []
        self.pretraining_rows: list[dict] = []
        self._target: tuple[str, dict] = ("", {})  # the target's name and plans configuration, set by prepare

    @classmethod
    def from_folder(cls, output: Path, roots: Roots, device: str = "auto") -> "Study":
        """The study recorded in ``output/study.json`` (written before any job of a launcher runs)."""
        record = read_record(Path(output) / RECORD_FILE)
        if record is None:
            raise CovtransferError(f"{output}: no readable {RECORD_FILE}; run covtransfer_study with the study's "
                                   "options first")
        settings = TrainingSettings(**record["settings"], device=device, final_validation=False)
        spec = StudySpec(target=record["target"], sources=record["sources"], strategies=record["strategies"],
                         folds=record["folds"], pretrain=record["pretrain"], settings=settings,
                         pretrain_settings=TrainingSettings(**record["pretrain_settings"], device=device),
                         preset=record["preset"], gpu_memory_gb=record["gpu_memory_gb"],
                         configuration=record["configuration"], tolerance_mm=record["tolerance_mm"],
                         tta=record["tta"], num_processes=record.get("num_processes"),
                         fingerprint_voxels=record["fingerprint_voxels"])
        return cls(spec, roots, output)

    def record(self, target: str, sources: list[str]) -> dict:
        """The spec as recorded in ``study.json`` (dataset names resolved, execution-only settings left out)."""
        s = self.spec
        return {"target": target, "sources": sources, "strategies": list(s.strategies), "folds": list(s.folds),
                "pretrain": s.pretrain, "configuration": s.configuration, "preset": s.preset,
                "gpu_memory_gb": s.gpu_memory_gb, "fingerprint_voxels": s.fingerprint_voxels, "tta": s.tta,
                "tolerance_mm": s.tolerance_mm, "settings": settings_identity(self.settings),
                "pretrain_settings": settings_identity(self.pretrain_settings), "device": self.settings.device,
                "num_processes": s.num_processes}

    def names(self) -> tuple[str, list[str], Path]:
        """The target's and the sources' dataset names and the study folder; refuses a source that is the target."""
        target = find_dataset(self.roots.raw, self.spec.target).name
        sources = [find_dataset(self.roots.raw, source).name for source in self.spec.sources]
        if target in sources:
            raise CovtransferError(f"--sources includes the target {target}; sources are the other lesions")
        if len(set(sources)) < len(sources):
            raise CovtransferError(f"--sources names a dataset twice ({', '.join(sources)})")
        return target, sources, self.output or self.roots.results / target / "study"

    # ------------------------------------------------------------------------------------------ the job graph
    def jobs(self, target: str, sources: list[str], output: Path) -> list[Job]:
        """Every job of the study in an order that runs each after what it waits for (see the module docstring)."""
        s, commands = self.spec, StudyCommands(self, output)
        jobs = [Job("plan_target", commands.plan([target]), [], lambda: self._preprocessed([target]),
                    action=lambda: self.prepare_target(target)),
                Job("plan_sources", commands.plan(sources, plans_from=target), ["plan_target"],
                    lambda: self._preprocessed(sources), action=lambda: self.prepare_sources(target, sources))]
        pretrainings = self.pretrainings(sources)
        for p in pretrainings:
            jobs.append(self._train_job(f"pretrain_{p.tag}", ["plan_sources"], p.sources, "pretrain", "all",
                                        self.pretrain_settings, commands, print_pretraining=p))
        runs = []
        for strategy in s.strategies:
            if make_strategy(strategy).needs_pretrained:
                runs += [(strategy, p) for p in pretrainings]
            else:
                runs.append((strategy, None))
        predicts = []
        for strategy, pretraining in runs:
            tag = None if pretraining is None else f"from_{pretraining.tag}"
            name = run_name(strategy, tag)
            for fold in s.folds:
                needs = [f"pretrain_{pretraining.tag}"] if pretraining else ["plan_target"]
                train_job = self._train_job(f"train_{name}_fold_{fold}", needs, [target], strategy, fold,
                                            self.settings, commands, pretraining.folder if pretraining else None, tag)
                model = fold_folder(self.roots, [target], strategy, fold, tag)
                predictions = output / "predictions" / name / f"fold_{fold}"
                predicts.append(f"predict_{name}_fold_{fold}")
                jobs += [train_job,
                         Job(predicts[-1], commands.study_job(predicts[-1]), [train_job.name],
                             lambda m=model, p=predictions: self.predicted(m, p), gpu=True,
                             action=lambda m=model, f=fold, p=predictions: self.evaluate_fold(target, m, f, p))]
        jobs.append(Job(AGGREGATE_JOB, commands.study_job(AGGREGATE_JOB),
                        [f"pretrain_{p.tag}" for p in pretrainings] + predicts,
                        lambda: self._aggregated(output), action=lambda: self.aggregate(target, sources, output)))
        check_graph(jobs)
        return jobs

    def _train_job(self, name: str, needs: list[str], datasets: list[str], strategy: str, fold: str,
                   settings: TrainingSettings, commands: "StudyCommands", pretrained: Path | None = None,
                   tag: str | None = None, print_pretraining: Pretraining | None = None) -> Job:
        folder = fold_folder(self.roots, datasets, strategy, fold, tag)

        def action() -> Path:
            trained = self._train(datasets, strategy, fold, settings, pretrained, tag)
            if print_pretraining is not None:
                p = print_pretraining
                print(pretraining_line(pretraining_rows(p.tag, p.sources, read_metrics(trained))), flush=True)
            return trained

        cost = settings.epochs * settings.iters_per_epoch * make_strategy(strategy).relative_cost
        return Job(name, commands.train(datasets, strategy, fold, settings, pretrained, tag), needs,
                   lambda: (folder / "checkpoint_final.pt").is_file(), gpu=True, resume_folder=folder, action=action,
                   cost=cost)

    def pretrainings(self, sources: list[str]) -> list[Pretraining]:
        """One multi-lesion pre-training and/or one per source (on all their cases), as ``--pretrain`` asks."""
        groups = []
        if self.spec.pretrain in ("multi", "both"):
            groups.append(("multi", sources))
        if self.spec.pretrain in ("each", "both"):
            groups += [(name, [name]) for name in sources]
        return [Pretraining(tag, datasets, fold_folder(self.roots, datasets, "pretrain", "all", None))
                for tag, datasets in groups]

    # ------------------------------------------------------------------------------------------ done checks
    def _preprocessed(self, datasets: list[str]) -> bool:
        """Every training case of every dataset is preprocessed for the study's configuration."""
        for name in datasets:
            plans_path = self.roots.preprocessed / name / "plans.json"
            if not plans_path.is_file():
                return False
            plans = Plans.load(plans_path)
            if self.spec.configuration not in plans.configurations:
                return False
            configuration = plans.configurations[self.spec.configuration]
            cases = self.roots.preprocessed / name / (configuration.data_identifier or self.spec.configuration)
            raw = self.roots.raw / name
            if any(not (cases / f"{c.case_id}.json").is_file() for c in list_cases(raw, load_dataset_json(raw), "Tr")):
                return False
        return True

    def predicted(self, model_folder: Path, predictions: Path) -> bool:
        """The fold's predictions and scores exist and were made with the model's current final checkpoint."""
        final = model_folder / "checkpoint_final.pt"
        evaluation = read_record(predictions / EVALUATION_FILE)
        return final.is_file() and evaluation is not None and evaluation.get("model") == checkpoint_identity(final) \
            and evaluation.get("tolerance_mm") == self.spec.tolerance_mm

    def _aggregated(self, output: Path) -> bool:
        """The report exists and is newer than every fold's scores."""
        results = output / "results.csv"
        scores = list((output / "predictions").glob(f"*/fold_*/{EVALUATION_FILE}"))
        return results.is_file() and all(results.stat().st_mtime_ns >= p.stat().st_mtime_ns for p in scores)

    # ------------------------------------------------------------------------------------------ steps
    def prepare_target(self, target: str) -> None:
        """Plan and preprocess the target."""
        s = self.spec
        folder = plan_and_preprocess([target], self.roots, gpu_memory_gb=s.gpu_memory_gb, preset=s.preset,
                                     configurations=[s.configuration], num_processes=s.num_processes,
                                     fingerprint_voxels=s.fingerprint_voxels)[0]
        self._target = (folder.name, Plans.load(folder / "plans.json").configuration(s.configuration).to_dict())

    def prepare_sources(self, target: str, sources: list[str]) -> None:
        """Preprocess the sources with the target's plans."""
        s = self.spec
        plan_and_preprocess(sources, self.roots, plans_from=target, configurations=[s.configuration],
                            num_processes=s.num_processes, fingerprint_voxels=s.fingerprint_voxels)

    def _train(self, datasets: list[str], strategy: str, fold: str, settings: TrainingSettings,
               pretrained: Path | None = None, tag: str | None = None) -> Path:
        folder = fold_folder(self.roots, datasets, strategy, fold, tag)
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

    def check_existing_models(self, jobs: list[Job]) -> None:
        """Before launching: every training the jobs would reuse or continue was made with the study's settings and
        the target's plans (when the target is planned already; its plans are what the models are checked against)."""
        target = self.roots.preprocessed / self.names()[0] / "plans.json"
        if not target.is_file():
            return
        self._target = (target.parent.name, Plans.load(target).configuration(self.spec.configuration).to_dict())
        for job in jobs:
            folder = job.resume_folder
            existing = (folder / "checkpoint_final.pt" if (folder / "checkpoint_final.pt").is_file()
                        else newest_checkpoint(folder)) if folder is not None and folder.is_dir() else None
            if existing is not None:
                settings = self.pretrain_settings if job.name.startswith("pretrain_") else self.settings
                check_reusable(existing, settings, self._target[1], self.spec.configuration, self._target[0])

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
        """Predict the fold's test cases with one model and score them into ``evaluation.json``. Predictions made
        with this very checkpoint (``model.json`` beside them) are kept; those of an older or replaced one are redone."""
        cases = self.test_cases(target, fold)
        if not cases:
            raise CovtransferError(f"fold {fold} of {target} has no test cases: give its splits.json entry a "
                                   "'test' list, or add labelled imagesTs/labelsTs cases")
        labels = sorted(v for v in load_dataset_json(find_dataset(self.roots.raw, target)).labels.values() if v)
        inputs = [InputCase(case_id, tuple(images), file_ending(images[0])) for case_id, images, _ in cases]
        identity = checkpoint_identity(find_checkpoint(model_folder))
        if read_record(predictions / MODEL_FILE) != identity:
            for path in [predictions / case.output_name() for case in inputs] + [predictions / EVALUATION_FILE]:
                path.unlink(missing_ok=True)
            write_json(predictions / MODEL_FILE, identity)
        if any(not (predictions / case.output_name()).is_file() for case in inputs):
            models = load_models(checkpoint_paths([model_folder]), self.device)
            Predictor(models, self.device, self.spec.tta).predict_cases(inputs, predictions, skip_existing=True)
        rows = []
        for case, (case_id, _, reference) in zip(inputs, cases):
            rows += [{"fold": fold, **row} for row in evaluate_case(case_id, reference, predictions /
                                                                    case.output_name(), labels,
                                                                    self.spec.tolerance_mm)[0]]
        write_json(predictions / EVALUATION_FILE, {"model": identity, "tolerance_mm": self.spec.tolerance_mm,
                                                   "rows": rows})
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

    def aggregate(self, target: str, sources: list[str], output: Path) -> list[dict]:
        """Read every fold's scores and training history, write the report; returns one row per pre-training and
        strategy."""
        pretrainings = self.pretrainings(sources)
        self.pretraining_rows = []
        for p in pretrainings:
            self.pretraining_rows += pretraining_rows(p.tag, p.sources, read_metrics(p.folder))
        runs = []
        for strategy in self.spec.strategies:
            if make_strategy(strategy).needs_pretrained:
                runs += [(p.tag, strategy, f"from_{p.tag}") for p in pretrainings]
            else:
                runs.append(("none", strategy, None))
        rows = []
        for pretrain_tag, strategy, tag in runs:
            per_case, histories, times = [], [], []
            for fold in self.spec.folds:
                history = read_metrics(fold_folder(self.roots, [target], strategy, fold, tag))
                histories.append(history)
                times.append(sum(r["epoch_time"] for r in history))
                scores = output / "predictions" / run_name(strategy, tag) / f"fold_{fold}" / EVALUATION_FILE
                evaluation = read_record(scores)
                if evaluation is None:
                    raise CovtransferError(f"{scores}: missing; run the study's predict job of fold {fold} first")
                per_case += evaluation["rows"]
            rows.append(aggregate(pretrain_tag, strategy, per_case, histories, times))
            rows[-1]["per_case"] = per_case
            rows[-1]["histories"] = histories
        self.paired = paired_rows(rows)
        write_report(output, rows, self.commands, target, self.roots, self.paired, self.pretraining_rows)
        write_html_report(output, rows, target, self.roots, self.paired, self.pretraining_rows)
        return rows

    def job_graph(self) -> tuple[list[Job], Path, dict]:
        """The job graph, the study folder and its record, after checking the folder holds no other study."""
        target, sources, output = self.names()
        record = self.record(target, sources)
        check_study_folder(output, record)
        return self.jobs(target, sources, output), output, record

    def prepare_launch(self) -> tuple[list[Job], Path]:
        """What the local and SLURM launchers start from: the job graph, checked against models already trained,
        with ``study.json`` and ``commands.txt`` written for the jobs' processes to read."""
        jobs, output, record = self.job_graph()
        self.check_existing_models(jobs)
        write_study_record(output, record)
        write_text(output / "commands.txt", "\n".join(job.command for job in jobs) + "\n")
        return jobs, output

    def run(self) -> list[dict]:
        """Every job of the study in this process, skipping finished ones; returns the aggregated rows."""
        jobs, output, record = self.job_graph()
        target, sources = record["target"], record["sources"]
        self.commands = [job.command for job in jobs]
        rows: list[dict] = []
        for job in jobs:
            rows = job.action()
            if job.name == "plan_sources":
                self.check_prepared(target, sources)
                write_study_record(output, record)
        return rows

    def run_job(self, name: str) -> object:
        """One predict or aggregate job of the recorded study (trainings and planning are their own commands)."""
        target, sources, output = self.names()
        jobs = {job.name: job for job in self.jobs(target, sources, output)}
        if name not in jobs or not (name.startswith("predict_") or name == AGGREGATE_JOB):
            known = [n for n in jobs if n.startswith("predict_")] + [AGGREGATE_JOB]
            raise CovtransferError(f"--job {name}: not a predict or aggregate job of this study ({', '.join(known)})")
        self.commands = [job.command for job in jobs.values()]
        return jobs[name].action()


def run_name(strategy: str, tag: str | None) -> str:
    """The folder name of a strategy's run: ``<strategy>`` or ``<strategy>__<tag>``."""
    return strategy if tag is None else f"{strategy}__{tag}"


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
