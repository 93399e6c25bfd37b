"""Inference: sliding window, export to the input grid, fold ensembling, input discovery, the predict command."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from covtransfer.cli.common import run_cli
from covtransfer.cli.predict import main
from covtransfer.data.image_io import Geometry, read_image, write_image
from covtransfer.errors import CovtransferError
from covtransfer.inference.export import probabilities_to_original, segmentation_to_original
from covtransfer.inference.inputs import check_cases, discover_cases
from covtransfer.inference.model_loading import LoadedModel, checkpoint_paths, load_model
from covtransfer.inference.predictor import (Predictor, ensemble_probabilities, predict_logits,
                                             predict_preprocessed)
from covtransfer.inference.sliding_window import gaussian_importance, predict_sliding_window, window_starts
from covtransfer.network.build import build_network
from covtransfer.network.checkpoint import Checkpoint
from covtransfer.network.checkpoint_io import save_checkpoint as write_checkpoint
from covtransfer.plans import ChannelNormalization, Configuration, Plans
from covtransfer.preprocessing.preprocessor import CasePreprocessor

REPO = Path(__file__).resolve().parents[1]
FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def make_plans(spacing=(2.0, 1.0, 1.0), transpose=(0, 1, 2), channels=1, patch=(8, 16, 16),
               features=(4, 8)) -> Plans:
    n = len(features)
    configuration = Configuration(
        name="3d_fullres", spacing=list(spacing), patch_size=list(patch), batch_size=2,
        features_per_stage=list(features), kernel_sizes=[[3, 3, 3]] * n, strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        median_image_size=list(patch), normalization=[ChannelNormalization("none")] * channels,
        data_identifier="3d_fullres")
    backward = [int(a) for a in np.argsort(transpose)]
    return Plans(dataset_name="Dataset001_Test", channel_names={str(c): "CT" for c in range(channels)},
                 labels={"background": 0, "lesion": 1}, transpose_forward=list(transpose),
                 transpose_backward=backward, original_median_spacing=list(spacing),
                 original_median_shape=[16, 24, 24], configurations={"3d_fullres": configuration})


def make_checkpoint(plans: Plans, seed: int = 0, mirror_axes=(0, 1, 2)) -> Checkpoint:
    torch.manual_seed(seed)
    heads = {"Dataset001_Test": 2}
    network = build_network(plans.configuration("3d_fullres"), plans.num_input_channels, heads,
                            deep_supervision=False)
    return Checkpoint("unet", heads, plans, "3d_fullres", network.state_dict(), {"Dataset001_Test": dict(plans.labels)},
                      "Dataset001_Test", tuple(mirror_axes), {"name": "scratch"}, epoch=1)


def save_checkpoint(folder: Path, plans: Plans, seed: int = 0, name: str = "checkpoint_final.pt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_checkpoint(folder / name, make_checkpoint(plans, seed))
    return folder / name


def body_image(shape=(10, 20, 18), seed: int = 0) -> np.ndarray:
    """A random 'body' with a zero border so cropping removes a margin on every axis."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, dtype=np.float32)
    image[2:-1, 3:-2, 1:-4] = rng.normal(0, 1, (shape[0] - 3, shape[1] - 5, shape[2] - 5)) + 0.1
    return image


class Threshold(nn.Module):
    """Pointwise model: class 1 wherever the first channel exceeds 0 (mirror-equivariant, window-independent)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x, task=None):
        return torch.cat([torch.zeros_like(x[:, :1]), self.scale * x[:, :1]], dim=1)


def pointwise_model(plans: Plans, source: Path = Path("none/checkpoint_final.pt")) -> LoadedModel:
    checkpoint = Checkpoint("unet", {"t": 2}, plans, "3d_fullres", {}, {"t": {"background": 0, "lesion": 1}}, "t",
                            (0, 1, 2))
    return LoadedModel(Threshold(), checkpoint, source)


# --------------------------------------------------------------------------------------- sliding window


def test_window_starts_cover_the_volume_with_bounded_gaps():
    starts = window_starts(100, 40, 0.5)
    assert starts[0] == 0 and starts[-1] == 60
    assert len(starts) == 4 and max(np.diff(starts)) <= 20
    assert window_starts(30, 40, 0.5) == [0] and window_starts(40, 40, 0.5) == [0]
    assert window_starts(41, 40, 1.0) == [0, 1]


def test_gaussian_peak_one_at_centre_sigma_one_eighth_and_positive():
    weight = gaussian_importance((8, 16, 32))
    assert weight.shape == (8, 16, 32) and float(weight.max()) == pytest.approx(1.0, abs=1e-3)
    assert float(weight.min()) > 0
    assert torch.allclose(weight, weight.flip(0).flip(1).flip(2))
    line = weight[4, 8].double()  # x axis through the centre; sigma = 32 / 8 = 4 voxels, centre at 15.5
    assert float(line[19] / line[15]) == pytest.approx(np.exp(-0.5 * (3.5 ** 2 - 0.5 ** 2) / 16), rel=1e-3)


def test_sliding_window_on_a_volume_smaller_than_the_patch_keeps_its_shape_and_values():
    data = torch.randn(1, 5, 9, 7)
    logits = predict_sliding_window(Threshold(), data, (8, 16, 16), 2, mirror_axes=(0, 1, 2))
    assert logits.shape == (2, 5, 9, 7)
    assert torch.allclose(logits[1], 20 * data[0], atol=1e-4)


def test_pointwise_model_gives_the_same_output_with_and_without_mirroring():
    plans = make_plans()
    data = torch.randn(1, 13, 37, 21)
    on = predict_logits(Threshold(), data, (8, 16, 16), 2, mirror_axes=(0, 1, 2))
    off = predict_logits(Threshold(), data, (8, 16, 16), 2, mirror_axes=())
    assert torch.allclose(on, off, atol=1e-4) and torch.allclose(on[1], 20 * data[0], atol=1e-4)
    network = build_network(plans.configuration("3d_fullres"), 1, {"a": 2}, deep_supervision=False)
    with torch.no_grad():
        network.heads["a"][0].weight.zero_()  # constant logits = head bias: every flip agrees
        network.heads["a"][0].bias.copy_(torch.tensor([0.3, -0.2]))
    on = predict_logits(network, data, (8, 16, 16), 2, "a", mirror_axes=(0, 1, 2))
    assert torch.allclose(on, predict_logits(network, data, (8, 16, 16), 2, "a"), atol=1e-5)


def test_mirroring_averages_flipped_predictions_of_a_real_network():
    plans = make_plans()
    network = build_network(plans.configuration("3d_fullres"), 1, {"a": 2}, deep_supervision=False).eval()
    data = torch.randn(1, 8, 16, 16)
    with torch.no_grad():
        expected = (network(data[None]) + network(data[None].flip(4)).flip(4))[0] / 2
    got = predict_logits(network, data, (8, 16, 16), 2, "a", mirror_axes=(2,))
    assert torch.allclose(got, expected, atol=1e-5)


def test_predict_preprocessed_accepts_a_live_training_model_and_restores_its_state():
    plans = make_plans()
    network = build_network(plans.configuration("3d_fullres"), 1, {"a": 2, "b": 3}, deep_supervision=True).train()
    data = np.random.default_rng(0).normal(size=(1, 9, 20, 18)).astype(np.float32)
    probabilities = predict_preprocessed(network, data, {"plans": plans.to_dict(), "configuration_name": "3d_fullres",
                                                         "mirror_axes": [0]}, task="b", device="cpu")
    assert probabilities.shape == (3, 9, 20, 18)
    assert torch.allclose(probabilities.sum(0), torch.ones(9, 20, 18), atol=1e-5)
    assert network.training and network.deep_supervision
    same = predict_preprocessed(network, data, plans.configuration("3d_fullres"), task="b", tta=False)
    assert same.shape == (3, 9, 20, 18)


# --------------------------------------------------------------------------------------------- export


@pytest.mark.parametrize("transpose", [(0, 1, 2), (2, 0, 1)])
def test_export_without_resampling_inverts_transpose_and_crop_exactly(transpose):
    image = body_image()
    spacing = (1.5, 0.8, 0.9)
    plans = make_plans(spacing=[spacing[a] for a in transpose], transpose=transpose)
    data, _, properties = CasePreprocessor(plans, "3d_fullres").run([image], Geometry(spacing), None, "c")
    assert list(data.shape[1:]) != list(image.shape)  # cropped and transposed
    probabilities = torch.softmax(torch.stack([torch.zeros_like(torch.from_numpy(data[0])),
                                               20 * torch.from_numpy(data[0])]), 0)
    seg = segmentation_to_original(probabilities, properties, plans, "3d_fullres")
    assert seg.dtype == np.uint8 and seg.shape == image.shape
    assert np.array_equal(seg, (image > 0).astype(np.uint8))
    full = probabilities_to_original(probabilities, properties, plans, "3d_fullres")
    assert full.shape == (2, *image.shape)
    outside = image == 0
    assert torch.all(full[0][torch.from_numpy(outside)] == 1) and torch.all(full[1][torch.from_numpy(outside)] == 0)
    assert np.array_equal(full.argmax(0).numpy(), seg)


def test_export_resamples_anisotropic_predictions_back_close_to_the_truth():
    image = np.zeros((12, 40, 36), dtype=np.float32)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in image.shape], indexing="ij")
    image[1:-1, 2:-2, 2:-2] = -1.0
    ball = ((zz - 6) * 3.0) ** 2 + (yy - 20.0) ** 2 + (xx - 17.0) ** 2 < 12 ** 2
    image[ball] = 1.0
    plans = make_plans(spacing=(1.5, 1.5, 1.5))
    data, _, properties = CasePreprocessor(plans, "3d_fullres").run([image], Geometry((3.0, 1.0, 1.0)), None, "c")
    assert data.shape[1:] == (20, 24, 21)  # 3 mm -> 1.5 mm along z, 1 mm -> 1.5 mm in-plane (after cropping)
    logits = torch.from_numpy(20 * data[0])
    probabilities = torch.softmax(torch.stack([torch.zeros_like(logits), logits]), 0)
    seg = segmentation_to_original(probabilities, properties, plans, "3d_fullres")
    truth = image > 0
    dice = 2 * (seg.astype(bool) & truth).sum() / (seg.astype(bool).sum() + truth.sum())
    assert seg.shape == image.shape and dice > 0.95
    assert not seg[image == 0].any()


@pytest.mark.parametrize("target, orders", [((1.0, 1.0, 1.0), (1, 1, 1)), ((4.0, 1.0, 1.0), (0, 1, 1)),
                                             ((1.0, 4.0, 1.0), (1, 0, 1)), ((1.0, 1.0, 4.0), (1, 1, 0))])
def test_export_resampling_equals_scipy_zoom_with_the_separate_z_rule(target, orders):
    from scipy import ndimage
    probabilities = torch.rand(2, 5, 12, 10, generator=torch.Generator().manual_seed(0))
    out_shape = [9, 17, 7]
    properties = {"shape_after_resampling": [5, 12, 10], "shape_after_cropping": out_shape,
                  "shape_before_cropping": out_shape, "bbox": [[0, s] for s in out_shape], "target_spacing": target,
                  "original_spacing": [0.6, 0.7, 0.8], "case_id": "c"}
    got = probabilities_to_original(probabilities, properties, make_plans(), "3d_fullres").numpy()
    for k in range(2):
        expected = probabilities[k].double().numpy()
        for axis, order in enumerate(orders):  # separable: one axis at a time, in any order
            zoom = [1.0, 1.0, 1.0]
            zoom[axis] = out_shape[axis] / expected.shape[axis]
            expected = ndimage.zoom(expected, zoom, order=order, mode="nearest", grid_mode=True)
        assert np.abs(got[k] - expected).max() < 1e-5


# ---------------------------------------------------------------------------------------- input discovery


def write_case(folder: Path, case: str, channels: int = 1, ending: str = ".nii.gz", shape=(10, 20, 18),
               geometry: Geometry | None = None) -> list[Path]:
    geometry = geometry or Geometry((1.5, 0.8, 0.9))
    paths = []
    for channel in range(channels):
        path = folder / f"{case}_{channel:04d}{ending}"
        write_image(path, body_image(shape, seed=channel), geometry)
        paths.append(path)
    return paths


def test_discover_channel_files_plain_files_raw_layout_and_single_file(tmp_path):
    grouped = tmp_path / "grouped"
    write_case(grouped, "b", channels=2)
    write_case(grouped, "a", channels=2, ending=".mha")
    (grouped / "notes.txt").write_text("ignored")
    cases = discover_cases(grouped)
    assert [(c.case_id, len(c.images), c.ending) for c in cases] == [("a", 2, ".mha"), ("b", 2, ".nii.gz")]
    assert cases[0].images[1].name == "a_0001.mha"
    plain = tmp_path / "plain"
    plain.mkdir()
    write_image(plain / "scan_x.nrrd", body_image(), Geometry((1.0, 1.0, 1.0)))
    write_image(plain / "scan_0001.nii", body_image(), Geometry((1.0, 1.0, 1.0)))
    assert [(c.case_id, c.output_name()) for c in discover_cases(plain)] == [("scan_0001", "scan_0001.nii"),
                                                                              ("scan_x", "scan_x.nrrd")]
    raw = tmp_path / "Dataset001_Test"
    write_case(raw / "imagesTs", "t1")
    assert [c.case_id for c in discover_cases(raw)] == ["t1"]
    single = discover_cases(grouped / "b_0000.nii.gz")
    assert single[0].case_id == "b" and len(single[0].images) == 2


def test_discover_refuses_channel_gaps_empty_folders_and_missing_inputs(tmp_path):
    write_case(tmp_path / "gap", "a", channels=1)
    os.rename(tmp_path / "gap" / "a_0000.nii.gz", tmp_path / "gap" / "a_0001.nii.gz")
    with pytest.raises(CovtransferError, match="a_0001.nii.gz: case a has channel files _0001"):
        discover_cases(tmp_path / "gap")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CovtransferError, match="no image files"):
        discover_cases(tmp_path / "empty")
    with pytest.raises(CovtransferError, match="no such input"):
        discover_cases(tmp_path / "missing")


def test_check_cases_refuses_wrong_channel_count_and_unreadable_headers(tmp_path):
    write_case(tmp_path / "two", "a", channels=2)
    with pytest.raises(CovtransferError, match=r"a_0000.nii.gz: case a has 2 channel file\(s\) but the model "
                                               r"expects 1"):
        check_cases(discover_cases(tmp_path / "two"), 1)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x_0000.nii.gz").write_bytes(b"not an image at all")
    with pytest.raises(CovtransferError, match="x_0000.nii.gz: unreadable image header"):
        check_cases(discover_cases(bad), 1)


# ------------------------------------------------------------------------------------- models and ensembles


def test_checkpoint_paths_from_fold_strategy_and_file_and_refusal(tmp_path):
    plans = make_plans()
    first = save_checkpoint(tmp_path / "scratch" / "fold_0", plans)
    second = save_checkpoint(tmp_path / "scratch" / "fold_10", plans, 1)
    save_checkpoint(tmp_path / "scratch" / "fold_2", plans, 2, name="checkpoint_best.pt")
    assert checkpoint_paths([tmp_path / "scratch"]) == [first, second]
    assert checkpoint_paths([tmp_path / "scratch" / "fold_0", second]) == [first, second]
    assert len(checkpoint_paths([tmp_path / "scratch"], "best")) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(CovtransferError, match="empty: no checkpoint_final.pt here nor in any fold_"):
        checkpoint_paths([tmp_path / "empty"])


def test_fold_ensemble_probability_is_the_mean_of_the_folds(tmp_path):
    plans = make_plans()
    models = [load_model(save_checkpoint(tmp_path / f"fold_{k}", plans, seed=k)) for k in range(2)]
    data = np.random.default_rng(1).normal(size=(1, 10, 20, 20)).astype(np.float32)
    single = [ensemble_probabilities([m], data, torch.device("cpu")) for m in models]
    assert not torch.allclose(single[0], single[1], atol=1e-3)
    both = ensemble_probabilities(models, data, torch.device("cpu"))
    assert torch.allclose(both, (single[0] + single[1]) / 2, atol=1e-6)


def test_models_with_different_plans_are_not_ensembled(tmp_path):
    a = save_checkpoint(tmp_path / "fold_0", make_plans())
    b = save_checkpoint(tmp_path / "fold_1", make_plans(spacing=(3.0, 1.0, 1.0)))
    write_case(tmp_path / "images", "a")
    with pytest.raises(CovtransferError, match="fold_1/checkpoint_final.pt: its plans or classes differ"):
        main(["-i", str(tmp_path / "images"), "-o", str(tmp_path / "out"), "-m", str(a), str(b), "--quiet"])


# ------------------------------------------------------------------------------------------------- command


@pytest.fixture
def results(tmp_path) -> Path:
    root = tmp_path / "results"
    plans = make_plans(spacing=(2.0, 1.0, 1.0), transpose=(0, 2, 1))
    for fold in range(2):
        save_checkpoint(root / "Dataset001_Test" / "scratch" / f"fold_{fold}", plans, seed=fold)
    return root


def test_predict_command_writes_labels_exactly_on_the_input_grid(tmp_path, results):
    images = tmp_path / "images"
    geometry = Geometry((3.0, 0.8, 0.9), (10.0, -20.0, 5.5), FLIPPED)
    write_case(images, "a", geometry=geometry)
    write_case(images, "b", ending=".mha", shape=(7, 16, 19), geometry=geometry)
    assert main(["-i", str(images), "-o", str(tmp_path / "out"), "-d", "1", "-t", "scratch",
                 "--results", str(results), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.mha"]
    for case, ending in (("a", ".nii.gz"), ("b", ".mha")):
        source = sitk.ReadImage(str(images / f"{case}_0000{ending}"))
        output = sitk.ReadImage(str(tmp_path / "out" / f"{case}{ending}"))
        assert output.GetSize() == source.GetSize()
        assert np.allclose(output.GetSpacing(), source.GetSpacing())
        assert np.allclose(output.GetOrigin(), source.GetOrigin())
        assert np.allclose(output.GetDirection(), source.GetDirection())
        assert output.GetPixelID() == sitk.sitkUInt8
        labels = sitk.GetArrayFromImage(output)
        assert set(np.unique(labels)) <= {0, 1}
        assert not labels[sitk.GetArrayFromImage(source) == 0].any()  # the zero border lies outside the crop box


def test_predict_save_probabilities_and_continue(tmp_path, results):
    images = tmp_path / "images"
    write_case(images, "a")
    out = tmp_path / "out"
    args = ["-i", str(images), "-o", str(out), "-d", "Dataset001_Test", "-t", "scratch", "-f", "0",
            "--results", str(results), "--save-probabilities", "--no-tta", "--quiet"]
    assert main(args) == 0
    probabilities = np.load(out / "a.npz")["probabilities"]
    labels, _ = read_image(out / "a.nii.gz")
    assert probabilities.dtype == np.float16 and probabilities.shape == (2, *labels.shape)
    assert np.allclose(probabilities.astype(np.float32).sum(0), 1, atol=2e-3)
    differ = probabilities.argmax(0) != labels  # only where float16 rounding made the classes tie
    assert differ.mean() < 0.01 and np.all(probabilities[0][differ] == probabilities[1][differ])
    (out / "a.nii.gz").write_bytes(b"sentinel")
    assert main(args + ["--continue"]) == 0
    assert (out / "a.nii.gz").read_bytes() == b"sentinel"
    assert main(args) == 0
    assert read_image(out / "a.nii.gz")[0].shape == labels.shape


# the predict command in a subprocess whose write of case "b" stops after the temporary file is complete, before
# its rename: the moment a SIGKILL can leave a temporary file behind
_STALLED_PREDICT = """
import sys, time
from covtransfer.inference import export
real = export.write_image
def stalled(path, *args, **kwargs):
    real(path, *args, **kwargs)
    if ".b.nii.gz." in str(path):
        time.sleep(120)
export.write_image = stalled
from covtransfer.cli.common import run_cli
from covtransfer.cli.predict import main
sys.exit(run_cli(main, sys.argv[1:]))
"""


def _kill_when(command: list[str], done, log: Path, timeout: float = 120) -> int:
    """Run ``command``, SIGKILL it once ``done()`` holds (or after ``timeout`` s); its exit status."""
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)))
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline and not done():
            time.sleep(0.02)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
    return process.returncode


def test_a_killed_prediction_leaves_complete_outputs_and_continue_predicts_only_the_rest(tmp_path, results, capsys):
    images, out = tmp_path / "images", tmp_path / "out"
    for case in ("a", "b", "c"):
        write_case(images, case)
    args = ["-i", str(images), "-o", str(out), "-d", "1", "-t", "scratch", "-f", "0", "--results", str(results),
            "--device", "cpu", "--no-tta", "--no-cpu-runtime", "--quiet"]

    def stalled_on_b() -> bool:
        return (out / "a.nii.gz").is_file() and any(p.name.startswith(".b.nii.gz.") for p in out.glob(".*"))

    status = _kill_when([sys.executable, "-c", _STALLED_PREDICT, *args], stalled_on_b, tmp_path / "killed.log")
    assert status == -signal.SIGKILL and stalled_on_b(), (tmp_path / "killed.log").read_text()[-2000:]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.nii.gz"]
    first = read_image(out / "a.nii.gz")[0]  # complete: NIfTI truncation is an error in read_image
    assert first.shape == (10, 20, 18)
    before = (out / "a.nii.gz").stat().st_mtime_ns

    capsys.readouterr()
    assert run_cli(main, args + ["--continue"]) == 0
    assert "2 case(s) predicted" in capsys.readouterr().out
    assert (out / "a.nii.gz").stat().st_mtime_ns == before and np.array_equal(read_image(out / "a.nii.gz")[0], first)
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]  # the leftover is gone
    assert all(read_image(out / f"{case}.nii.gz")[0].shape == (10, 20, 18) for case in "bc")


def test_fold_ensemble_through_the_command_averages_fold_probabilities(tmp_path, results):
    images = tmp_path / "images"
    write_case(images, "a")
    saved = []
    for folds in (["0"], ["1"], ["0", "1"]):
        out = tmp_path / ("out" + "".join(folds))
        main(["-i", str(images), "-o", str(out), "-d", "1", "-t", "scratch", "-f", *folds, "--results",
              str(results), "--save-probabilities", "--quiet"])
        saved.append(np.load(out / "a.npz")["probabilities"].astype(np.float32))
    assert np.abs(saved[0] - saved[1]).max() > 1e-3
    assert np.allclose(saved[2], (saved[0] + saved[1]) / 2, atol=2e-3)


def test_postprocess_applies_rules_and_requires_them(tmp_path, results):
    images = tmp_path / "images"
    image = np.zeros((10, 20, 18), dtype=np.float32)
    image[1:-1, 1:-1, 1:-1] = -1
    image[2:5, 3:8, 3:8] = 1
    image[7:9, 14:17, 12:16] = 1  # a second, smaller component
    images.mkdir()
    write_image(images / "a_0000.nii.gz", image, Geometry((2.0, 1.0, 1.0)))
    plans = make_plans()
    fold = tmp_path / "model" / "fold_0"
    fold.mkdir(parents=True)
    write_checkpoint(fold / "checkpoint_final.pt", make_checkpoint(plans))
    models = [pointwise_model(plans, fold / "checkpoint_final.pt")]
    (fold.parent / "postprocessing.json").write_text(json.dumps(
        {"largest_component_foreground": True, "largest_component_labels": []}))
    from covtransfer.inference.predictor import find_postprocessing
    result = Predictor(models, "cpu", postprocessing=find_postprocessing(models)).predict_case(
        discover_cases(images)[0])
    assert result.segmentation.sum() == 3 * 5 * 5 and result.segmentation[7:9, 14:17, 12:16].sum() == 0
    plain = Predictor(models, "cpu").predict_case(discover_cases(images)[0])
    assert plain.segmentation.sum() == 3 * 5 * 5 + 2 * 3 * 4
    (fold.parent / "postprocessing.json").unlink()
    with pytest.raises(CovtransferError, match="postprocessing.json: not found; run covtransfer_determine_post"):
        main(["-i", str(images), "-o", str(tmp_path / "out"), "-m", str(fold), "--postprocess", "--quiet"])


def test_refusals_leave_no_output_files(tmp_path, results, capsys):
    images = tmp_path / "images"
    write_case(images, "a")
    model = ["-d", "1", "-t", "scratch", "--results", str(results), "--quiet"]
    with pytest.raises(CovtransferError, match="the output folder is the input folder"):
        main(["-i", str(images), "-o", str(images), *model])
    assert sorted(p.name for p in images.iterdir()) == ["a_0000.nii.gz"]
    (tmp_path / "nomodel").mkdir()
    assert run_cli(main, ["-i", str(images), "-o", str(tmp_path / "o1"), "-m", str(tmp_path / "nomodel")]) == 1
    assert "nomodel: no checkpoint_final.pt" in capsys.readouterr().err
    two = tmp_path / "two"
    write_case(two, "a", channels=2)
    with pytest.raises(CovtransferError, match="a_0000.nii.gz: case a has 2 channel"):
        main(["-i", str(two), "-o", str(tmp_path / "o2"), *model])
    bad = tmp_path / "bad"
    write_case(bad, "a")
    (bad / "b_0000.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(CovtransferError, match="b_0000.nii.gz: unreadable image"):
        main(["-i", str(bad), "-o", str(tmp_path / "o3"), *model])
    with pytest.raises(CovtransferError, match="missing: no such input"):
        main(["-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o4"), *model])
    with pytest.raises(CovtransferError, match="no dataset with id 7"):
        main(["-i", str(images), "-o", str(tmp_path / "o5"), "-d", "7", "-t", "scratch", "--results", str(results)])
    for name in ("o1", "o2", "o3", "o4", "o5"):
        assert not (tmp_path / name).exists() or not any((tmp_path / name).iterdir())


def test_truncated_image_fails_with_its_name_and_leaves_no_partial_file(tmp_path, results):
    images = tmp_path / "images"
    [path] = write_case(images, "z", shape=(10, 40, 40))
    path.write_bytes(path.read_bytes()[:-200])
    out = tmp_path / "out"
    with pytest.raises(CovtransferError, match="z_0000.nii.gz: unreadable image"):
        main(["-i", str(images), "-o", str(out), "-d", "1", "-t", "scratch", "--results", str(results), "--quiet"])
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.gpu
def test_cuda_prediction_matches_the_cpu(tmp_path):
    plans = make_plans(spacing=(2.0, 1.0, 1.0), transpose=(0, 2, 1))
    checkpoint = save_checkpoint(tmp_path / "fold_0", plans)
    write_case(tmp_path / "images", "a", shape=(20, 40, 36))
    [case] = discover_cases(tmp_path / "images")
    results = {}
    for device in ("cpu", "cuda"):
        model = load_model(checkpoint, device)
        results[device] = Predictor([model], device, save_probabilities=True).predict_case(case)
    difference = np.abs(results["cpu"].probabilities.astype(np.float32) - results["cuda"].probabilities)
    assert results["cuda"].segmentation.shape == (20, 40, 36) and difference.max() < 0.05
    assert (results["cpu"].segmentation == results["cuda"].segmentation).mean() > 0.99


@pytest.mark.parametrize("spacing, nan_slab, needle", [
    ((50.0, 50.0, 50.0), False, "spacing 50.0 mm is above 20.0 mm: the header may be in cm"),
    ((3.0, 0.8, 0.9), True, "NaN"),
])
def test_predict_command_refuses_cm_spacing_and_nan_voxels_writing_nothing(tmp_path, results, capsys, spacing,
                                                                          nan_slab, needle):
    images = tmp_path / "images"
    write_case(images, "a", geometry=Geometry(spacing, (0.0, 0.0, 0.0), FLIPPED))
    if nan_slab:
        path = images / "a_0000.nii.gz"
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
        array = sitk.GetArrayFromImage(image)
        array[0] = np.nan
        nan_image = sitk.GetImageFromArray(array)
        nan_image.CopyInformation(image)
        sitk.WriteImage(nan_image, str(path))
    code = run_cli(main, ["-i", str(images), "-o", str(tmp_path / "out"), "-d", "1", "-t", "scratch",
                          "--results", str(results), "--quiet"])
    message = capsys.readouterr().err.strip()
    assert code != 0 and needle in message and "a_0000.nii.gz" in message and "\n" not in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
