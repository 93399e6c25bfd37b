"""The Checkpoint type: a round trip through a weights_only file, version-1 files (as the trainer wrote them before
this type) converted on reading, and one-line refusals of corrupt, foreign, newer or inconsistent files."""

from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from covtransfer.errors import CovtransferError
from covtransfer.inference.model_loading import load_model
from covtransfer.network.build import build_from_checkpoint, build_from_spec, network_spec, unwrap_network
from covtransfer.network.checkpoint import FORMAT, VERSION
from covtransfer.network.checkpoint_io import load_checkpoint, save_checkpoint
from covtransfer.training.checkpoint import newest_checkpoint
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import Trainer, TrainingSettings, TrainingTask
from tiny_models import make_plans

TASK = "Dataset001_Test"
# the keys of a checkpoint_final.pt written by the trainer of commit fed23da (version 1), read from a real file
V1_KEYS = {"best_ema", "configuration_name", "dataset_name", "ema", "epoch", "format", "grad_scaler", "history",
           "label_names", "labels", "mirror_axes", "network", "optimizer", "plans", "predict_head", "rng", "settings",
           "state_dict", "strategy", "tasks", "version"}


@pytest.fixture
def trainer(tmp_path) -> Trainer:
    """A trainer over tiny plans with one SGD step taken (so the optimizer holds momentum), never fitted."""
    plans = make_plans()
    task = TrainingTask(TASK, tmp_path / "data", plans, ["a"], ["b"])
    trainer = Trainer([task], "3d_fullres", make_strategy("scratch"), tmp_path / "fold_0",
                      TrainingSettings(epochs=4, device="cpu", seed=7))
    images = torch.randn(2, 1, *plans.configuration("3d_fullres").patch_size)
    trainer.train_step(images, (images > 0.5).long(), TASK)
    trainer.state.epoch, trainer.state.history, trainer.state.ema = 1, [{"epoch": 0, "val_dice": 0.5}], 0.5
    return trainer


def version_1(trainer: Trainer) -> dict:
    """The dict ``Trainer.checkpoint()`` returned in version 1 (commit fed23da), rebuilt from the same trainer."""
    return {
        "format": FORMAT, "version": 1,
        "network": network_spec(trainer.configuration, trainer.plans.num_input_channels, {TASK: 2}),
        "state_dict": unwrap_network(trainer.model).state_dict(),
        "plans": trainer.plans.to_dict(), "configuration_name": trainer.configuration_name,
        "dataset_name": TASK, "tasks": [TASK], "labels": dict(trainer.plans.labels), "predict_head": TASK,
        "label_names": {TASK: dict(trainer.plans.labels)}, "mirror_axes": [0, 1, 2],
        "strategy": trainer.strategy.describe(), "settings": asdict(trainer.settings),
        "optimizer": trainer.optimizer.state_dict(), "grad_scaler": trainer.scaler.state_dict(),
        "epoch": trainer.state.epoch, "history": trainer.state.history, "ema": trainer.state.ema,
        "best_ema": trainer.state.best_ema, "rng": {"torch": torch.get_rng_state(), "seed": trainer.settings.seed},
    }


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_round_trip_through_a_weights_only_file(trainer, tmp_path):
    checkpoint = trainer.checkpoint()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, checkpoint)
    raw = torch.load(path, weights_only=True)  # plain containers and tensors only: no pickled objects
    assert raw["format"] == FORMAT and raw["version"] == VERSION == 2
    assert raw["network"] == {"kind": "unet", "heads": {TASK: 2}}  # the configuration only in the plans
    loaded = load_checkpoint(path)
    assert same_tensors(loaded.state_dict, checkpoint.state_dict)
    assert loaded.plans == checkpoint.plans and loaded.network_spec == trainer.spec
    assert (loaded.labels, loaded.predict_head, loaded.mirror_axes) == ({TASK: {"background": 0, "lesion": 1}},
                                                                         TASK, (0, 1, 2))
    assert loaded.settings == asdict(trainer.settings) and loaded.strategy == {"name": "scratch"}
    assert (loaded.epoch, loaded.history, loaded.ema, loaded.best_ema) == (1, [{"epoch": 0, "val_dice": 0.5}],
                                                                           0.5, -1.0)
    assert loaded.optimizer["param_groups"] == checkpoint.optimizer["param_groups"]
    assert loaded.label_values() == [0, 1] and loaded.num_input_channels == 1
    assert loaded.to_dict().keys() == raw.keys()


def test_a_version_1_checkpoint_loads_predicts_and_resumes(trainer, tmp_path):
    old = version_1(trainer)
    assert set(old) == V1_KEYS
    path = tmp_path / "fold_0" / "checkpoint_latest.pt"
    path.parent.mkdir()
    torch.save(old, path)
    loaded = load_checkpoint(path)
    current = trainer.checkpoint()
    assert loaded.network_spec == old["network"] == current.network_spec
    assert (loaded.labels, loaded.strategy, loaded.epoch) == (current.labels, current.strategy, 1)
    assert same_tensors(loaded.state_dict, old["state_dict"])
    model = load_model(path)
    assert (model.task, model.num_classes, model.label_values, model.mirror_axes) == (TASK, 2, [0, 1], (0, 1, 2))
    network = build_from_checkpoint(loaded).eval()
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.network(x), network(x), rtol=0, atol=0)
    assert newest_checkpoint(path.parent) == path
    fresh = Trainer(trainer.tasks, "3d_fullres", make_strategy("scratch"), path.parent, trainer.settings)
    fresh.resume()
    assert fresh.state.epoch == 1 and fresh.state.ema == 0.5
    assert same_tensors(fresh.network.state_dict(), old["state_dict"])


def test_hand_written_version_1_checkpoints_without_training_state_load(tmp_path):
    """Version 1 files written by tools and tests held only what prediction needs, and a strategy name string."""
    plans = make_plans()
    spec = network_spec(plans.configuration("3d_fullres"), 1, {TASK: 2})
    torch.save({"format": FORMAT, "version": 1, "network": spec, "plans": plans.to_dict(),
                "configuration_name": "3d_fullres", "dataset_name": TASK, "strategy": "benchmark",
                "labels": dict(plans.labels), "predict_head": TASK, "mirror_axes": [1, 2],
                "state_dict": build_from_spec(spec).state_dict()}, tmp_path / "checkpoint_final.pt")
    loaded = load_checkpoint(tmp_path / "checkpoint_final.pt")
    assert loaded.strategy == {"name": "benchmark"} and loaded.mirror_axes == (1, 2)
    assert loaded.labels == {TASK: {"background": 0, "lesion": 1}} and loaded.optimizer is None
    fresh = Trainer([TrainingTask(TASK, tmp_path, plans, ["a"], ["b"])], "3d_fullres", make_strategy("scratch"),
                    tmp_path, TrainingSettings(device="cpu"))
    with pytest.raises(CovtransferError, match="checkpoint_final.pt: holds no training state"):
        fresh.resume()


def one_line_error(path: Path, match: str) -> None:
    with pytest.raises(CovtransferError, match=match) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value) and str(error.value).startswith(str(path))


def test_corrupt_foreign_newer_and_inconsistent_files_are_refused_in_one_line(trainer, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 not a zip" * 20)
    one_line_error(corrupt, "not a checkpoint but a Python pickle")
    nnunet = tmp_path / "nnunet.pt"
    torch.save({"network_weights": {}, "trainer_name": "nnUNetTrainer"}, nnunet)
    one_line_error(nnunet, "not a covtransfer checkpoint")
    good = trainer.checkpoint().to_dict()
    cases = {
        "newer": ({**good, "version": 3}, "format version 3 is not readable.*update covtransfer"),
        "no_plans": ({k: v for k, v in good.items() if k != "plans"}, "lacks plans"),
        "kind": ({**good, "network": {"kind": "transformer", "heads": {TASK: 2}}}, "unknown network kind"),
        "head": ({**good, "predict_head": "Other"}, "predict head 'Other' is not one of"),
        "configuration": ({**good, "configuration_name": "2d"}, "no configuration '2d'"),
        "axes": ({**good, "mirror_axes": [3]}, r"mirror axes \[3\]"),
        "v1_mismatch": ({**version_1(trainer), "network": {**version_1(trainer)["network"], "num_input_channels": 2}},
                        "version-1 checkpoint's network differs from its own plans"),
    }
    for name, (content, match) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(content, path)
        one_line_error(path, match)


def test_checkpoint_validates_when_built_in_code(trainer):
    checkpoint = trainer.checkpoint()
    with pytest.raises(CovtransferError, match="no labels for the predict head"):
        replace(checkpoint, labels={})
    with pytest.raises(CovtransferError, match="at least one head"):
        replace(checkpoint, heads={})
