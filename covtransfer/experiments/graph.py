"""The study's job graph: which jobs there are, what each waits for, its command and its done check. What a job does
is :class:`covtransfer.experiments.work.StudyWork`'s business; here each job only points at it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from covtransfer.experiments.aggregation import aggregated
from covtransfer.experiments.jobs import AGGREGATE_JOB, Job, check_graph
from covtransfer.experiments.spec import Pretraining, pretrainings, run_name, runs
from covtransfer.experiments.study_commands import StudyCommands
from covtransfer.experiments.work import StudyWork
from covtransfer.training.api import fold_folder
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import TrainingSettings


def study_jobs(work: StudyWork, commands: StudyCommands, target: str, sources: list[str], output: Path,
               aggregate: Callable[[], object]) -> list[Job]:
    """Every job of the study in an order that runs each after what it waits for: ``plan_target``,
    ``plan_sources``, ``pretrain_<tag>``, ``train_<run>_fold_K``, ``predict_<run>_fold_K`` and ``aggregate``."""
    spec, roots = work.spec, work.roots
    jobs = [Job("plan_target", commands.plan([target]), [], lambda: work.preprocessed([target]),
                action=lambda: work.prepare_target(target)),
            Job("plan_sources", commands.plan(sources, plans_from=target), ["plan_target"],
                lambda: work.preprocessed(sources), action=lambda: work.prepare_sources(target, sources))]
    pretrained = pretrainings(spec, roots, sources)
    for p in pretrained:
        jobs.append(_train_job(work, commands, f"pretrain_{p.tag}", ["plan_sources"], p.sources, "pretrain", "all",
                               work.pretrain_settings, print_pretraining=p))
    predicts = []
    for strategy, pretraining in runs(spec, pretrained):
        tag = None if pretraining is None else f"from_{pretraining.tag}"
        name = run_name(strategy, tag)
        for fold in spec.folds:
            needs = [f"pretrain_{pretraining.tag}"] if pretraining else ["plan_target"]
            train_job = _train_job(work, commands, f"train_{name}_fold_{fold}", needs, [target], strategy, fold,
                                   work.settings, pretraining.folder if pretraining else None, tag)
            model = fold_folder(roots, [target], strategy, fold, tag)
            predictions = output / "predictions" / name / f"fold_{fold}"
            predicts.append(f"predict_{name}_fold_{fold}")
            jobs += [train_job,
                     Job(predicts[-1], commands.study_job(predicts[-1]), [train_job.name],
                         lambda m=model, p=predictions: work.predicted(m, p), gpu=True,
                         action=lambda m=model, f=fold, p=predictions: work.evaluate_fold(target, m, f, p))]
    jobs.append(Job(AGGREGATE_JOB, commands.study_job(AGGREGATE_JOB),
                    [f"pretrain_{p.tag}" for p in pretrained] + predicts, lambda: aggregated(output),
                    action=aggregate))
    check_graph(jobs)
    return jobs


def _train_job(work: StudyWork, commands: StudyCommands, name: str, needs: list[str], datasets: list[str],
               strategy: str, fold: str, settings: TrainingSettings, pretrained: Path | None = None,
               tag: str | None = None, print_pretraining: Pretraining | None = None) -> Job:
    """A training job: done when its final checkpoint exists; costs its iterations times the strategy's cost."""
    folder = fold_folder(work.roots, datasets, strategy, fold, tag)
    cost = settings.epochs * settings.iters_per_epoch * make_strategy(strategy).relative_cost
    return Job(name, commands.train(datasets, strategy, fold, settings, pretrained, tag), needs,
               lambda: (folder / "checkpoint_final.pt").is_file(), gpu=True, resume_folder=folder,
               action=lambda: work.train(datasets, strategy, fold, settings, pretrained, tag, print_pretraining),
               cost=cost)
