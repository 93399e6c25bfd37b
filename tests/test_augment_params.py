"""Sample-then-apply augmentation: chosen parameters give hand-computed results, recorded parameters replay a batch,
and the split draws exactly what the transforms drew before it (fingerprints recorded with the code at fed23da; the
image values re-recorded at 7b01331, where low-resolution simulation moved to the block centre)."""

import json
from pathlib import Path

import pytest
import torch

from covtransfer.training.augment.base import Draws
from covtransfer.training.augment.brightness import MultiplicativeBrightness
from covtransfer.training.augment.contrast import Contrast
from covtransfer.training.augment.gamma import Gamma
from covtransfer.training.augment.mirror import Mirror
from covtransfer.training.augment.noise import GaussianNoise, NoiseParams
from covtransfer.training.augment.pipeline import build_training_pipeline
from covtransfer.training.augment.spatial import SpatialParams, SpatialTransform

FINGERPRINTS = Path(__file__).parent / "data" / "augment_fingerprints.json"


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def ramp(values):
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, 1, -1)


def test_mirror_applies_recorded_flips():
    seg = torch.arange(2 * 2 * 3 * 4).reshape(2, 1, 2, 3, 4)
    images = seg.float()
    flips = torch.tensor([[False, True, False], [True, False, True]])
    out_images, out_seg = Mirror().apply(images, seg, flips)
    assert torch.equal(out_seg[0], seg[0].flip(2)) and torch.equal(out_seg[1], seg[1].flip(1, 3))
    assert torch.equal(out_images, out_seg.float())


def test_brightness_applies_recorded_factors_to_chosen_samples_only():
    images = torch.ones(2, 2, 1, 1, 3)
    params = Draws(torch.tensor([True, False]), torch.tensor([[2.0, 0.5], [3.0, 3.0]], dtype=torch.float64))
    out, _ = MultiplicativeBrightness().apply(images, torch.zeros(1), params)
    assert out[0, 0].unique().tolist() == [2.0] and out[0, 1].unique().tolist() == [0.5]
    assert torch.equal(out[1], images[1])


def test_contrast_applies_recorded_factor_and_clips_to_old_range():
    params = Draws(torch.tensor([True]), torch.tensor([[2.0]], dtype=torch.float64))
    out, _ = Contrast().apply(ramp([0, 1, 2, 3]), torch.zeros(1), params)
    # mean 1.5: (x - 1.5) * 2 + 1.5 = -1.5, 0.5, 2.5, 4.5, clipped to [0, 3]
    assert out.flatten().tolist() == [0.0, 0.5, 2.5, 3.0]


def test_gamma_applies_recorded_exponent():
    params = Draws(torch.tensor([True]), torch.tensor([[2.0]], dtype=torch.float64))
    out, _ = Gamma(retain_stats=False).apply(ramp([0, 1, 2, 4]), torch.zeros(1), params)
    # rescaled to 0, 1/4, 1/2, 1; squared; scaled back by 4
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 0.25, 1.0, 4.0]), atol=1e-5)
    inverted, _ = Gamma(retain_stats=False, invert=True).apply(ramp([0, 1, 2, 4]), torch.zeros(1), params)
    # negated -4..0 rescaled to 1, 3/4, 1/2, 0 (reversed), squared, scaled back and negated
    assert torch.allclose(inverted.flatten(), torch.tensor([0.0, 1.75, 3.0, 4.0]), atol=1e-5)


def test_noise_field_depends_only_on_recorded_seed_and_level():
    images = torch.zeros(2, 1, 4, 5, 6)
    params = NoiseParams(torch.tensor([True, False]), torch.tensor([0.5, 0.5], dtype=torch.float64), seed=11)
    first, _ = GaussianNoise().apply(images, torch.zeros(1), params)
    again, _ = GaussianNoise().apply(images, torch.zeros(1), params)
    expected = torch.randn((1, 1, 4, 5, 6), generator=generator(11)) * 0.5
    assert torch.equal(first, again) and torch.allclose(first[:1], expected) and not first[1].any()


def test_spatial_zoom_one_angle_zero_reproduces_the_crop():
    images = torch.randn(1, 1, 10, 11, 12, generator=generator())
    seg = (images > 0).long()
    params = SpatialParams(torch.tensor([True]), torch.zeros(1, 3, dtype=torch.float64), torch.tensor([False]),
                           torch.ones(1, dtype=torch.float64))
    out_images, out_seg = SpatialTransform((6, 7, 8)).apply(images, seg, params)
    assert torch.allclose(out_images, images[..., 2:8, 2:9, 2:10], atol=1e-5)
    assert torch.equal(out_seg, seg[..., 2:8, 2:9, 2:10])


def test_recorded_pipeline_parameters_replay_the_batch():
    pipeline = build_training_pipeline((8, 12, 14))
    images = torch.randn((3, 2) + pipeline.initial_patch_size, generator=generator(1))
    seg = torch.randint(-1, 3, (3, 1) + pipeline.initial_patch_size, generator=generator(2))
    for seed in range(4):
        params = pipeline.sample(3, 2, generator(seed))
        replayed = pipeline.apply(images, seg, params)
        called = pipeline(images, seg, generator(seed))
        assert torch.equal(replayed[0], called[0]) and torch.equal(replayed[1], called[1])
        assert len(params) == len(pipeline.transforms)
    with pytest.raises(ValueError):
        pipeline.apply(images, seg, params[:-1])


def fingerprint(images, seg):
    weights = (torch.arange(images.numel(), dtype=torch.float64) % 7 - 3).reshape(images.shape)
    seg_weights = (torch.arange(seg.numel(), dtype=torch.float64) % 5 - 2).reshape(seg.shape)
    flat = images.double()
    return [float(flat.sum()), float((flat * flat).sum()), float((flat * weights).sum()), float(seg.double().sum()),
            float((seg.double() * seg_weights).sum())]


@pytest.mark.parametrize("name,patch,forced", [("3d_forced", (8, 12, 14), True), ("3d_default", (8, 12, 14), False),
                                               ("2d_forced", (4, 16, 18), True)])
def test_batches_equal_those_drawn_before_the_split(name, patch, forced):
    recorded = json.loads(FINGERPRINTS.read_text())
    pipeline = build_training_pipeline(patch)
    if forced:
        for transform in pipeline.transforms:
            for attribute in ("p", "p_rotation", "p_scale"):
                if hasattr(transform, attribute):
                    setattr(transform, attribute, 1.0)
    images = torch.randn((3, 2) + pipeline.initial_patch_size, generator=generator(1))
    seg = torch.randint(-1, 3, (3, 1) + pipeline.initial_patch_size, generator=generator(2))
    for seed in range(6):
        got = fingerprint(*pipeline(images, seg, generator(seed)))
        assert got == pytest.approx(recorded[f"{name}/{seed}"], rel=1e-9, abs=1e-6)
