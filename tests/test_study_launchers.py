"""The study's job graph and launchers on tiny data: the --dry-run graph, the local launcher against inline, a
killed training resumed on the next invocation, and SLURM submissions through submitit with stand-ins for the
three SLURM commands it calls (sbatch, sacct, scancel), whose submission files are checked line by line."""

import csv
import json
import os
import pickle
import stat
import sys

import pytest

from covtransfer.cli import study
from covtransfer.config import Roots
from covtransfer.experiments import launch_local
from covtransfer.experiments.jobs import Job, done_states, python_argv
from covtransfer.experiments.launch_slurm import SlurmOptions, submit_slurm
from covtransfer.experiments.spec import StudySpec
from covtransfer.experiments.study import Study
from covtransfer.training.trainer import TrainingSettings
from cli_checks import refusal, root_flags, run_command
from tiny_data import STUDY_FLAGS, write_study_datasets

pytest.importorskip("submitit")
SCRATCH = STUDY_FLAGS + ["--strategies", "scratch"]


def _results(folder) -> list[dict]:
    with open(folder / "results.csv") as handle:
        return [{k: v for k, v in row.items() if k != "training_minutes"} for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("local")
    write_study_datasets(base / "raw")
    code, printed = run_command(study.main, SCRATCH + root_flags(base) + ["-o", str(base / "study"), "--launcher",
                                                                          "local", "--max-parallel", "2"])
    assert code == 0, printed
    return base, printed


def test_dry_run_prints_the_graph_of_the_published_protocol(tmp_path, capsys):
    write_study_datasets(tmp_path / "raw")
    argv = ["--target", "11", "--sources", "12", "13", "--pretrain", "both"] + root_flags(tmp_path)
    code, printed = run_command(study.main, argv + ["--dry-run"])
    assert code == 0
    # 2 planning jobs, 3 pre-trainings, 5 folds x (scratch + 4 strategies x 3 pre-trainings) x (train + predict), 1
    assert printed.splitlines()[0] == f"{2 + 3 + 5 * 13 * 2 + 1} jobs, 0 done (skipped), {2 + 3 + 130 + 1} to run:"
    assert "[to run] pretrain_Dataset012_SourceA  (waits for plan_sources)" in printed
    assert "[to run] train_hybrid__from_multi_fold_3  (waits for pretrain_multi)" in printed
    assert "[to run] predict_scratch_fold_0  (waits for train_scratch_fold_0)" in printed
    results = str((tmp_path / "results").absolute())
    assert (f"    covtransfer_train -d Dataset011_Target -t encoder -f 4 --pretrained {results}/Pretrain__Dataset012_"
            f"SourceA__Dataset013_SourceB/pretrain/fold_all --tag from_multi --epochs 1000 --iters-per-epoch 250 "
            f"--val-iters 50 --device cpu --seed 12345 --amp auto --no-final-validation") in printed
    assert not (tmp_path / "results").exists()  # nothing was run or written


def test_local_launcher_equals_inline(local_run, tmp_path):
    base, printed = local_run
    assert "| none | scratch | 2 |" in printed
    for name in ("plan_target", "pretrain_multi", "train_scratch_fold_all", "predict_scratch_fold_all", "aggregate"):
        assert f"finished {name}" in printed and (base / "study" / "logs" / f"{name}.log").is_file()
    commands = (base / "study" / "commands.txt").read_text().splitlines()
    assert len(commands) == 6 and commands[-1].startswith("covtransfer_study --job aggregate -o ")
    write_study_datasets(tmp_path / "raw")
    code, _ = run_command(study.main, SCRATCH + root_flags(tmp_path) + ["-o", str(tmp_path / "study")])
    assert code == 0
    assert _results(tmp_path / "study") == _results(base / "study")


class _Finished:
    """A stand-in process that has exited with status 0."""

    def poll(self) -> int:
        return 0


def test_local_launcher_starts_the_costliest_ready_job_first(monkeypatch, tmp_path):
    started = []
    monkeypatch.setattr(launch_local, "_start", lambda job, *rest: started.append(job.name) or _Finished())

    def job(name: str, needs: list[str], cost: float = 0.0) -> Job:
        return Job(name, ["covtransfer_train"], needs, lambda: name in started, cost=cost)

    jobs = [job("plan", []), job("short", ["plan"], 1.0), job("predict_short", ["short"]),
            job("long", ["plan"], 3.0), job("predict_long", ["long"])]
    launch_local.run_local(jobs, tmp_path / "logs", [None], poll=0.0)
    # list order: plan, short, predict_short, long, predict_long (the longest training last)
    assert started == ["plan", "long", "short", "predict_short", "predict_long"]


def test_study_jobs_cost_their_iterations_times_the_strategy_cost(tmp_path):
    settings = TrainingSettings(epochs=3, iters_per_epoch=10)
    spec = StudySpec(target="11", sources=["12", "13"], strategies=["scratch", "finetune", "hybrid"], folds=["all"],
                     settings=settings, pretrain_settings=TrainingSettings(epochs=5, iters_per_epoch=10))
    jobs = {job.name: job for job in Study(spec, Roots(tmp_path / "raw", tmp_path / "pre", tmp_path / "res"),
                                           tmp_path / "study").jobs("Dataset011_T", ["Dataset012_A", "Dataset013_B"],
                                                                    tmp_path / "study")}
    costs = {name: job.cost for name, job in jobs.items() if job.cost}
    assert costs == {"pretrain_multi": 50.0, "train_scratch_fold_all": 30.0,
                     "train_finetune__from_multi_fold_all": pytest.approx(24.0),
                     "train_hybrid__from_multi_fold_all": pytest.approx(42.0)}


def test_killed_training_is_resumed_on_the_next_invocation(local_run, capsys):
    base, _ = local_run
    fold = base / "results" / "Dataset011_Target" / "scratch" / "fold_all"
    # killed after its last checkpoint, before the final one: what a rerun must continue, not start over
    (fold / "checkpoint_final.pt").rename(fold / "checkpoint_latest.pt")
    epochs = (fold / "metrics.jsonl").read_text()
    before = _results(base / "study")
    flags = SCRATCH + root_flags(base) + ["-o", str(base / "study"), "--launcher", "local", "--max-parallel", "2"]
    _, graph = run_command(study.main, flags + ["--dry-run"])
    assert graph.splitlines()[0] == "6 jobs, 3 done (skipped), 3 to run:"
    assert "[done, skip] pretrain_multi" in graph and "[to run] predict_scratch_fold_all" in graph
    assert "-t scratch -f all" in graph and graph.count("--continue") == 1
    code, printed = run_command(study.main, flags)
    assert code == 0
    assert "done already, skipped: plan_target, plan_sources, pretrain_multi" in printed
    assert "resumed from checkpoint_latest.pt" in (base / "study" / "logs" / "train_scratch_fold_all.log").read_text()
    assert (fold / "checkpoint_final.pt").is_file() and (fold / "metrics.jsonl").read_text() == epochs
    assert _results(base / "study") == before


def test_bad_launcher_options_are_refused(local_run, capsys):
    base, _ = local_run
    argv = SCRATCH + root_flags(base) + ["-o", str(base / "study")]
    refusal(study.main, argv + ["--gpus", "0"], capsys, "--gpus: only with --launcher local")
    refusal(study.main, argv + ["--launcher", "slurm"], capsys, "needs --partition")
    refusal(study.main, argv + ["--launcher", "slurm", "--partition", "p", "--time", "1h"], capsys, "--time 1h")
    refusal(study.main, argv + ["--launcher", "slurm", "--partition", "p", "--slurm-arg", "x"], capsys, "KEY=VALUE")
    refusal(study.main, argv + ["--launcher", "local", "--max-parallel", "0"], capsys, "at least 1")
    refusal(study.main, argv + ["--launcher", "local", "--gpus", "0,0"], capsys, "distinct GPU ids")
    refusal(study.main, ["--job", "aggregate"] + root_flags(base), capsys, "--job needs -o")
    refusal(study.main, ["--job", "train_scratch_fold_all", "-o", str(base / "study")] + root_flags(base), capsys,
            "not a predict or aggregate job")


# ---------------------------------------------------------------------------------------------------- SLURM
SBATCH = """#!/bin/sh
n=$(($(cat "$FAKE_SLURM/next") + 1)); echo $n > "$FAKE_SLURM/next"
echo "Submitted batch job $n"
"""
SACCT = """#!/bin/sh
echo "JobID|State|NodeList"; cat "$FAKE_SLURM/states"
"""
SCANCEL = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM/cancelled"
"""


@pytest.fixture
def slurm_commands(tmp_path, monkeypatch):
    """sbatch hands out job ids 1, 2, ...; sacct reports the states written to ``states``; scancel records."""
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    for name, text in (("sbatch", SBATCH), ("sacct", SACCT), ("scancel", SCANCEL), ("srun", "#!/bin/sh\n")):
        (bin_folder / name).write_text(text)
        (bin_folder / name).chmod(stat.S_IRWXU)
    (tmp_path / "next").write_text("0\n")
    (tmp_path / "states").write_text("")
    monkeypatch.setenv("FAKE_SLURM", str(tmp_path))
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def _submission(folder, job_id: str) -> tuple[list[str], list[str]]:
    """The #SBATCH lines and the command of a submitted job."""
    sbatch = [line for line in (folder / job_id / f"{job_id}_submission.sh").read_text().splitlines()
              if line.startswith("#SBATCH")]
    with open(folder / job_id / f"{job_id}_submitted.pkl", "rb") as handle:
        delayed = pickle.load(handle)
    return sbatch, delayed.args[0]


def test_slurm_submissions_dependencies_and_resubmission(slurm_commands, tmp_path, capsys):
    write_study_datasets(tmp_path / "raw")
    roots = Roots(tmp_path / "raw", tmp_path / "pre", tmp_path / "res")
    settings = TrainingSettings(epochs=2, iters_per_epoch=2, val_iters=1, device="auto", final_validation=False)
    spec = StudySpec(target="11", sources=["12", "13"], strategies=["scratch", "finetune"], folds=["0"],
                     settings=settings)
    s = Study(spec, roots, tmp_path / "study", resolve=False)
    jobs = s.jobs(*s.names())
    folder = tmp_path / "study" / "slurm"
    options = SlurmOptions("gpu", 2, "01:30", {"account": "proj"})
    states = submit_slurm(jobs, folder, options)
    assert list(states.values()) == ["submitted"] * 8
    ids = json.loads((folder / "submitted.json").read_text())
    assert [ids[job.name] for job in jobs] == [str(i) for i in range(1, 9)]
    for job in jobs:
        sbatch, argv = _submission(folder, ids[job.name])
        assert "#SBATCH --partition=gpu" in sbatch and "#SBATCH --time=90" in sbatch
        assert "#SBATCH --account=proj" in sbatch and f"#SBATCH --job-name={job.name}" in sbatch
        assert f"#SBATCH --output={folder}/%j/%j_0_log.out" in sbatch
        assert ("#SBATCH --gpus-per-node=2" in sbatch) == job.gpu
        waits = ":".join(ids[need] for need in job.needs)
        assert [line for line in sbatch if "dependency" in line] == ([f"#SBATCH --dependency=afterok:{waits}"]
                                                                    if waits else [])
        expected = python_argv(job.argv)
        if job.argv[0] == "covtransfer_train":  # 2 GPUs per job: one training process per GPU
            expected = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] + \
                expected[1:]
        assert argv == expected
    assert "--device auto" in jobs[2].command  # resolved on the node, not on the login node

    # the scratch training died (e.g. out of time) after writing a checkpoint; the others are queued or running
    scratch = roots.results / "Dataset011_Target" / "scratch" / "fold_0"
    scratch.mkdir(parents=True)
    (scratch / "checkpoint_latest.pt").write_bytes(b"")
    names = {ids[job.name]: job.name for job in jobs}
    state = {"plan_target": "RUNNING", "plan_sources": "RUNNING", "train_scratch_fold_0": "TIMEOUT",
             "predict_finetune__from_multi_fold_0": "COMPLETED"}
    (slurm_commands / "states").write_text("".join(f"{i}|{state.get(name, 'PENDING')}|node\n"
                                                   for i, name in names.items()))
    capsys.readouterr()
    states = submit_slurm(jobs, folder, options)
    assert states["train_scratch_fold_0"] == "resubmitted (was timeout)"
    # its prediction waited for the dead job: cancelled and submitted again behind the new training
    assert states["predict_scratch_fold_0"] == "resubmitted (was waiting for a failed job)"
    assert states["aggregate"] == "resubmitted (was waiting for a failed job)"
    assert states["train_finetune__from_multi_fold_0"] == "running (pending)"
    # finished, but its output is not there (the stand-in ran nothing): submitted again
    assert states["predict_finetune__from_multi_fold_0"] == "resubmitted (was completed)"
    assert states["plan_target"] == "running (running)" and states["pretrain_multi"] == "running (pending)"
    new = json.loads((folder / "submitted.json").read_text())
    assert (slurm_commands / "cancelled").read_text().split() == [ids["predict_scratch_fold_0"], ids["aggregate"]]
    _, argv = _submission(folder, new["train_scratch_fold_0"])
    assert argv[-1] == "--continue"
    sbatch, _ = _submission(folder, new["predict_scratch_fold_0"])
    assert f"#SBATCH --dependency=afterok:{new['train_scratch_fold_0']}" in sbatch
    sbatch, _ = _submission(folder, new["train_scratch_fold_0"])
    assert f"#SBATCH --dependency=afterok:{ids['plan_target']}" in sbatch  # still running: waited for as it is
    printed = capsys.readouterr().out
    assert f"job {new['train_scratch_fold_0']}, log {folder}/{new['train_scratch_fold_0']}/" in printed
    assert done_states(jobs)["train_scratch_fold_0"] is False
