"""The launcher options of ``covtransfer_study`` (``--launcher``, ``--dry-run``, ``--job`` …) and what they run:
the study's job graph printed, run as local processes, submitted to SLURM, or one of its jobs run here."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from covtransfer.cli.common import roots_from_args
from covtransfer.devices import resolve_device
from covtransfer.errors import CovtransferError
from covtransfer.experiments.jobs import AGGREGATE_JOB, describe
from covtransfer.experiments.launch_local import run_local
from covtransfer.experiments.launch_slurm import SlurmOptions, submit_slurm
from covtransfer.experiments.report import summary_text
from covtransfer.experiments.study import Study


@dataclass
class Launcher:
    """How the study's jobs run: ``inline``, ``local`` (on ``slots``: GPU ids or ``None`` per CPU job) or
    ``slurm``; ``deferred_device``: each job resolves ``--device`` on its own machine."""

    kind: str
    slots: list[str | None]
    slurm: SlurmOptions | None = None
    deferred_device: bool = False


def add_launcher_arguments(p: argparse.ArgumentParser) -> None:
    """The options that choose where the study's jobs run."""
    g = p.add_argument_group("launchers (documentation/study.md, section 'Many GPUs')")
    g.add_argument("--dry-run", action="store_true",
                   help="print every job's command, what it waits for and whether it is done (skipped); run nothing")
    g.add_argument("--launcher", choices=("inline", "local", "slurm"), default="inline",
                   help="inline: one job after another in this process (default); local: each job its own process, "
                        "started when the jobs it waits for are done; slurm: each job a SLURM job (submitit)")
    g.add_argument("--max-parallel", type=int, metavar="N", help="local: jobs at a time without --gpus (default 1)")
    g.add_argument("--gpus", metavar="IDS", help="local: comma-separated GPU ids, one job per GPU at a time "
                                                 "(CUDA_VISIBLE_DEVICES), e.g. 0,1,2,3")
    g.add_argument("--partition", help="slurm: the partition (required with --launcher slurm)")
    g.add_argument("--gpus-per-job", type=int, default=1, metavar="N",
                   help="slurm: GPUs of each training and prediction job; a training on N > 1 runs through torchrun "
                        "(default 1)")
    g.add_argument("--time", default="24:00", metavar="HH:MM", help="slurm: time limit of each job (default 24:00)")
    g.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: a further #SBATCH --KEY=VALUE of every job (repeatable), e.g. account=proj")
    g.add_argument("--job", metavar="NAME", help="run one predict_* or aggregate job of the study in -o (what the "
                                                 "launchers run; the study's options are read from its study.json)")


def check_launcher_arguments(args: argparse.Namespace) -> Launcher:
    """Refuse options of another launcher and malformed values with one line; returns the launcher."""
    kind = args.launcher
    local_only = [flag for flag, value in (("--max-parallel", args.max_parallel), ("--gpus", args.gpus)) if value]
    slurm_only = [flag for flag, given in (("--partition", args.partition), ("--gpus-per-job", args.gpus_per_job != 1),
                                           ("--time", args.time != "24:00"), ("--slurm-arg", args.slurm_arg)) if given]
    if kind != "local" and local_only:
        raise CovtransferError(f"{', '.join(local_only)}: only with --launcher local")
    if kind != "slurm" and slurm_only:
        raise CovtransferError(f"{', '.join(slurm_only)}: only with --launcher slurm")
    if kind == "slurm":
        if not args.partition:
            raise CovtransferError("--launcher slurm needs --partition P")
        if args.gpus_per_job < 0:
            raise CovtransferError(f"--gpus-per-job {args.gpus_per_job}: must be at least 0")
        extra = {}
        for item in args.slurm_arg:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise CovtransferError(f"--slurm-arg {item!r}: use KEY=VALUE, e.g. account=myproject")
            extra[key.strip().lstrip("-")] = value
        options = SlurmOptions(args.partition, args.gpus_per_job, args.time, extra)
        options.minutes  # refuses a malformed --time before anything is submitted
        return Launcher(kind, [], options, deferred_device=True)
    if kind == "local" and args.gpus:
        gpus = [g.strip() for g in args.gpus.split(",")]
        if not all(g.isdigit() for g in gpus) or len(set(gpus)) < len(gpus):
            raise CovtransferError(f"--gpus {args.gpus}: use distinct GPU ids separated by commas, e.g. 0,1,2,3")
        if resolve_device(args.device).type != "cuda":
            raise CovtransferError(f"--gpus with --device {args.device}: the jobs run on the GPUs (--device cuda)")
        args.device = "cuda"  # each job sees its one GPU as cuda:0
        return Launcher(kind, list(gpus))
    if args.max_parallel is not None and args.max_parallel < 1:
        raise CovtransferError(f"--max-parallel {args.max_parallel}: must be at least 1")
    return Launcher(kind, [None] * (args.max_parallel or 1))


def launch(study: Study, launcher: Launcher, dry_run: bool) -> int:
    """Print the job graph (``dry_run``), or run / submit the unfinished jobs with the local or SLURM launcher."""
    if dry_run:
        print(describe(study.job_graph()[0]))
        return 0
    jobs, output = study.prepare_launch()
    if launcher.kind == "slurm":
        submit_slurm(jobs, output / "slurm", launcher.slurm)
        return 0
    run_local(jobs, output / "logs", launcher.slots)
    print("\n" + (output / "results.md").read_text())
    return 0


def run_job(args: argparse.Namespace) -> int:
    """``--job NAME``: one predict or aggregate job of the study recorded in ``-o``."""
    if not args.output:
        raise CovtransferError("--job needs -o STUDY_FOLDER (the folder holding study.json)")
    study = Study.from_folder(Path(args.output), roots_from_args(args), args.device)
    result = study.run_job(args.job)
    if args.job == AGGREGATE_JOB:
        print("\n" + summary_text(result, study.paired, study.pretraining_rows, study.spec.tolerance_mm))
    else:
        print(f"{args.job}: {len(result)} test case score(s) in {Path(args.output) / 'predictions'}")
    return 0
