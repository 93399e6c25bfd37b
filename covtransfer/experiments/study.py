"""The transfer study: plan the target, preprocess the sources with the target's plans, pre-train on the source
lesions, train every strategy on every fold of the target, predict each fold's test cases, evaluate, aggregate.

Every step is skipped when its output exists, so a rerun (or a run after an interruption) continues where the
last one stopped; ``study.json`` records the spec so a rerun with another configuration is refused. Results go to
``<study folder>/``: ``results.csv`` and ``results.md`` (with the paired comparison against scratch),
``pretraining.csv``, plots, ``commands.txt``.

The spec and its checks are in :mod:`~covtransfer.experiments.spec`, the job graph in
:mod:`~covtransfer.experiments.graph`, what each job does in :mod:`~covtransfer.experiments.work` and the last job
in :mod:`~covtransfer.experiments.aggregation`; :class:`Study` ties them to one study folder and runs the jobs
here, the launchers in other processes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from covtransfer.atomic import write_text
from covtransfer.config import Roots, find_dataset
from covtransfer.devices import resolve_device
from covtransfer.errors import CovtransferError
from covtransfer.experiments.aggregation import aggregate_study
from covtransfer.experiments.graph import study_jobs
from covtransfer.experiments.jobs import AGGREGATE_JOB, Job
from covtransfer.experiments.spec import StudySpec, check_spec, spec_from_record
from covtransfer.experiments.study_commands import StudyCommands
from covtransfer.experiments.study_record import (RECORD_FILE, check_study_folder, read_record, settings_identity,
                                                  write_study_record)
from covtransfer.experiments.work import StudyWork


class Study:
    """Runs a :class:`StudySpec` as a graph of jobs (:mod:`covtransfer.experiments.graph`), here one after another.

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
        self.work = StudyWork(spec, roots, self.device, self.settings, self.pretrain_settings)
        self.commands: list[str] = []
        self.paired: list[dict] = []
        self.pretraining_rows: list[dict] = []

    @classmethod
    def from_folder(cls, output: Path, roots: Roots, device: str = "auto") -> "Study":
        """The study recorded in ``output/study.json`` (written before any job of a launcher runs)."""
        record = read_record(Path(output) / RECORD_FILE)
        if record is None:
            raise CovtransferError(f"{output}: no readable {RECORD_FILE}; run covtransfer_study with the study's "
                                   "options first")
        return cls(spec_from_record(record, device), roots, output)

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

    def jobs(self, target: str, sources: list[str], output: Path) -> list[Job]:
        """Every job of the study in an order that runs each after what it waits for."""
        commands = StudyCommands(self.spec, self.roots, self.settings.device, output)
        return study_jobs(self.work, commands, target, sources, output,
                          lambda: self._aggregate(target, sources, output))

    def _aggregate(self, target: str, sources: list[str], output: Path) -> list[dict]:
        """The aggregate job: write the report, keep its paired and pre-training rows; returns the results rows."""
        rows, self.paired, self.pretraining_rows = aggregate_study(self.spec, self.roots, target, sources, output,
                                                                   self.commands)
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
        self.work.check_existing_models(record["target"], jobs)
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
                self.work.check_prepared(target, sources)
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
