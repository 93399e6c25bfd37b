"""The training engine on tiny blob datasets (cpu preset): a run whose loss falls, its outputs and checkpoints,
exact resumption after a SIGKILL, precision and compile options, and the CLI (splits: ``test_splits.py``; refusals
and faults: ``test_training_faults.py``)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from covtransfer.cli.train import main
from covtransfer.data.image_io import read_image
from covtransfer.errors import CovtransferError
from covtransfer.network.build import build_from_checkpoint
from covtransfer.network.checkpoint import Checkpoint
from covtransfer.network.checkpoint_io import load_checkpoint
from covtransfer.inference.sliding_window import window_starts
from covtransfer.plans import Plans
from covtransfer.preprocessing.storage import load_case
from covtransfer.training.api import load_task, read_metrics, train
from covtransfer.training.run_lock import LOCK_NAME
from covtransfer.training.run_log import RunLog
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import Trainer, moving_average, poly_lr
from covtransfer.training.validation import validate_fold, window_count
from training_setup import DATASET, no_plots, results_in, roots, settings  # noqa: F401 (fixtures)


REPO = Path(__file__).resolve().parents[1]


METRIC_KEYS = {"epoch", "train_loss", "val_loss", "val_dice", "ema_dice", "lr", "epoch_time", "task_dice", "task_ema"}


@pytest.fixture(scope="module")
def full_run(roots, tmp_path_factory):
    """6 epochs × 3 iterations with final validation; progress.png drawn after the last epoch only."""
    real_plot = RunLog.plot
    run_settings = settings(epochs=6, iters_per_epoch=3, val_iters=2, final_validation=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunLog, "plot", lambda self, history: real_plot(self, history)
                      if len(history) == run_settings.epochs else None)
        run_roots = results_in(roots, tmp_path_factory.mktemp("full"))
        folder = train([1], make_strategy("scratch"), 0, run_roots, run_settings)
    return folder, run_settings


# ----------------------------------------------------------------------------------------------------- a run
def test_loss_falls(full_run):
    folder, _ = full_run
    losses = [r["train_loss"] for r in read_metrics(folder)]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.1  # about 0.2 lower after 18 steps
    assert losses[-1] < losses[0]


def test_run_outputs(full_run, roots):
    folder, run_settings = full_run
    assert folder.relative_to(folder.parents[2]) == Path(DATASET, "scratch", "fold_0")
    records = read_metrics(folder)
    assert [r["epoch"] for r in records] == list(range(run_settings.epochs))
    ema = None
    for r in records:
        assert set(r) == METRIC_KEYS
        assert r["lr"] == pytest.approx(poly_lr(1e-2, r["epoch"], run_settings.epochs, 0.9))
        assert 0 <= r["val_dice"] <= 1 and r["epoch_time"] > 0 and np.isfinite(r["val_loss"])
        ema = r["val_dice"] if ema is None else 0.9 * ema + 0.1 * r["val_dice"]
        assert r["ema_dice"] == pytest.approx(ema)
        assert r["task_dice"] == {DATASET: pytest.approx(r["val_dice"])}
        assert r["task_ema"] == {DATASET: pytest.approx(ema)}
    log = (folder / "training_log.txt").read_text()
    assert all(f"epoch {k}: train loss" in log for k in range(run_settings.epochs))
    assert "validation of the fold's cases" in log
    png = (folder / "progress.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (folder / "checkpoint_final.pt").is_file() and (folder / "checkpoint_best.pt").is_file()
    assert not (folder / "checkpoint_latest.pt").exists()  # written every epoch, removed at the end
    assert not (folder / "checkpoint_previous.pt").exists() and not (folder / LOCK_NAME).exists()
    assert not (folder / "load_report.json").exists()  # scratch loads nothing
    assert Plans.load(folder.parent / "plans.json").to_dict() == Plans.load(
        roots.preprocessed / DATASET / "plans.json").to_dict()
    assert (folder.parent / "dataset.json").is_file()


def test_final_validation_scores_each_validation_case(full_run, roots):
    folder, _ = full_run
    val_ids = json.loads((roots.preprocessed / DATASET / "splits.json").read_text())[0]["val"]
    summary = json.loads((folder / "validation" / "summary.json").read_text())
    rows = summary["per_case"]
    assert sorted({row["case"] for row in rows}) == sorted(val_ids) and len(rows) == len(val_ids)
    for row in rows:
        assert row["label"] == 1 and 0 <= row["dice"] <= 1 and row["n_ref"] > 0
    assert summary["mean"]["1"]["dice"] == pytest.approx(np.mean([row["dice"] for row in rows]))
    for case in val_ids:
        prediction, geometry = read_image(folder / "validation" / f"{case}.nii.gz")
        reference, reference_geometry = read_image(roots.raw / DATASET / "labelsTr" / f"{case}.nii.gz")
        assert prediction.shape == reference.shape and geometry.matches(reference_geometry)
        assert set(np.unique(prediction)) <= {0, 1}


def test_window_count_matches_the_sliding_window():
    assert window_count((16, 32, 32), (16, 32, 32)) == 1
    assert window_count((10, 20, 20), (16, 32, 32)) == 1  # padded to the patch
    assert window_count((40, 32, 100), (16, 32, 32)) == len(window_starts(40, 16, 0.5)) * len(
        window_starts(100, 32, 0.5)) == 4 * 6  # ceil(24 / 8) + 1 and ceil(68 / 16) + 1


@pytest.mark.parametrize("mode, passes", [("auto", 1), ("off", 1), ("on", 8)])
def test_final_validation_mirroring_follows_the_option_and_shows_windows(roots, tmp_path, capsys, mode, passes):
    """On the CPU ``auto`` means no mirroring: one forward pass per window instead of eight."""
    task = load_task(roots, 1, "3d_fullres", 0)
    trainer = Trainer([task], "3d_fullres", make_strategy("scratch"), tmp_path / "fold",
                      settings(validation_tta=mode))
    assert trainer.validation_mirroring is (passes == 8)
    trainer.output_folder.mkdir()  # fit() makes it
    calls = []
    trainer.network.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    validate_fold(trainer, task, tmp_path / "validation")
    windows = [window_count(load_case(task.preprocessed_folder / "3d_fullres", case)[0].shape[1:],
                            trainer.configuration.patch_size) for case in task.val_ids]
    assert sum(calls) == sum(windows) * passes  # windows evaluated, over every batch of windows
    err = capsys.readouterr().err
    assert f"validating {DATASET}" in err and f"{task.val_ids[-1]}: {windows[-1]} window" in err
    assert f"x {passes}" in err
    log = (tmp_path / "fold" / "training_log.txt").read_text()
    assert f"mirroring {'on' if passes == 8 else 'off'} ({passes} pass" in log


def test_validation_mirroring_values_are_checked_and_reach_the_settings(roots, tmp_path, monkeypatch):
    with pytest.raises(CovtransferError, match="--val-mirroring 'yes': use auto, on or off"):
        train([1], make_strategy("scratch"), 0, results_in(roots, tmp_path / "r"), settings(validation_tta="yes"))
    assert not (tmp_path / "r").exists()
    seen = []
    monkeypatch.setattr("covtransfer.cli.train.train", lambda *args, **kwargs: seen.append(args[4]) or tmp_path)
    main(["-d", DATASET, "--device", "cpu", "--val-mirroring", "on"])
    main(["-d", DATASET, "--device", "cpu"])
    assert [s.validation_tta for s in seen] == ["on", "auto"]


def test_checkpoint_is_safe_to_load_and_self_describing(full_run, roots):
    folder, run_settings = full_run
    path = folder / "checkpoint_final.pt"
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "covtransfer-checkpoint" and raw["version"] == 2
    plans = Plans.load(roots.preprocessed / DATASET / "plans.json")
    assert raw["plans"] == plans.to_dict() and raw["configuration_name"] == "3d_fullres"
    assert raw["network"] == {"kind": "unet", "heads": {DATASET: 2}}  # the topology is the plans', stored once
    assert raw["strategy"] == {"name": "scratch"}
    assert raw["labels"] == {DATASET: {"background": 0, "lesion": 1}} and raw["predict_head"] == DATASET
    assert raw["mirror_axes"] == [0, 1, 2]
    assert raw["epoch"] == len(raw["history"]) == run_settings.epochs
    assert raw["settings"] == {**raw["settings"], "epochs": 6, "iters_per_epoch": 3, "lr": 1e-2, "seed": 12345}
    assert raw["optimizer"]["state"] and raw["rng"]["seed"] == 12345
    checkpoint = Checkpoint.from_dict(raw)
    assert checkpoint.network_spec == {"kind": "unet", "num_input_channels": 1, "heads": {DATASET: 2},
                                       "configuration": plans.configuration("3d_fullres").to_dict()}
    network = build_from_checkpoint(checkpoint)
    assert all(torch.equal(network.state_dict()[k], v) for k, v in raw["state_dict"].items())
    with torch.no_grad():
        logits = network.eval()(torch.zeros(1, 1, 16, 32, 32))
    assert logits.shape == (1, 2, 16, 32, 32)
    best = load_checkpoint(folder / "checkpoint_best.pt")
    assert best.ema == best.best_ema == max(r["ema_dice"] for r in best.history)


def test_a_second_run_without_continue_is_refused(full_run, roots):
    folder, _ = full_run
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(CovtransferError, match="already holds checkpoints; use --continue"):
        train([1], make_strategy("scratch"), 0, results_in(roots, folder.parents[2]), settings())
    assert sorted(p.name for p in folder.iterdir()) == before


# ----------------------------------------------------------------------------------------------------- resume
def _cli_args(epochs: int) -> list[str]:
    return ["-d", "1", "-t", "scratch", "-f", "0", "--epochs", str(epochs), "--iters-per-epoch", "2",
            "--val-iters", "1", "--save-every", "1", "--device", "cpu", "--no-final-validation"]


def _kill_after(command: list[str], env: dict, metrics: Path, records: int, log: Path) -> int:
    """Start ``command``, SIGKILL it once ``metrics`` holds ``records`` lines; its exit status (-9 when killed)."""
    with open(log, "wb") as output:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        try:
            while process.poll() is None and time.monotonic() < deadline:
                if metrics.is_file() and len(metrics.read_text().splitlines()) >= records:
                    os.kill(process.pid, signal.SIGKILL)
                    break
                time.sleep(0.02)
        finally:
            if process.poll() is None and time.monotonic() >= deadline:
                process.kill()
            process.wait()
    return process.returncode


def test_resume_after_sigkill_equals_an_uninterrupted_run(roots, tmp_path, no_plots, capsys):
    epochs = 5
    flags = ["--preprocessed", str(roots.preprocessed), "--raw", str(roots.raw)]
    assert main(_cli_args(epochs) + flags + ["--results", str(tmp_path / "a")]) == 0
    straight = tmp_path / "a" / DATASET / "scratch" / "fold_0"

    interrupted = tmp_path / "b" / DATASET / "scratch" / "fold_0"
    env = dict(os.environ, COVTRANSFER_RAW=str(roots.raw), COVTRANSFER_PREPROCESSED=str(roots.preprocessed),
               COVTRANSFER_RESULTS=str(tmp_path / "b"), OMP_NUM_THREADS=str(torch.get_num_threads()),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "covtransfer.cli.train", *_cli_args(epochs)]
    status = _kill_after(command, env, interrupted / "metrics.jsonl", 2, tmp_path / "killed_run.log")
    assert status == -signal.SIGKILL, (tmp_path / "killed_run.log").read_text()[-3000:]
    assert not (interrupted / "checkpoint_final.pt").exists()

    capsys.readouterr()
    assert main(_cli_args(epochs) + flags + ["--results", str(tmp_path / "b"), "--continue"]) == 0
    assert f"done: {interrupted}" in capsys.readouterr().out
    log = (interrupted / "training_log.txt").read_text()
    resumed_after = int(log.split("resumed from checkpoint_")[1].split("after epoch ")[1].split()[0])
    assert 1 <= resumed_after < epochs

    a, b = read_metrics(straight), read_metrics(interrupted)
    assert [r["epoch"] for r in b] == list(range(epochs))  # exactly one record per epoch
    for ra, rb in zip(a, b):
        assert {k: ra[k] for k in METRIC_KEYS - {"epoch_time"}} == {k: rb[k] for k in METRIC_KEYS - {"epoch_time"}}
    final_a = load_checkpoint(straight / "checkpoint_final.pt")
    final_b = load_checkpoint(interrupted / "checkpoint_final.pt")
    assert final_a.epoch == final_b.epoch == epochs
    assert final_a.state_dict.keys() == final_b.state_dict.keys()
    for name, tensor in final_a.state_dict.items():
        assert torch.equal(tensor, final_b.state_dict[name]), name
    momentum_a = [s["momentum_buffer"] for s in final_a.optimizer["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in final_b.optimizer["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b))


# ------------------------------------------------------------------------------------------- precision and compile
def test_amp_on_trains_in_bf16_on_the_cpu_and_bad_values_are_refused(roots, tmp_path, no_plots):
    own = results_in(roots, tmp_path / "results")
    with pytest.raises(CovtransferError, match="--amp 'fast': use auto, on, off, bf16, fp16"):
        train([1], make_strategy("scratch"), 0, own, settings(amp="fast"))
    assert not own.results.exists()
    task = load_task(own, 1, "3d_fullres", 0)
    trainer = Trainer([task], "3d_fullres", make_strategy("scratch"), tmp_path / "fold", settings(amp="on"))
    assert trainer.amp_dtype == torch.bfloat16
    seen = []
    trainer.network.register_forward_hook(lambda module, inputs, output: seen.append(output[0].dtype))
    trainer.fit()
    assert seen and set(seen) == {torch.bfloat16}
    assert all(torch.isfinite(t).all() for t in trainer.network.state_dict().values() if t.is_floating_point())
    assert Trainer([task], "3d_fullres", make_strategy("scratch"), tmp_path / "other", settings()).amp_dtype is None
    named = Trainer([task], "3d_fullres", make_strategy("scratch"), tmp_path / "bf16", settings(amp="bf16"))
    assert named.amp_dtype == torch.bfloat16 and not named.scaler.is_enabled()
    with pytest.raises(CovtransferError, match="--amp fp16: .*needs a CUDA device"):
        Trainer([task], "3d_fullres", make_strategy("scratch"), tmp_path / "fp16", settings(amp="fp16"))


def test_compile_scope_blocks_compiles_the_blocks_in_place_and_bad_scopes_are_refused(roots, tmp_path, monkeypatch):
    import covtransfer.training.trainer as trainer_module

    task = load_task(results_in(roots, tmp_path / "results"), 1, "3d_fullres", 0)
    with pytest.raises(CovtransferError, match="--compile-scope 'layers': use network or blocks"):
        Trainer([task], "3d_fullres", make_strategy("scratch"), tmp_path / "bad",
                settings(compile=True, compile_scope="layers"))
    compiled = []
    monkeypatch.setattr(trainer_module, "compile_blocks", lambda network: compiled.append(network) or 1)
    trainer = Trainer([task], "3d_fullres", make_strategy("scratch"), tmp_path / "blocks",
                      settings(compile=True, compile_scope="blocks"))
    assert compiled == [trainer.network] and trainer.model is trainer.network


@pytest.mark.gpu
def test_amp_fp16_scales_the_loss_on_cuda(roots, tmp_path, no_plots):
    own = results_in(roots, tmp_path / "results")
    task = load_task(own, 1, "3d_fullres", 0)
    trainer = Trainer([task], "3d_fullres", make_strategy("scratch"), tmp_path / "fold",
                      settings(amp="fp16", device="cuda"))
    assert trainer.amp_dtype == torch.float16 and trainer.scaler.is_enabled()
    trainer.fit()
    assert all(torch.isfinite(t).all() for t in trainer.network.state_dict().values() if t.is_floating_point())


# ----------------------------------------------------------------------------------------------------- CLI
def test_cli_trains_a_fold(roots, tmp_path, capsys, no_plots):
    results = tmp_path / "results"
    code = main(["-d", DATASET, "-f", "all", "--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1",
                 "--device", "cpu", "--no-final-validation", "--seed", "3", "--preprocessed",
                 str(roots.preprocessed), "--results", str(results)])
    assert code == 0
    folder = results / DATASET / "scratch" / "fold_all"
    assert f"done: {folder}" in capsys.readouterr().out
    checkpoint = load_checkpoint(folder / "checkpoint_final.pt")
    assert checkpoint.settings["seed"] == 3 and checkpoint.settings["iters_per_epoch"] == 1
    assert checkpoint.epoch == 1 and len(read_metrics(folder)) == 1


@pytest.mark.parametrize("head_init", ["prior", "zero"])
def test_head_init_option_sets_the_heads_bias_before_training_and_is_recorded(roots, tmp_path, head_init, no_plots):
    task = load_task(results_in(roots, tmp_path / "results"), 1, "3d_fullres", 0)
    trainer = Trainer([task], "3d_fullres", make_strategy("scratch"), tmp_path / "fold", settings(head_init=head_init))
    biases = [head.bias for head in trainer.network.heads[task.name]]
    foreground = math.log(0.01 / 0.99) if head_init == "prior" else 0.0
    assert all(b[0].item() == 0.0 and b[1].item() == pytest.approx(foreground) for b in biases)
    results = tmp_path / "cli"
    assert main(["-d", DATASET, "-f", "all", "--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1",
                 "--device", "cpu", "--no-final-validation", "--head-init", head_init, "--preprocessed",
                 str(roots.preprocessed), "--results", str(results)]) == 0
    assert load_checkpoint(results / DATASET / "scratch" / "fold_all" / "checkpoint_final.pt"
                           ).settings["head_init"] == head_init


def test_moving_average_skips_epochs_with_nothing_to_score():
    """A NaN pseudo Dice (no foreground in the validation patches and none predicted) leaves the EMA as it was."""
    assert moving_average(None, 0.5) == 0.5
    assert moving_average(0.5, 1.0) == pytest.approx(0.9 * 0.5 + 0.1 * 1.0)
    assert moving_average(0.55, math.nan) == 0.55  # before the fix this made every later EMA NaN
    assert moving_average(None, math.nan) is None
    assert moving_average(math.nan, 0.3) == 0.3  # a NaN stored by an older run restarts the average
