"""The work a study's jobs do: plan and preprocess, train, predict and evaluate a fold, and the checks of whether
that work is done already and was done with the study's settings."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from covtransfer.atomic import write_json
from covtransfer.config import Roots, find_dataset
from covtransfer.data.dataset_json import list_cases, load_dataset_json
from covtransfer.data.image_io import file_ending
from covtransfer.errors import CovtransferError
from covtransfer.evaluation.evaluate import evaluate_case
from covtransfer.experiments.jobs import Job
from covtransfer.experiments.pretraining_summary import pretraining_line, pretraining_rows
from covtransfer.experiments.spec import Pretraining, StudySpec
from covtransfer.experiments.study_record import check_reusable, checkpoint_identity, read_record
from covtransfer.inference.inputs import InputCase
from covtransfer.inference.model_loading import checkpoint_paths, load_models
from covtransfer.inference.predictor import Predictor
from covtransfer.plans import Plans
from covtransfer.training.api import fold_folder, load_task, read_metrics, train
from covtransfer.training.checkpoint import find_checkpoint, newest_checkpoint
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import TrainingSettings
from covtransfer.workflow.plan_and_preprocess import plan_and_preprocess

MODEL_FILE = "model.json"  # beside a fold's predictions: the checkpoint they were made with
EVALUATION_FILE = "evaluation.json"  # beside a fold's predictions: their per-case scores


class StudyWork:
    """What each job of one study does, with the study's spec, data roots, device and (resolved) settings."""

    def __init__(self, spec: StudySpec, roots: Roots, device: torch.device | None, settings: TrainingSettings,
                 pretrain_settings: TrainingSettings):
        self.spec, self.roots, self.device = spec, roots, device
        self.settings, self.pretrain_settings = settings, pretrain_settings
        self.target: tuple[str, dict] = ("", {})  # the target's name and plans configuration, set by prepare

    def prepare_target(self, target: str) -> None:
        """Plan and preprocess the target."""
        s = self.spec
        folder = plan_and_preprocess([target], self.roots, gpu_memory_gb=s.gpu_memory_gb, preset=s.preset,
                                     configurations=[s.configuration], num_processes=s.num_processes,
                                     fingerprint_voxels=s.fingerprint_voxels)[0]
        self.target = (folder.name, Plans.load(folder / "plans.json").configuration(s.configuration).to_dict())

    def prepare_sources(self, target: str, sources: list[str]) -> None:
        """Preprocess the sources with the target's plans."""
        s = self.spec
        plan_and_preprocess(sources, self.roots, plans_from=target, configurations=[s.configuration],
                            num_processes=s.num_processes, fingerprint_voxels=s.fingerprint_voxels)

    def preprocessed(self, datasets: list[str]) -> bool:
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

    def train(self, datasets: list[str], strategy: str, fold: str, settings: TrainingSettings,
              pretrained: Path | None = None, tag: str | None = None,
              print_pretraining: Pretraining | None = None) -> Path:
        """Train one fold, or continue its interrupted run, after checking a checkpoint there fits the study;
        a pre-training prints its final per-source EMA."""
        folder = fold_folder(self.roots, datasets, strategy, fold, tag)
        final = folder / "checkpoint_final.pt"
        existing = final if final.is_file() else newest_checkpoint(folder) if folder.is_dir() else None
        if existing is not None:
            name, configuration = self.target
            check_reusable(existing, settings, configuration, self.spec.configuration, name)
        if not final.is_file():
            folder = train(datasets, make_strategy(strategy), fold, self.roots, settings, self.spec.configuration,
                           pretrained, resume=existing is not None, tag=tag)
        if print_pretraining is not None:
            p = print_pretraining
            print(pretraining_line(pretraining_rows(p.tag, p.sources, read_metrics(folder))), flush=True)
        return folder

    def check_existing_models(self, target: str, jobs: list[Job]) -> None:
        """Before launching: every training the jobs would reuse or continue was made with the study's settings and
        the target's plans (when the target is planned already; its plans are what the models are checked against)."""
        plans = self.roots.preprocessed / target / "plans.json"
        if not plans.is_file():
            return
        self.target = (plans.parent.name, Plans.load(plans).configuration(self.spec.configuration).to_dict())
        for job in jobs:
            folder = job.resume_folder
            existing = (folder / "checkpoint_final.pt" if (folder / "checkpoint_final.pt").is_file()
                        else newest_checkpoint(folder)) if folder is not None and folder.is_dir() else None
            if existing is not None:
                settings = self.pretrain_settings if job.name.startswith("pretrain_") else self.settings
                check_reusable(existing, settings, self.target[1], self.spec.configuration, self.target[0])

    def check_prepared(self, target: str, sources: list[str]) -> None:
        """Before any training: every source shares the target's plans, every fold exists and has test cases."""
        name = self.spec.configuration
        target_plans = Plans.load(find_dataset(self.roots.preprocessed, target) / "plans.json")
        for source in sources:
            plans = Plans.load(find_dataset(self.roots.preprocessed, source) / "plans.json")
            if name not in plans.configurations or plans.configuration(name).to_dict() != self.target[1] \
                    or plans.transpose_forward != target_plans.transpose_forward:
                raise CovtransferError(f"{source}: planned with other plans than {target}'s; preprocess it with "
                                       f"covtransfer_plan_and_preprocess -d {source} --plans-from {target}")
        for fold in self.spec.folds:
            load_task(self.roots, target, name, fold)
            if not self.test_cases(target, fold):
                raise CovtransferError(f"fold {fold} of {target} has no test cases: give its splits.json entry a "
                                       "'test' list, or add labelled imagesTs/labelsTs cases")

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

    def predicted(self, model_folder: Path, predictions: Path) -> bool:
        """The fold's predictions and scores exist and were made with the model's current final checkpoint."""
        final = model_folder / "checkpoint_final.pt"
        evaluation = read_record(predictions / EVALUATION_FILE)
        return final.is_file() and evaluation is not None and evaluation.get("model") == checkpoint_identity(final) \
            and evaluation.get("tolerance_mm") == self.spec.tolerance_mm

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
