"""Transfer refusals and the command line: missing or unreadable pre-trained models, other channel counts (a new
first convolution), other topologies and strides, wrong flags, each leaving no results folder; and the CLI
training the hybrid from the multi-lesion model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from covtransfer.cli import train as train_cli
from covtransfer.config import Roots
from covtransfer.errors import CovtransferError
from covtransfer.inference.model_loading import load_model
from covtransfer.network.checkpoint_io import load_checkpoint, save_checkpoint
from covtransfer.training.api import train
from covtransfer.training.strategies import make_strategy
from cli_checks import refusal, root_flags
from transfer_setup import (CONFIG, OTHER, SRC1, SRC2, TARGET, TARGET_NAME, TRANSFER, names, pretrained, results_tree,  # noqa: F401
                            roots, settings, source, target_trainer)


# ------------------------------------------------------------------------------------------- refusals
def refuse(roots: Roots, match: str, *args, **kwargs) -> None:
    """``train(*args, **kwargs)`` must raise a one-line error matching ``match`` and leave the results untouched."""
    before = results_tree(roots)
    with pytest.raises(CovtransferError, match=match) as error:
        train(*args, **kwargs)
    assert "\n" not in str(error.value)
    assert results_tree(roots) == before


@pytest.mark.parametrize("strategy", TRANSFER)
def test_missing_or_unreadable_pretrained_model_is_refused(roots, tmp_path, strategy):
    s = make_strategy(strategy)
    refuse(roots, "no such checkpoint file or run folder", [TARGET], s, 0, roots, settings(),
           pretrained=tmp_path / "nowhere")
    refuse(roots, "no checkpoint_final.pt", [TARGET], s, 0, roots, settings(), pretrained=tmp_path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    refuse(roots, "garbage.pt: not a checkpoint but a text file", [TARGET], s, 0, roots, settings(),
           pretrained=garbage)


@pytest.mark.parametrize("strategy", ["continual", "hybrid"])
def test_a_checkpoint_with_another_channel_count_transfers_with_a_new_first_convolution(roots, source, tmp_path,
                                                                                       strategy):
    first = "encoder.stages.0.0.conv.weight"
    two = dict(source.state_dict, **{first: torch.cat([source.state_dict[first]] * 2, dim=1)})
    plans = replace(source.plans, channel_names={"0": "CT", "1": "CT"})
    save_checkpoint(tmp_path / "two.pt", replace(source, plans=plans, state_dict=two))
    trainer = target_trainer(roots, make_strategy(strategy), load_checkpoint(tmp_path / "two.pt"), tmp_path)
    own = ("adapted_" if strategy == "hybrid" else "") + first
    report = trainer.load_report
    assert report.reinitialised[own] == "1 input channel(s), the pre-trained model has 2"
    assert first in report.skipped and first not in report.loaded and own in report.missing
    assert trainer.network.state_dict()[own].shape[1] == 1
    state = trainer.network.state_dict()
    assert all(torch.equal(state[own.replace(first, n)], source.state_dict[n]) for n in report.loaded)
    assert f"re-initialised for the target: heads.{TARGET_NAME} (2 classes" in report.summary()
    assert f"{own} (1 input channel(s), the pre-trained model has 2)" in report.summary()


@pytest.fixture(scope="module")
def other_topology(roots) -> Path:
    """A model pre-trained on a dataset planned on its own (3 stages instead of the target's 4)."""
    return train([OTHER], make_strategy("pretrain"), "all", roots, settings())


@pytest.mark.parametrize("strategy", TRANSFER)
def test_checkpoint_with_another_topology_is_refused_naming_plans_from(roots, other_topology, strategy):
    refuse(roots, "--plans-from", [TARGET], make_strategy(strategy), 0, roots, settings(), pretrained=other_topology)


def test_checkpoint_differing_only_in_strides_is_refused(roots, source, tmp_path):
    """Same tensor shapes for the encoder, different strides: loading would succeed but compute another network."""
    strides = source.configuration.strides
    configuration = replace(source.configuration, strides=[strides[0], *strides[2:], strides[1]])
    assert configuration.strides != strides
    plans = replace(source.plans, configurations={**source.plans.configurations, CONFIG: configuration})
    save_checkpoint(tmp_path / "strides.pt", replace(source, plans=plans))
    refuse(roots, "strides.*--plans-from", [TARGET], make_strategy("encoder"), 0, roots, settings(),
           pretrained=tmp_path / "strides.pt")


def test_wrong_pretrained_usage_is_refused(roots, pretrained):
    for strategy in TRANSFER:
        refuse(roots, f"-t {strategy} needs --pretrained", [TARGET], make_strategy(strategy), 0, roots, settings())
    for strategy in ("scratch", "pretrain"):
        refuse(roots, f"-t {strategy} does not use --pretrained", [TARGET], make_strategy(strategy), 0, roots,
               settings(), pretrained=pretrained)
    refuse(roots, "several datasets need -t pretrain", [SRC1, SRC2], make_strategy("continual"), "all", roots,
           settings(), pretrained=pretrained)
    refuse(roots, "--source-weights has 1 values for 2 datasets", [SRC1, SRC2], make_strategy("pretrain"), "all",
           roots, settings(source_weights=[1.0]))
    refuse(roots, "every weight must be > 0", [SRC1, SRC2], make_strategy("pretrain"), "all", roots,
           settings(source_weights=[1.0, 0.0]))


@pytest.mark.parametrize("strategy, freeze, match", [
    ("continual", "encoder", "--freeze applies to finetune"),
    ("scratch", "encoder", "--freeze applies to finetune"),
    ("encoder", "adapted", "--freeze applies to finetune"),
    ("pretrain", "encoder", "--freeze applies to finetune"),
    ("finetune", "decoder", "finetune takes 'encoder' or 'encoder:K'"),
    ("finetune", "encoder:0", "finetune takes 'encoder' or 'encoder:K'"),
    ("hybrid", "encoder", "hybrid takes only 'adapted'"),
])
def test_freeze_for_a_strategy_that_does_not_take_it_is_refused(roots, pretrained, strategy, freeze, match, capsys):
    before = results_tree(roots)
    argv = ["-d", str(TARGET), "-t", strategy, "--freeze", freeze, "--pretrained", str(pretrained)] + root_flags(roots)
    refusal(train_cli.main, argv, capsys, match)
    assert results_tree(roots) == before


# ------------------------------------------------------------------------------------------- command line
def test_cli_trains_the_hybrid_from_the_multi_lesion_model(roots, pretrained, source, capsys):
    code = train_cli.main(["-d", str(TARGET), "-t", "hybrid", "-f", "0", "--pretrained", str(pretrained),
                           "--tag", "from_multi", "--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1",
                           "--device", "cpu", "--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed),
                           "--results", str(roots.results)])
    folder = roots.results / TARGET_NAME / "hybrid__from_multi" / "fold_0"
    assert code == 0 and f"done: {folder}" in capsys.readouterr().out
    checkpoint = load_checkpoint(folder / "checkpoint_final.pt")
    assert checkpoint.strategy == {"name": "hybrid", "adapted_lr_scale": 0.1, "freeze_adapted": False}
    lrs = {g["lr_scale"]: g["lr"] for g in checkpoint.optimizer["param_groups"]}
    assert lrs[1.0] == pytest.approx(1e-2) and lrs[0.1] == pytest.approx(1e-3)
    assert (folder / "load_report.json").is_file()
    assert "loaded" in (folder / "training_log.txt").read_text()
    assert (folder / "validation" / "summary.json").is_file()
    assert (folder.parent / "plans.json").is_file()
    model = load_model(folder / "checkpoint_final.pt")
    pre = source.state_dict
    trained_adapted = model.network.state_dict()
    moved = [n for n in names(pre, "encoder") if not torch.equal(trained_adapted["adapted_" + n], pre[n])]
    assert moved, "the adapted encoder is trained (at a reduced rate), not frozen"
