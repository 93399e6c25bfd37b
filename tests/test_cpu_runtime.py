"""The fast CPU path (OpenVINO) against the plain PyTorch path, and the --fast / nnU-Net-style predict flags."""

import numpy as np
import pytest
import torch

import covtransfer.cli.predict as predict_cli
from covtransfer.data.image_io import read_image
from covtransfer.inference.cpu_runtime import CPU_RUNTIME_ENV, export_onnx, runtime_available, use_cpu_runtime
from covtransfer.inference.model_loading import load_model
from covtransfer.inference.predictor import FAST_STEP, compiled_forwards, ensemble_logits
from tiny_models import make_plans, save_checkpoint, write_case

needs_runtime = pytest.mark.skipif(not runtime_available(), reason="the cpu-fast extra (openvino) is not installed")


def test_runtime_is_chosen_only_on_the_cpu_and_can_be_switched_off(monkeypatch):
    monkeypatch.delenv(CPU_RUNTIME_ENV, raising=False)
    assert use_cpu_runtime(torch.device("cpu")) == runtime_available()
    assert not use_cpu_runtime(torch.device("cuda"))
    assert not use_cpu_runtime(torch.device("cpu"), enabled=False)
    monkeypatch.setenv(CPU_RUNTIME_ENV, "0")
    assert not use_cpu_runtime(torch.device("cpu"))


@needs_runtime
def test_openvino_path_gives_the_plain_prediction_on_a_tiny_network(tmp_path):
    model = load_model(save_checkpoint(tmp_path / "fold_0", make_plans(features=(4, 8, 16))))
    data = np.random.default_rng(0).normal(size=(1, 13, 37, 29)).astype(np.float32)
    [forward] = compiled_forwards([model], torch.device("cpu"))
    assert forward is not None
    plain = ensemble_logits([model], data, torch.device("cpu"), tta=True)
    fast = ensemble_logits([model], data, torch.device("cpu"), tta=True, forwards=[forward])
    assert torch.allclose(plain, fast, atol=1e-4, rtol=1e-4)
    threshold = plain[1].median()  # random weights: label the upper half, so that the maps compared are not empty
    a, b = plain[1] > threshold, fast[1] > threshold
    assert a.any() and 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.999


@needs_runtime
def test_export_is_cached_by_weights_and_leaves_no_temporary_file(tmp_path):
    model = load_model(save_checkpoint(tmp_path / "fold_0", make_plans()))
    model.network.eval()
    path = export_onnx(model.network, model.task, [8, 16, 16], 1, tmp_path / "cache")
    stamp = path.stat().st_mtime_ns
    assert export_onnx(model.network, model.task, [8, 16, 16], 1, tmp_path / "cache").stat().st_mtime_ns == stamp
    with torch.no_grad():
        next(model.network.parameters()).add_(1.0)
    assert export_onnx(model.network, model.task, [8, 16, 16], 1, tmp_path / "cache") != path
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".onnx", ".onnx"]


@pytest.mark.parametrize("flags, step, tta, runtime", [
    ([], 0.5, True, True),
    (["--fast"], FAST_STEP, False, True),
    (["--fast", "--step", "0.7"], 0.7, False, True),
    (["--step-size", "0.6", "--disable-tta"], 0.6, False, True),
    (["--no-tta", "--no-cpu-runtime"], 0.5, False, False),
])
def test_fast_preset_and_nnunet_style_flags_reach_the_predictor(tmp_path, monkeypatch, flags, step, tta, runtime):
    seen = {}

    def fake_predict_folder(input_path, output, checkpoints, device, tta_, step_, *args, cpu_runtime, allow_spacing,
                            statistics):
        seen.update(step=step_, tta=tta_, runtime=cpu_runtime, allow_spacing=allow_spacing, statistics=statistics)
        return []

    monkeypatch.setattr(predict_cli, "predict_folder", fake_predict_folder)
    model = save_checkpoint(tmp_path / "fold_0", make_plans())
    assert predict_cli.main(["-i", "x", "-o", "y", "-m", str(model), "--quiet"] + flags) == 0
    assert seen == {"step": step, "tta": tta, "runtime": runtime, "allow_spacing": False, "statistics": False}


def test_fast_prediction_through_the_entry_point_writes_the_label_map(tmp_path):
    model = save_checkpoint(tmp_path / "fold_0", make_plans())
    write_case(tmp_path / "images", "a")
    outputs = {}
    for name, flags in (("fast", ["--fast"]), ("plain", ["--fast", "--no-cpu-runtime"])):
        assert predict_cli.main(["-i", str(tmp_path / "images"), "-o", str(tmp_path / name), "-m", str(model),
                                 "--quiet"] + flags) == 0
        outputs[name] = read_image(tmp_path / name / "a.nii.gz")[0]
    assert outputs["fast"].shape == (10, 20, 18)
    assert np.array_equal(outputs["fast"], outputs["plain"])
