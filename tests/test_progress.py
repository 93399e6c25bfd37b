"""Signs of life in long steps: the training epoch's bar or plain lines and the one-off run estimate, and the note that
planning with the default preset on a machine without a GPU sizes the network for a GPU."""

import pytest
import torch

from covtransfer.cli import plan_and_preprocess, train
from covtransfer.cli.common import run_cli
from covtransfer.training import progress as progress_module
from covtransfer.training.progress import TrainingProgress, format_duration
from covtransfer.workflow.plan_and_preprocess import GPU_PRESET_NOTE
from tiny_data import preprocessed_roots, write_raw_dataset


class Clock:
    """A perf_counter that moves only when told."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", fake)
    return fake


def test_format_duration():
    assert [format_duration(s) for s in (42, 150, 600, 5400, 3 * 86400)] == ["42 s", "2.5 min", "10 min", "1.5 h",
                                                                             "3.0 days"]


def test_plain_lines_and_one_estimate_from_the_iterations_after_the_first(clock, capsys):
    logged = []
    progress = TrainingProgress(1, 5, 10, 3, logged.append, bar=False, line_interval_s=5.0)
    with progress.epoch(1) as ticker:
        for i in range(10):
            clock.now += 10.0 if i == 0 else 2.0  # the first iteration carries the warm-up
            ticker.step()
    # iterations end at 10, 12, ..., 28 s: 2 s each after the first, an epoch of 10 + 3/3 iteration-equivalents
    assert logged == ["estimate: 2.00 s per iteration, so about 22 s per epoch and 88 s for the 4 epoch(s) to run"]
    lines = capsys.readouterr().out.splitlines()
    # a line at most every 5 s, never after the last iteration (the epoch's own line follows)
    # with the time left at the pace after the first iteration once there is one
    assert lines == ["epoch 1: iteration 1/10, 10 s so far, about 1.5 min left in the epoch",
                     "epoch 1: iteration 4/10, 16 s so far, about 12 s left in the epoch",
                     "epoch 1: iteration 7/10, 22 s so far, about 6 s left in the epoch"]
    with progress.epoch(2) as ticker:
        for _ in range(10):
            ticker.step()
    assert len(logged) == 1  # once per run


def test_bar_on_a_terminal_and_silence_elsewhere(capsys):
    with TrainingProgress(0, 1, 3, 0, lambda line: None, bar=True).epoch(0) as ticker:
        for _ in range(3):
            ticker.step()
    captured = capsys.readouterr()
    assert "epoch 0:" in captured.err and "/3 [" in captured.err and captured.out == ""
    with TrainingProgress(0, 1, 3, 0, None, bar=True, line_interval_s=0.0).epoch(0) as ticker:
        ticker.step()
    assert capsys.readouterr() == ("", "")  # the non-main processes of a distributed run


def test_training_command_prints_the_estimate_once(tmp_path, capsys):
    roots = preprocessed_roots(tmp_path / "data", {1: ("Blob", 3, 0)})
    results = tmp_path / "results"
    capsys.readouterr()
    assert run_cli(train.main, ["-d", "1", "-f", "all", "--epochs", "2", "--iters-per-epoch", "3", "--val-iters",
                                "1", "--device", "cpu", "--no-final-validation", "--preprocessed",
                                str(roots.preprocessed), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.count("estimate: ") == 1 and "for the 2 epoch(s) to run" in out
    log = (results / "Dataset001_Blob" / "scratch" / "fold_all" / "training_log.txt").read_text()
    assert log.count("estimate: ") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="the note is for machines without a GPU")
def test_default_preset_on_a_cpu_says_so_once(tmp_path, capsys):
    for dataset_id in (1, 2):
        write_raw_dataset(tmp_path / "raw", dataset_id, f"Blob{dataset_id}", 2, shape=(8, 16, 16))
    flags = ["--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pre"), "--plan-only", "-np", "1",
             "--fingerprint-voxels", "1000"]
    capsys.readouterr()
    assert run_cli(plan_and_preprocess.main, ["-d", "1", "2", *flags]) == 0
    assert capsys.readouterr().err.count(GPU_PRESET_NOTE) == 1
    assert "--preset cpu" in GPU_PRESET_NOTE
    assert run_cli(plan_and_preprocess.main, ["-d", "1", "2", "--preset", "cpu", "--overwrite", *flags]) == 0
    assert GPU_PRESET_NOTE not in capsys.readouterr().err
