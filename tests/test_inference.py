"""Inference: sliding window, export to the input grid, fold ensembling, input discovery (the predict command: ``test_predict_command.py``)."""

import os

import numpy as np
import pytest
import torch

from covtransfer.cli.predict import main
from covtransfer.data.image_io import Geometry, write_image
from covtransfer.errors import CovtransferError
from covtransfer.inference.export import probabilities_to_original, segmentation_to_original
from covtransfer.inference.inputs import check_cases, discover_cases
from covtransfer.inference.model_loading import checkpoint_paths, load_model
from covtransfer.inference.predictor import ensemble_logits, predict_logits, predict_preprocessed
from covtransfer.inference.sliding_window import gaussian_importance, predict_sliding_window, window_starts
from covtransfer.network.build import build_network
from covtransfer.preprocessing.preprocessor import CasePreprocessor
from tiny_models import Threshold, body_image, make_plans, save_checkpoint, write_case


# --------------------------------------------------------------------------------------- sliding window


def test_window_starts_cover_the_volume_with_bounded_gaps():
    starts = window_starts(100, 40, 0.5)
    assert starts[0] == 0 and starts[-1] == 60
    assert len(starts) == 4 and max(np.diff(starts)) <= 20
    assert window_starts(30, 40, 0.5) == [0] and window_starts(40, 40, 0.5) == [0]
    assert window_starts(41, 40, 1.0) == [0, 1]


def test_gaussian_peak_one_at_voxel_half_the_patch_sigma_one_eighth_and_positive():
    weight = gaussian_importance((8, 16, 32))
    assert weight.shape == (8, 16, 32) and float(weight.max()) == 1.0 and float(weight[4, 8, 16]) == 1.0
    assert float(weight.min()) > 0
    line = weight[4, 8].double()  # x axis through the peak; sigma = 32 / 8 = 4 voxels, peak at voxel 16
    assert float(line[19]) == pytest.approx(np.exp(-0.5 * 3 ** 2 / 16), rel=1e-6)
    assert float(line[13]) == pytest.approx(float(line[19]), rel=1e-6)  # symmetric about voxel 16, not 15.5
    assert float(line[0]) == pytest.approx(np.exp(-0.5 * 16 ** 2 / 16), rel=1e-5)
    odd = gaussian_importance((5, 5, 5))
    assert torch.equal(odd, odd.flip(0).flip(1).flip(2))  # odd sizes: the middle voxel


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
    logits = predict_preprocessed(network, data, {"plans": plans.to_dict(), "configuration_name": "3d_fullres",
                                                  "mirror_axes": [0]}, task="b", device="cpu")
    assert logits.shape == (3, 9, 20, 18)
    expected = predict_logits(network, data, (8, 16, 16), 3, "b", mirror_axes=(0,))
    assert torch.allclose(logits, expected, atol=1e-5)
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
    logits = torch.stack([torch.zeros_like(torch.from_numpy(data[0])), 20 * torch.from_numpy(data[0])])
    seg = segmentation_to_original(logits, properties, plans, "3d_fullres")
    assert seg.dtype == np.uint8 and seg.shape == image.shape
    assert np.array_equal(seg, (image > 0).astype(np.uint8))
    full = probabilities_to_original(logits, properties, plans, "3d_fullres")
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
    seg = segmentation_to_original(torch.stack([torch.zeros_like(logits), logits]), properties, plans, "3d_fullres")
    truth = image > 0
    dice = 2 * (seg.astype(bool) & truth).sum() / (seg.astype(bool).sum() + truth.sum())
    assert seg.shape == image.shape and dice > 0.95
    assert not seg[image == 0].any()


@pytest.mark.parametrize("target, orders", [((1.0, 1.0, 1.0), (1, 1, 1)), ((4.0, 1.0, 1.0), (0, 1, 1)),
                                             ((1.0, 4.0, 1.0), (1, 0, 1)), ((1.0, 1.0, 4.0), (1, 1, 0))])
def test_export_resampling_equals_scipy_zoom_with_the_separate_z_rule(target, orders):
    from scipy import ndimage
    logits = 4 * torch.rand(2, 5, 12, 10, generator=torch.Generator().manual_seed(0))
    out_shape = [9, 17, 7]
    properties = {"shape_after_resampling": [5, 12, 10], "shape_after_cropping": out_shape,
                  "shape_before_cropping": out_shape, "bbox": [[0, s] for s in out_shape], "target_spacing": target,
                  "original_spacing": [0.6, 0.7, 0.8], "case_id": "c"}
    got = probabilities_to_original(logits, properties, make_plans(), "3d_fullres").numpy()
    resampled = []
    for k in range(2):
        expected = logits[k].double().numpy()
        for axis, order in enumerate(orders):  # separable: one axis at a time, in any order
            zoom = [1.0, 1.0, 1.0]
            zoom[axis] = out_shape[axis] / expected.shape[axis]
            expected = ndimage.zoom(expected, zoom, order=order, mode="nearest", grid_mode=True)
        resampled.append(expected)
    softmax = np.exp(resampled) / np.exp(resampled).sum(0)  # the logits are resampled first, then the softmax
    assert np.abs(got - softmax).max() < 1e-5


def test_export_resamples_logits_then_takes_the_argmax_as_nnunet_does():
    """Two preprocessed voxels with lesion-minus-background logits 6 and −2, upsampled 2 → 8 linearly: output voxel i
    samples position (i + 0.5) / 4 − 0.5, so the logit difference is 6, 6, 5, 3, 1, −1, −2, −2 (lesion in the first
    five). Resampling the probabilities instead (0.9975 and 0.1192) would give 0.45 at the fifth, background."""
    logits = torch.tensor([[0.0, 0.0], [6.0, -2.0]]).reshape(2, 1, 1, 2)
    properties = {"shape_after_resampling": [1, 1, 2], "shape_after_cropping": [1, 1, 8],
                  "shape_before_cropping": [1, 1, 8], "bbox": [[0, 1], [0, 1], [0, 8]],
                  "target_spacing": [1.0, 1.0, 2.0], "original_spacing": [1.0, 1.0, 0.5], "case_id": "c"}
    seg = segmentation_to_original(logits, properties, make_plans(), "3d_fullres")
    assert seg.reshape(-1).tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    lesion = probabilities_to_original(logits, properties, make_plans(), "3d_fullres")[1].reshape(-1)
    expected = torch.sigmoid(torch.tensor([6.0, 6.0, 5.0, 3.0, 1.0, -1.0, -2.0, -2.0]))
    assert torch.allclose(lesion, expected, atol=1e-6)


# ---------------------------------------------------------------------------------------- input discovery


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


def test_fold_ensemble_logits_are_the_mean_of_the_folds(tmp_path):
    plans = make_plans()
    models = [load_model(save_checkpoint(tmp_path / f"fold_{k}", plans, seed=k)) for k in range(2)]
    data = np.random.default_rng(1).normal(size=(1, 10, 20, 20)).astype(np.float32)
    single = [ensemble_logits([m], data, torch.device("cpu")) for m in models]
    assert not torch.allclose(single[0], single[1], atol=1e-3)
    both = ensemble_logits(models, data, torch.device("cpu"))
    assert torch.allclose(both, (single[0] + single[1]) / 2, atol=1e-6)


def test_models_with_different_plans_are_not_ensembled(tmp_path):
    a = save_checkpoint(tmp_path / "fold_0", make_plans())
    b = save_checkpoint(tmp_path / "fold_1", make_plans(spacing=(3.0, 1.0, 1.0)))
    write_case(tmp_path / "images", "a")
    with pytest.raises(CovtransferError, match="fold_1/checkpoint_final.pt: its plans or classes differ"):
        main(["-i", str(tmp_path / "images"), "-o", str(tmp_path / "out"), "-m", str(a), str(b), "--quiet"])
