"""The study as a graph of jobs: each job is one command a user could run by hand, the jobs it waits for, and a
check of whether its output exists and is complete, so that every launcher runs (or skips) the same work."""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import covtransfer
from covtransfer.errors import CovtransferError


AGGREGATE_JOB = "aggregate"  # the study's last job: reads every fold's scores and writes the report


@dataclass
class Job:
    """One step of the study. ``argv`` starts with a ``covtransfer_*`` command; ``resume_folder`` is the training
    folder whose checkpoint a rerun continues from (``--continue``); ``action`` runs the step in this process;
    ``cost`` estimates its run time in relative units, so that a launcher can start the longest ready job first."""

    name: str
    argv: list[str]
    needs: list[str] = field(default_factory=list)
    is_done: Callable[[], bool] = lambda: False
    gpu: bool = False
    resume_folder: Path | None = None
    action: Callable[[], object] | None = None
    cost: float = 0.0

    @property
    def command(self) -> str:
        """The command line, quoted for a shell."""
        return shlex.join(self.argv)

    def launch_argv(self) -> list[str]:
        """The command as run now: with ``--continue`` when an interrupted training left a checkpoint."""
        resume = self.resume_folder is not None and any(self.resume_folder.glob("checkpoint_*.pt")) \
            and not self.is_done()
        return self.argv + (["--continue"] if resume else [])


def check_graph(jobs: list[Job]) -> None:
    """Refuse repeated job names and jobs that wait for a job listed after them (the list is run in order)."""
    seen: set[str] = set()
    for job in jobs:
        if job.name in seen:
            raise CovtransferError(f"job {job.name} is listed twice")
        missing = [need for need in job.needs if need not in seen]
        if missing:
            raise CovtransferError(f"job {job.name} waits for {', '.join(missing)}, which is not listed before it")
        seen.add(job.name)


def done_states(jobs: list[Job]) -> dict[str, bool]:
    """Whether each job is finished: its own output is complete and so is everything it waits for."""
    done: dict[str, bool] = {}
    for job in jobs:
        done[job.name] = all(done[need] for need in job.needs) and job.is_done()
    return done


def describe(jobs: list[Job]) -> str:
    """The graph as text for ``--dry-run``: every job's state, what it waits for, and its command."""
    done = done_states(jobs)
    lines = [f"{len(jobs)} jobs, {sum(done.values())} done (skipped), {len(jobs) - sum(done.values())} to run:"]
    for job in jobs:
        state = "done, skip" if done[job.name] else "to run"
        lines.append(f"[{state}] {job.name}" + (f"  (waits for {', '.join(job.needs)})" if job.needs else ""))
        lines.append(f"    {shlex.join(job.launch_argv())}")
    return "\n".join(lines)


def python_argv(argv: list[str]) -> list[str]:
    """``covtransfer_X args`` as ``python -m covtransfer.cli.X args``: the same interpreter and package as this
    process, whether or not the console scripts are on the PATH."""
    if not argv[0].startswith("covtransfer_"):
        raise CovtransferError(f"{argv[0]}: not a covtransfer command")
    return [sys.executable, "-m", f"covtransfer.cli.{argv[0].removeprefix('covtransfer_')}"] + argv[1:]


def job_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment, with this covtransfer first on PYTHONPATH so that jobs run the same code."""
    env = dict(os.environ, **(extra or {}))
    package_root = str(Path(covtransfer.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env
