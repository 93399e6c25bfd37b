"""``--launcher local``: the study's jobs as separate processes on this machine, each started as soon as the jobs
it waits for have finished, at most one per GPU (``CUDA_VISIBLE_DEVICES``) or ``max_parallel`` at a time, the
costliest ready job first (so that the longest training does not run alone at the end)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from covtransfer.errors import CovtransferError
from covtransfer.experiments.jobs import AGGREGATE_JOB, Job, done_states, job_environment, python_argv

if TYPE_CHECKING:
    from covtransfer.experiments.study import Study

POLL_SECONDS = 0.2


def run_local(jobs: list[Job], log_folder: Path, slots: list[str | None], poll: float = POLL_SECONDS) -> None:
    """Run every unfinished job, the highest ``cost`` first among those ready (ties in list order); ``slots`` are
    the GPU ids to hand out (one per running job), or ``None`` entries on the CPU. Logs go to
    ``log_folder/<job>.log``. Raises after the others ran when a job failed."""
    log_folder.mkdir(parents=True, exist_ok=True)
    state = {name: "done" if done else "waiting" for name, done in done_states(jobs).items()}
    by_name = {job.name: job for job in jobs}
    free, running = list(slots), {}
    by_cost = sorted(jobs, key=lambda job: -job.cost)
    threads = str(max(1, (os.cpu_count() or 1) // len(slots)))  # CPU jobs share the cores instead of each taking all
    skipped = [n for n, s in state.items() if s == "done"]
    if skipped:
        print(f"done already, skipped: {', '.join(skipped)}", flush=True)
    while any(s in ("waiting", "running") for s in state.values()):
        for job in by_cost:
            if state[job.name] == "waiting" and any(state[n] in ("failed", "blocked") for n in job.needs):
                state[job.name] = "blocked"
            elif state[job.name] == "waiting" and free and all(state[n] == "done" for n in job.needs):
                slot = free.pop(0)
                running[job.name] = (_start(job, log_folder, slot, threads), slot, time.monotonic())
                state[job.name] = "running"
        for name, (process, slot, started) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[name]
            free.append(slot)
            finished = code == 0 and by_name[name].is_done()
            state[name] = "done" if finished else "failed"
            print(f"{'finished' if finished else 'FAILED (exit ' + str(code) + ')'} {name} after "
                  f"{time.monotonic() - started:.0f} s (log {log_folder / f'{name}.log'})", flush=True)
        if running:
            time.sleep(poll)
    failed = [n for n, s in state.items() if s == "failed"]
    if failed:
        blocked = [n for n, s in state.items() if s == "blocked"]
        raise CovtransferError(f"{len(failed)} job(s) failed ({', '.join(failed)}; logs in {log_folder}), "
                               f"{len(blocked)} not started; run the same command again to resume")


def run_study_local(study: "Study", slots: list[str | None]) -> list[dict]:
    """Run the study's unfinished jobs as processes on ``slots`` (see :func:`run_local`), logs in ``study/logs``,
    all but the aggregate, which runs here once: returns its rows (and sets ``study.paired`` and
    ``study.pretraining_rows``)."""
    jobs, output = study.prepare_launch()
    run_local([job for job in jobs if job.name != AGGREGATE_JOB], output / "logs", slots)
    return study.run_job(AGGREGATE_JOB)


def _start(job: Job, log_folder: Path, slot: str | None, threads: str) -> subprocess.Popen:
    """Start a job's command in its own process, its output into its log; on the CPU with ``threads`` threads
    unless ``OMP_NUM_THREADS`` is set."""
    argv = job.launch_argv()
    extra = {"CUDA_VISIBLE_DEVICES": slot} if slot is not None and job.gpu else {}
    if slot is None:
        extra["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", threads)
    log = open(log_folder / f"{job.name}.log", "a")
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    print(f"started {job.name}" + (f" on GPU {slot}" if slot is not None else ""), flush=True)
    with log:
        return subprocess.Popen(python_argv(argv), stdout=log, stderr=subprocess.STDOUT, env=job_environment(extra))
