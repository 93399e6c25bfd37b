"""``--launcher slurm``: every unfinished job of the study becomes a SLURM job through submitit, waiting for the
jobs it depends on with ``afterok``; logs and job ids live under ``<study>/slurm/``. Run again, it reports each
job's state and resubmits only the failed and missing ones (an interrupted training continues from its checkpoint)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from covtransfer.atomic import write_json
from covtransfer.errors import CovtransferError
from covtransfer.experiments.jobs import Job, done_states, job_environment, python_argv
from covtransfer.experiments.study_record import read_record

SUBMITTED_FILE = "submitted.json"
ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED")


@dataclass
class SlurmOptions:
    """What each SLURM job asks for; ``extra`` are further ``#SBATCH --KEY=VALUE`` lines (``--slurm-arg``)."""

    partition: str
    gpus_per_job: int = 1
    time: str = "24:00"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def minutes(self) -> int:
        """``--time HH:MM`` in minutes."""
        hours, _, minutes = self.time.partition(":")
        if not (hours.isdigit() and minutes.isdigit() and int(minutes) < 60 and int(hours) * 60 + int(minutes) > 0):
            raise CovtransferError(f"--time {self.time}: use HH:MM, e.g. 24:00")
        return int(hours) * 60 + int(minutes)


def run_command(argv: list[str], env: dict[str, str]) -> None:
    """What each SLURM job runs: the job's command, its output into the job's log."""
    subprocess.run(argv, env=dict(os.environ, **env), check=True)


def job_argv(job: Job, gpus: int) -> list[str]:
    """The job's command as the node runs it: a training on several GPUs through torchrun, one process per GPU."""
    argv = python_argv(job.launch_argv())
    if gpus > 1 and job.argv[0] == "covtransfer_train":
        return [argv[0], "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"] + argv[1:]
    return argv


def submit_slurm(jobs: list[Job], folder: Path, options: SlurmOptions) -> dict[str, str]:
    """Submit every job that is neither done nor queued/running; returns each job's state (done, running,
    submitted, resubmitted) and prints it with the log path."""
    try:
        import submitit
    except ImportError:
        raise CovtransferError("--launcher slurm needs submitit: pip install covtransfer[cluster]") from None
    minutes = options.minutes
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / SUBMITTED_FILE
    submitted: dict[str, str] = read_record(record_path) or {}
    done = done_states(jobs)
    try:
        executor = submitit.SlurmExecutor(folder=folder / "%j")
    except RuntimeError:
        raise CovtransferError("--launcher slurm: no srun on the PATH; submit from a SLURM login node") from None
    env = {key: value for key, value in job_environment().items() if key == "PYTHONPATH"}
    watcher = submitit.SlurmJob.watcher  # one sacct call for every job submitted before
    watcher.clear()
    for old in submitted.values():
        watcher.register_job(old)
    if submitted:
        watcher.update()
    states, ids, fresh = {}, {}, set()
    for job in jobs:
        if done[job.name]:
            states[job.name] = "done"
            continue
        old = submitted.get(job.name)
        state = watcher.get_state(old, mode="cache") if old else "MISSING"
        if state in ACTIVE_STATES and not any(need in fresh for need in job.needs):
            states[job.name], ids[job.name] = f"running ({state.lower()})", old
            continue
        if state in ACTIVE_STATES:  # it waits for a job that failed and is resubmitted now: wait for the new one
            submitit.SlurmJob(folder / "%j", old).cancel(check=False)
            state = "waiting for a failed job"
        gpus = options.gpus_per_job if job.gpu else 0
        waits = [ids[need] for need in job.needs if need in ids]
        executor.update_parameters(job_name=job.name, partition=options.partition, time=minutes,
                                   gpus_per_node=gpus or None, ntasks_per_node=1, stderr_to_stdout=True,
                                   additional_parameters={**({"dependency": "afterok:" + ":".join(waits)}
                                                             if waits else {}), **options.extra})
        ids[job.name] = submitted[job.name] = executor.submit(run_command, job_argv(job, gpus), env).job_id
        write_json(record_path, submitted)
        fresh.add(job.name)
        states[job.name] = "submitted" if old is None else f"resubmitted (was {state.lower()})"
    for job in jobs:
        log = submitit.SlurmJob(folder / "%j", ids[job.name]).paths.stdout if job.name in ids else None
        print(f"{states[job.name]:<30} {job.name}" + (f"  job {ids[job.name]}, log {log}" if log else ""))
    print(f"\nfollow: squeue -u $USER --name={','.join(ids) or '-'}  (logs: {folder}/<job id>/)\n"
          "run the same covtransfer_study command again to see each job's state and resubmit failed or missing ones")
    return states
