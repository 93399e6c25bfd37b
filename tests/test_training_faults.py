"""Training refusals and faults: unprepared datasets, unknown folds, wrong strategies and devices, NaN losses,
locked and damaged run folders; each leaves nothing behind or keeps the last good checkpoint."""

import json
import os
import socket
import time

import pytest
import torch

from covtransfer.cli.common import run_cli
from covtransfer.cli.train import main
from covtransfer.config import Roots
from covtransfer.errors import CovtransferError
from covtransfer.network.checkpoint_io import load_checkpoint
from covtransfer.training.api import fold_folder, read_metrics, train
from covtransfer.training.run_lock import LOCK_NAME
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import Trainer
from tiny_data import write_raw_dataset
from training_setup import DATASET, no_plots, results_in, roots, settings  # noqa: F401 (fixtures)


def test_refuses_a_dataset_that_is_not_preprocessed(tmp_path):
    own = Roots(tmp_path / "raw", tmp_path / "preprocessed", tmp_path / "results")
    write_raw_dataset(own.raw, 7, "Raw", n_train=2)
    with pytest.raises(CovtransferError, match=r"no dataset with id 7.*covtransfer_plan_and_preprocess -d 7"):
        train([7], make_strategy("scratch"), 0, own, settings())
    (own.preprocessed / "Dataset008_Planned").mkdir(parents=True)
    with pytest.raises(CovtransferError, match=r"not preprocessed \(run covtransfer_plan_and_preprocess -d 8\)"):
        train([8], make_strategy("scratch"), 0, own, settings())
    assert not own.results.exists()


def test_refuses_unknown_folds_leaving_nothing(roots, tmp_path):
    own = results_in(roots, tmp_path / "results")
    with pytest.raises(CovtransferError, match=r"unknown fold 9: splits.json has folds 0\.\.4"):
        train([1], make_strategy("scratch"), 9, own, settings())
    with pytest.raises(CovtransferError, match="unknown fold 'last'"):
        train([1], make_strategy("scratch"), "last", own, settings())
    assert not own.results.exists()


def test_continue_without_a_checkpoint_is_refused(roots, tmp_path):
    own = results_in(roots, tmp_path / "results")
    with pytest.raises(CovtransferError, match="nothing to continue.*without --continue"):
        train([1], make_strategy("scratch"), 0, own, settings(), resume=True)
    assert not own.results.exists()


def test_strategy_and_dataset_refusals(roots, tmp_path):
    own = results_in(roots, tmp_path / "results")
    with pytest.raises(CovtransferError, match="needs --pretrained"):
        train([1], make_strategy("continual"), 0, own, settings())
    with pytest.raises(CovtransferError, match="does not use --pretrained"):
        train([1], make_strategy("scratch"), 0, own, settings(), pretrained=tmp_path)
    with pytest.raises(CovtransferError, match="several datasets need -t pretrain"):
        train([1, 1], make_strategy("scratch"), 0, own, settings())
    with pytest.raises(CovtransferError, match="--device 'tpu': use cpu, cuda or auto"):
        train([1], make_strategy("scratch"), 0, own, settings(device="tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(CovtransferError, match="--device cuda: no CUDA device is available"):
            train([1], make_strategy("scratch"), 0, own, settings(device="cuda"))
    assert not own.results.exists()


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(roots, tmp_path, monkeypatch, no_plots):
    real_run_epoch = Trainer._run_epoch

    def run_epoch(self, *args):
        if self.state.epoch == 2:  # from the third epoch on, every loss is NaN
            self.loss = lambda outputs, targets: outputs[0].float().sum() * float("nan")
        return real_run_epoch(self, *args)

    monkeypatch.setattr(Trainer, "_run_epoch", run_epoch)
    own = results_in(roots, tmp_path / "results")
    with pytest.raises(CovtransferError, match="loss became NaN/Inf in epoch 2.*last good checkpoint is kept"):
        train([1], make_strategy("scratch"), 0, own, settings(epochs=4, iters_per_epoch=1))
    folder = fold_folder(own, [DATASET], "scratch", 0)
    latest = load_checkpoint(folder / "checkpoint_latest.pt")
    assert latest.epoch == 2 and len(latest.history) == 2
    assert all(torch.isfinite(t).all() for t in latest.state_dict.values() if t.is_floating_point())
    assert [r["epoch"] for r in read_metrics(folder)] == [0, 1]
    assert not (folder / "checkpoint_final.pt").exists()
    assert not (folder / LOCK_NAME).exists()  # released on the error too


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_first(roots, tmp_path, capsys):
    folder = tmp_path / "results" / DATASET / "scratch" / "fold_0"
    folder.mkdir(parents=True)
    (folder / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                "started": time.time()}))
    flags = ["--preprocessed", str(roots.preprocessed), "--results", str(tmp_path / "results"), "--device", "cpu"]
    assert run_cli(main, ["-d", "1", "--epochs", "1", *flags]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {folder}: in use by another covtransfer_train run (pid {os.getpid()} on host "
                            f"{socket.gethostname()}, started ") and error.count("\n") == 1
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # the first run's folder is left alone


def test_resume_from_the_previous_checkpoint_when_the_latest_is_damaged(roots, tmp_path, monkeypatch, capsys,
                                                                         no_plots):
    real_run_epoch = Trainer._run_epoch

    def killed_in_epoch_3(self, *args):
        if self.state.epoch == 3:
            raise KeyboardInterrupt
        return real_run_epoch(self, *args)

    monkeypatch.setattr(Trainer, "_run_epoch", killed_in_epoch_3)
    flags = ["-d", "1", "--epochs", "4", "--iters-per-epoch", "1", "--val-iters", "1", "--save-every", "1",
             "--no-final-validation", "--device", "cpu", "--preprocessed", str(roots.preprocessed),
             "--results", str(tmp_path / "results")]
    assert run_cli(main, flags) == 130
    monkeypatch.setattr(Trainer, "_run_epoch", real_run_epoch)
    folder = tmp_path / "results" / DATASET / "scratch" / "fold_0"
    latest, previous = folder / "checkpoint_latest.pt", folder / "checkpoint_previous.pt"
    assert (load_checkpoint(latest).epoch, load_checkpoint(previous).epoch) == (3, 2)
    assert not (folder / LOCK_NAME).exists()
    latest.write_bytes(latest.read_bytes()[:-100])
    capsys.readouterr()
    assert run_cli(main, flags + ["--continue"]) == 1
    assert capsys.readouterr().err == (f"error: {latest}: unreadable checkpoint, truncated or corrupt (not a "
                                       "complete zip archive: File is not a zip file); checkpoint_previous.pt "
                                       f"(epoch 2) is intact: pass --resume-from {previous}\n")
    assert run_cli(main, flags + ["--resume-from", str(previous)]) == 0
    assert f"resumed from {previous} after epoch 2" in (folder / "training_log.txt").read_text()
    assert load_checkpoint(folder / "checkpoint_final.pt").epoch == 4
    assert [r["epoch"] for r in read_metrics(folder)] == [0, 1, 2, 3]
    assert sorted(p.name for p in folder.glob("checkpoint_*")) == ["checkpoint_best.pt", "checkpoint_final.pt",
                                                                  "checkpoint_latest.pt.corrupt"]


def test_cli_errors(roots, tmp_path, capsys):
    flags = ["--preprocessed", str(roots.preprocessed), "--results", str(tmp_path / "results"), "--device", "cpu"]
    with pytest.raises(CovtransferError, match="unknown fold 12"):
        main(["-d", "1", "-f", "12", *flags])
    assert run_cli(main, ["-d", "1", "-f", "12", *flags]) == 1
    assert capsys.readouterr().err.startswith("error: unknown fold 12")
    assert run_cli(main, ["-d", "1", "--continue", *flags]) == 1
    assert "nothing to continue" in capsys.readouterr().err
    assert run_cli(main, ["-d", "1", "-t", "finetune", "--freeze", "decoder", *flags]) == 1
    assert "--freeze 'decoder'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["-d", "1", "-t", "nonsense", *flags])
    assert not (tmp_path / "results").exists()
