"""Transfer learning: multi-lesion pre-training, the five strategies from its checkpoint, load reports, frozen and
scaled parameters and save/load/predict round trips (refusals and the CLI: ``test_transfer_refusals.py``).

Selective Fusion maths (V = α·F_D + β·F_A, α + β = 1, no batch statistics) and the hybrid's forward/backward
shapes on an anisotropic plan are tested in tests/test_network.py (test_fusion_*, test_hybrid_*); not repeated here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from covtransfer.cli import train as train_cli
from covtransfer.data.image_io import read_image
from covtransfer.errors import CovtransferError
from covtransfer.inference.model_loading import load_model
from covtransfer.inference.predictor import predict_folder, predict_logits
from covtransfer.inference.sliding_window import predict_sliding_window
from covtransfer.network.build import build_from_checkpoint
from covtransfer.network.checkpoint_io import load_checkpoint, save_checkpoint
from covtransfer.network.hybrid import HybridUNet
from covtransfer.network.unet import UNet
from covtransfer.plans import Plans
from covtransfer.preprocessing.storage import load_case
from covtransfer.training.api import train
from covtransfer.training.batch_stream import BatchStream
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import Trainer
from transfer_setup import (CONFIG, OTHER, SRC1, SRC1_NAME, SRC2_NAME, TARGET_NAME, TRANSFER, names,  # noqa: F401
                            pretrained, random_batch, results_tree, roots, runs, settings, source, target_trainer,
                            task_of)


# ------------------------------------------------------------------------------------------- pre-training
def test_pretrain_writes_one_run_with_a_head_set_per_source(roots, pretrained, source):
    assert pretrained == roots.results / f"Pretrain__{SRC1_NAME}__{SRC2_NAME}" / "pretrain" / "fold_all"
    assert (pretrained / "checkpoint_final.pt").is_file()
    assert source.heads == {SRC1_NAME: 2, SRC2_NAME: 2} and source.strategy == {"name": "pretrain"}
    assert list(source.labels) == [SRC1_NAME, SRC2_NAME] and source.predict_head == SRC1_NAME
    state = source.state_dict
    assert names(state, f"heads.{SRC1_NAME}") and len(names(state, f"heads.{SRC1_NAME}")) == \
        len(names(state, f"heads.{SRC2_NAME}"))
    assert {n.split(".")[0] for n in state} == {"encoder", "decoder", "heads"}
    target_plans = Plans.load(roots.preprocessed / TARGET_NAME / "plans.json")
    assert source.configuration.to_dict() == \
        target_plans.configuration(CONFIG).to_dict()
    assert source.epoch == 2 and len(source.history) == 2
    for name in (SRC1_NAME, SRC2_NAME):
        assert (pretrained / "validation" / name / "summary.json").is_file()


def test_a_batch_of_one_source_gives_no_gradient_to_the_other_sources_heads(source):
    network = build_from_checkpoint(source, deep_supervision=True)
    images, _ = random_batch(source.plans)
    outputs = network(images, task=SRC2_NAME)
    sum(o.square().mean() for o in outputs).backward()
    grads = dict(network.named_parameters())
    for name in names(grads, f"heads.{SRC1_NAME}"):
        assert grads[name].grad is None or torch.count_nonzero(grads[name].grad) == 0, name
    for name in names(grads, f"heads.{SRC2_NAME}") + names(grads, "encoder"):
        assert grads[name].grad is not None and torch.count_nonzero(grads[name].grad) > 0, name


def test_a_training_step_on_one_source_leaves_the_other_sources_heads_unchanged(roots, tmp_path):
    tasks = [task_of(roots, SRC1_NAME), task_of(roots, SRC2_NAME)]
    trainer = Trainer(tasks, CONFIG, make_strategy("pretrain"), tmp_path, settings())
    for step, task in enumerate((SRC1_NAME, SRC2_NAME, SRC2_NAME)):
        before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
        trainer.train_step(*random_batch(tasks[0].plans, seed=step), task)
        after = trainer.network.state_dict()
        other = SRC2_NAME if task == SRC1_NAME else SRC1_NAME
        assert all(torch.equal(before[n], after[n]) for n in names(after, f"heads.{other}"))
        assert not all(torch.equal(before[n], after[n]) for n in names(after, f"heads.{task}"))
    batch = {"images": torch.zeros(1), "seg": torch.zeros(1), "source": 1, "index": 0}
    assert trainer._to_device(batch)[2] == SRC2_NAME


def source_fractions(stream: BatchStream, n: int = 4000) -> np.ndarray:
    sources = np.array([stream.source_of(i) for i in range(n)])
    return np.bincount(sources, minlength=len(stream.samplers)) / n


def test_batch_stream_balances_sources_and_source_weights_skew_it():
    equal = BatchStream([object(), object()], [1, 1], seed=7, stream=0)
    np.testing.assert_allclose(source_fractions(equal), [0.5, 0.5], atol=0.03)
    skewed = BatchStream([object(), object()], [3, 1], seed=7, stream=0)
    np.testing.assert_allclose(source_fractions(skewed), [0.75, 0.25], atol=0.03)
    three = BatchStream([object()] * 3, [1, 1, 2], seed=7, stream=0)
    np.testing.assert_allclose(source_fractions(three), [0.25, 0.25, 0.5], atol=0.03)
    other_rank = BatchStream([object(), object()], [3, 1], seed=7, stream=0, rank=3)
    assert [skewed.source_of(i) for i in range(200)] == [other_rank.source_of(i) for i in range(200)]
    consecutive = [equal.source_of(i) for i in range(200)]
    assert 0 < sum(consecutive) < 200 and consecutive != sorted(consecutive)


def test_source_weights_flag_reaches_the_trainers_batch_stream(roots, tmp_path):
    args = train_cli.build_parser().parse_args(["-d", "2", "3", "-t", "pretrain", "--source-weights", "3", "1"])
    assert args.source_weights == [3.0, 1.0]
    tasks = [task_of(roots, SRC1_NAME), task_of(roots, SRC2_NAME)]
    trainer = Trainer(tasks, CONFIG, make_strategy("pretrain"), tmp_path, settings(source_weights=args.source_weights))
    train_stream, _ = trainer._streams()
    np.testing.assert_allclose(source_fractions(train_stream), [0.75, 0.25], atol=0.03)


def test_pretraining_on_datasets_with_different_plans_is_refused(roots):
    before = results_tree(roots)
    with pytest.raises(CovtransferError, match="different plans.*--plans-from") as error:
        train([SRC1, OTHER], make_strategy("pretrain"), "all", roots, settings())
    assert "\n" not in str(error.value) and results_tree(roots) == before


# ------------------------------------------------------------------------------------------- strategies
def optimised(trainer: Trainer) -> set[int]:
    return {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}


def test_continual_loads_encoder_and_decoder_and_trains_everything(roots, source, tmp_path):
    trainer = target_trainer(roots, make_strategy("continual"), source, tmp_path)
    state, pre = trainer.network.state_dict(), source.state_dict
    loaded = sorted(names(pre, "encoder") + names(pre, "decoder"))
    assert all(torch.equal(state[n], pre[n]) for n in loaded)
    assert sorted(trainer.load_report.loaded) == loaded
    assert sorted(trainer.load_report.skipped) == names(pre, "heads")
    assert trainer.load_report.missing == names(state, f"heads.{TARGET_NAME}")
    assert optimised(trainer) == {id(p) for p in trainer.network.parameters()}


def test_pretrained_encoder_loads_only_the_encoder(roots, source, tmp_path):
    trainer = target_trainer(roots, make_strategy("encoder"), source, tmp_path)
    state, pre = trainer.network.state_dict(), source.state_dict
    assert all(torch.equal(state[n], pre[n]) for n in names(pre, "encoder"))
    decoder_convs = [n for n in names(pre, "decoder") if n.endswith("weight") and pre[n].ndim == 5]
    assert decoder_convs and not any(torch.equal(state[n], pre[n]) for n in decoder_convs)
    assert sorted(trainer.load_report.loaded) == names(pre, "encoder")
    assert sorted(trainer.load_report.skipped) == names(pre, "decoder") + names(pre, "heads")
    assert optimised(trainer) == {id(p) for p in trainer.network.parameters()}


@pytest.mark.parametrize("freeze, frozen_prefix", [(None, "encoder."), ("encoder:1", "encoder.stages.0.")])
def test_finetune_freezes_the_encoder_and_keeps_it_bit_identical(roots, source, tmp_path, freeze, frozen_prefix):
    trainer = target_trainer(roots, make_strategy("finetune", freeze), source, tmp_path)
    params = dict(trainer.network.named_parameters())
    frozen = {n for n in params if n.startswith(frozen_prefix)}
    assert frozen and all(not params[n].requires_grad for n in frozen)
    assert optimised(trainer) == {id(p) for n, p in params.items() if n not in frozen}
    if freeze:
        assert any(n.startswith("encoder.stages.1.") for n in params if n not in frozen)
    for step in range(3):
        trainer.train_step(*random_batch(trainer.plans, seed=step), TARGET_NAME)
    pre = source.state_dict
    assert all(torch.equal(params[n].detach(), pre[n]) for n in frozen)
    trained = [n for n in names(pre, "encoder") + names(pre, "decoder") if n not in frozen]
    assert not all(torch.equal(params[n].detach(), pre[n]) for n in trained)


def test_hybrid_adapts_the_pretrained_encoder_at_a_reduced_rate_beside_a_random_dedicated_one(roots, source,
                                                                                            tmp_path):
    trainer = target_trainer(roots, make_strategy("hybrid"), source, tmp_path)
    assert isinstance(trainer.network, HybridUNet)
    state, pre = trainer.network.state_dict(), source.state_dict
    encoder = names(pre, "encoder")
    assert all(torch.equal(state["adapted_" + n], pre[n]) for n in encoder)
    convs = [n for n in encoder if pre[n].ndim == 5]
    assert not any(torch.equal(state["dedicated_" + n], pre[n]) for n in convs)
    assert sorted(trainer.load_report.loaded) == encoder
    assert sorted(trainer.load_report.missing) == sorted(n for n in state if not n.startswith("adapted_encoder."))
    groups = {g["lr_scale"]: {id(p) for p in g["params"]} for g in trainer.optimizer.param_groups}
    adapted = {id(p) for n, p in trainer.network.named_parameters() if n.startswith("adapted_encoder.")}
    assert set(groups) == {1.0, 0.1} and groups[0.1] == adapted
    assert groups[1.0] | adapted == {id(p) for p in trainer.network.parameters()}


def test_hybrid_learning_rates_follow_the_poly_schedule_with_the_adapted_encoder_at_a_tenth(roots, source, tmp_path,
                                                                                           monkeypatch):
    """4 epochs × 2 steps: each step sees lr 0.01 × (1 − e/4)^0.9 and a tenth of it for the adapted encoder, and the
    first SGD step moves an adapted weight by exactly its group's rate (Nesterov's first step: −lr (1 + m)(g + wd w))."""
    trainer = target_trainer(roots, make_strategy("hybrid"), source, tmp_path, settings(epochs=4, iters=2))
    adapted = {id(p) for n, p in trainer.network.named_parameters() if n.startswith("adapted_encoder.")}
    seen, first = [], {}
    real_step = Trainer.train_step

    def train_step(self, images, seg, task):
        rates = {}
        for group in self.optimizer.param_groups:
            ids = {id(p) for p in group["params"]}
            assert ids <= adapted or not ids & adapted  # the adapted encoder has a group of its own
            rates["adapted" if ids <= adapted else "rest"] = group["lr"]
        seen.append(rates)
        before = {id(p): p.detach().clone() for group in self.optimizer.param_groups for p in group["params"]}
        loss = real_step(self, images, seg, task)
        if not first:
            s = self.settings
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        first[id(p)] = (p.detach() - before[id(p)],
                                        -group["lr"] * (1 + s.momentum) * (p.grad + s.weight_decay * before[id(p)]))
        return loss

    monkeypatch.setattr(Trainer, "train_step", train_step)
    trainer.fit()
    poly = [0.01, 0.007718895067235705, 0.005358867312681466, 0.0028717458874925874]  # 0.01 × (1 − e/4)^0.9
    assert len(seen) == 8
    for step, rates in enumerate(seen):
        assert rates["rest"] == pytest.approx(poly[step // 2], rel=1e-12)
        assert rates["adapted"] == pytest.approx(0.1 * poly[step // 2], rel=1e-12)
    moved = [i for i in first if i in adapted and first[i][1].abs().max() > 0]
    assert moved and len(moved) < len(first)
    for update, expected in first.values():
        # float32 rounding of w + Δw loses up to ~6e-8 × |w|: 3e-7 for the heads' prior bias (−4.6)
        torch.testing.assert_close(update, expected, rtol=1e-3, atol=5e-7)
    update, expected = (torch.cat([first[i][k].flatten() for i in moved]) for k in (0, 1))
    assert float(update.norm() / expected.norm()) == pytest.approx(1.0, rel=1e-2)  # a full-rate step would be 10
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([poly[3], 0.1 * poly[3]], rel=1e-12)


def test_hybrid_adapted_lr_scale_option(roots, source, tmp_path):
    trainer = target_trainer(roots, make_strategy("hybrid", adapted_lr_scale=0.25), source, tmp_path)
    assert sorted(g["lr_scale"] for g in trainer.optimizer.param_groups) == [0.25, 1.0]


def test_hybrid_freeze_adapted_keeps_the_pretrained_encoder(roots, source, tmp_path):
    trainer = target_trainer(roots, make_strategy("hybrid", "adapted"), source, tmp_path)
    params = dict(trainer.network.named_parameters())
    adapted = {n for n in params if n.startswith("adapted_encoder.")}
    assert all(not params[n].requires_grad for n in adapted)
    assert optimised(trainer) == {id(p) for n, p in params.items() if n not in adapted}
    assert [g["lr_scale"] for g in trainer.optimizer.param_groups] == [1.0]
    for step in range(2):
        trainer.train_step(*random_batch(trainer.plans, seed=step), TARGET_NAME)
    assert all(torch.equal(params["adapted_" + n].detach(), source.state_dict[n])
               for n in names(source.state_dict, "encoder"))
    assert trainer.network.last_attention[0].shape == (2, trainer.configuration.features_per_stage[0])


def test_scratch_loads_nothing(roots, source, tmp_path):
    trainer = target_trainer(roots, make_strategy("scratch"), None, tmp_path)
    assert trainer.load_report is None and isinstance(trainer.network, UNet)
    state, pre = trainer.network.state_dict(), source.state_dict
    assert not any(torch.equal(state[n], pre[n]) for n in names(pre, "encoder") if pre[n].ndim == 5)


@pytest.mark.parametrize("strategy", ["scratch", *TRANSFER])
def test_saved_checkpoint_rebuilds_the_same_network(roots, source, tmp_path, strategy):
    trainer = target_trainer(roots, make_strategy(strategy), None if strategy == "scratch" else source, tmp_path)
    trainer.train_step(*random_batch(trainer.plans), TARGET_NAME)
    save_checkpoint(tmp_path / "checkpoint.pt", trainer.checkpoint())
    rebuilt = build_from_checkpoint(load_checkpoint(tmp_path / "checkpoint.pt")).eval()
    trainer.network.deep_supervision = False
    trainer.network.eval().to(memory_format=torch.contiguous_format)  # trains channels-last on a CPU
    images, _ = random_batch(trainer.plans, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), trainer.network(images), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- real runs
@pytest.mark.parametrize("strategy", ["scratch", *TRANSFER])
def test_every_strategy_run_records_what_it_loaded(roots, runs, source, pretrained, strategy):
    folder = runs[strategy]
    assert folder == roots.results / TARGET_NAME / strategy / "fold_0"
    checkpoint = load_checkpoint(folder / "checkpoint_final.pt")
    assert checkpoint.strategy["name"] == strategy
    assert checkpoint.kind == ("hybrid" if strategy == "hybrid" else "unet")
    assert checkpoint.heads == {TARGET_NAME: 2}
    report_path = folder / "load_report.json"
    if strategy == "scratch":
        assert not report_path.exists()
        return
    report = json.loads(report_path.read_text())
    assert set(report) == {"source", "loaded", "skipped", "missing", "reinitialised", "origin"}
    assert report["source"] == str(pretrained / "checkpoint_final.pt")
    assert list(report["reinitialised"]) == [f"heads.{TARGET_NAME}"]
    assert report["origin"]["kind"] == "checkpoint" and report["origin"]["strategy"] == "pretrain"
    assert [d["name"] for d in report["origin"]["datasets"]] == [SRC1_NAME, SRC2_NAME]
    pre = source.state_dict
    expected = sorted(names(pre, "encoder") + (names(pre, "decoder") if strategy in ("continual", "finetune") else []))
    assert sorted(report["loaded"]) == expected
    assert sorted(report["loaded"] + report["skipped"]) == sorted(pre)
    assert set(report["missing"]).isdisjoint({("adapted_" + n if strategy == "hybrid" else n) for n in expected})


@pytest.mark.parametrize("strategy", ["scratch", *TRANSFER])
def test_checkpoint_of_every_strategy_predicts_a_preprocessed_case(roots, runs, strategy):
    path = runs[strategy] / "checkpoint_final.pt"
    checkpoint = load_checkpoint(path)
    network = build_from_checkpoint(checkpoint).eval()
    assert isinstance(network, HybridUNet if strategy == "hybrid" else UNet)
    assert all(torch.equal(v, checkpoint.state_dict[k]) for k, v in network.state_dict().items())
    configuration = checkpoint.configuration
    case_folder = roots.preprocessed / TARGET_NAME / configuration.data_identifier
    data, _, _ = load_case(case_folder, sorted(p.stem for p in case_folder.glob("*.json"))[0])
    volume = torch.from_numpy(data)
    logits = predict_sliding_window(network, volume, configuration.patch_size, 2, task=checkpoint.predict_head)
    assert logits.shape == (2, *data.shape[1:]) and torch.isfinite(logits).all()
    model = load_model(path)
    assert model.task == TARGET_NAME and model.num_classes == 2
    through_api = predict_logits(model.network, volume, configuration.patch_size, windows_per_batch=2)
    torch.testing.assert_close(through_api, logits)


@pytest.mark.parametrize("strategy", ["finetune", "hybrid"])
def test_predictor_segments_a_raw_test_scan_with_a_transferred_model(roots, runs, tmp_path, strategy):
    images = roots.raw / TARGET_NAME / "imagesTs"
    written = predict_folder(images, tmp_path / "out", [runs[strategy] / "checkpoint_final.pt"], device="cpu",
                             tta=False, progress=False)
    assert [p.name for p in written] == ["covid_ts000.nii.gz"]
    seg, geometry = read_image(written[0])
    image, image_geometry = read_image(images / "covid_ts000_0000.nii.gz")
    assert seg.shape == image.shape and geometry.matches(image_geometry)
    assert set(np.unique(seg)) <= {0, 1}


def test_hybrid_attention_can_be_read_after_a_forward_pass(roots, runs):
    """The recipe of documentation/transfer.md: α (dedicated) and β = 1 − α (adapted) per level and channel."""
    model = load_model(runs["hybrid"] / "checkpoint_final.pt")
    data, _, _ = load_case(roots.preprocessed / TARGET_NAME / model.configuration.data_identifier, "covid_tr000")
    z, y, x = model.configuration.patch_size
    window = torch.from_numpy(data[None, :, :z, :y, :x])
    with torch.no_grad():
        model.network(window)
    alphas = model.network.last_attention
    assert [tuple(a.shape) for a in alphas] == [(1, f) for f in model.configuration.features_per_stage]
    assert all(((a > 0) & (a < 1)).all() for a in alphas)
