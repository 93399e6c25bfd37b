"""Batched augmentation: alignment of image and label, ranges of each transform, shapes, determinism, DS targets."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from covtransfer.training.augment.base import Draws
from covtransfer.training.augment.blur import GaussianBlur
from covtransfer.training.augment.brightness import MultiplicativeBrightness
from covtransfer.training.augment.contrast import Contrast
from covtransfer.training.augment.deep_supervision import deep_supervision_scales, downsample_seg_for_ds
from covtransfer.training.augment.gamma import Gamma
from covtransfer.training.augment.lowres import SimulateLowResolution
from covtransfer.training.augment.mirror import Mirror
from covtransfer.training.augment.noise import GaussianNoise
from covtransfer.training.augment.pipeline import build_training_pipeline, build_validation_pipeline
from covtransfer.training.augment.remove_label import RemoveLabel
from covtransfer.training.augment.sampling import balanced_factor
from covtransfer.training.augment.spatial import (SpatialTransform, affine_grid, initial_patch_size, is_dummy_2d,
                                                 resample_labels)


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def blobs(shape=(24, 36, 40), batch=2, seed=0):
    """(B, 1, ...) binary label of a few balls, as long."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    seg = np.zeros((batch, 1) + shape, dtype=np.int64)
    for b in range(batch):
        for _ in range(4):
            centre = rng.uniform([4, 6, 6], np.array(shape) - [4, 6, 6])
            radius = rng.uniform(3, 6)
            seg[b, 0][np.linalg.norm(grid - centre, axis=-1) < radius] = 1
    return torch.from_numpy(seg)


def random_images(batch=2, channels=2, shape=(12, 16, 18), seed=0):
    return torch.randn((batch, channels) + shape, generator=generator(seed)) * 2 + 1


# ---- spatial ------------------------------------------------------------------------------------------------------

def test_initial_patch_size_geometry():
    assert initial_patch_size((20, 30, 40), 0, (1.0, 1.0)) == (20, 30, 40)
    assert initial_patch_size((20, 30, 40), 0, (0.5, 2.0)) == (40, 60, 80)
    # nnU-Net's rule rotates the diagonal vector (10, 10) by -45 degrees in-plane: (10 sqrt 2, 0), so only y grows;
    # z is untouched in dummy 2D, and 180 degrees is capped at 90, which swaps y and x
    assert initial_patch_size((4, 10, 10), 45, (1.0, 1.0), dummy_2d=True) == (4, 14, 10)
    assert initial_patch_size((4, 10, 20), 180, (0.5, 1.0), dummy_2d=True) == (4, 40, 40)
    # the demo's cpu-preset patch, by hand: about z (24, 56cos30+56sin30, -56sin30+56cos30) = (24, 76.5, 20.5);
    # about y (24cos30-56sin30, 56, 24sin30+56cos30) = (-7.2, 56, 60.5); about x (24cos30+56sin30, ...) = (48.8,
    # 36.5, 56); per-axis maxima (48.8, 76.5, 60.5) / 0.85, floored. nnU-Net 2.8.1 prints the same.
    assert initial_patch_size((24, 56, 56), 30, (0.85, 1.25)) == (57, 89, 71)
    assert is_dummy_2d((56, 160, 192)) and not is_dummy_2d((64, 128, 128))


def test_spatial_without_rotation_or_zoom_is_centre_crop():
    images = random_images(shape=(21, 24, 29))
    seg = torch.randint(-1, 3, (2, 1, 21, 24, 29))
    crop = (Ellipsis, slice(2, 18), slice(2, 22), slice(3, 25))
    skip = SpatialTransform((16, 20, 22), p_rotation=0, p_scale=0)
    out_images, out_seg = skip(images, seg, generator())
    assert torch.equal(out_images, images[crop]) and torch.equal(out_seg, seg[crop])
    # forced resampling at zoom 1 and angle 0 must land on the same voxels as the crop
    resample = SpatialTransform((16, 20, 22), rotation_degrees=0, p_rotation=0, scale_range=(1, 1), p_scale=1)
    out_images, out_seg = resample(images, seg, generator())
    assert torch.allclose(out_images, images[crop], atol=1e-4)
    assert torch.equal(out_seg, seg[crop])


@pytest.mark.parametrize("dummy_2d", [False, True])
def test_spatial_keeps_image_and_label_aligned(dummy_2d):
    seg = blobs()
    images = seg.float()
    transform = SpatialTransform((16, 28, 30), rotation_degrees=30, p_rotation=1, p_scale=1, dummy_2d=dummy_2d)
    out_images, out_seg = transform(images, seg, generator(3))
    assert out_images.shape == (2, 1, 16, 28, 30) and out_seg.shape == out_images.shape
    assert out_seg.dtype == seg.dtype
    assert not torch.equal(out_seg, seg[:, :, 4:20, 4:32, 5:35])
    interior = out_seg >= 0
    agreement = ((out_images > 0.5).long() == out_seg)[interior].float().mean()
    assert agreement >= 0.98
    assert out_seg.max() == 1


def test_spatial_scale_factor_scales_the_sampling_grid_as_in_nnunet():
    seg = torch.zeros(1, 1, 20, 20, 20, dtype=torch.long)
    seg[..., 6:14, 6:14, 6:14] = 1
    shrink = SpatialTransform((20, 20, 20), rotation_degrees=0, p_rotation=0, scale_range=(2.0, 2.0), p_scale=1)
    _, out_seg = shrink(seg.float(), seg, generator())
    assert 3 ** 3 <= int(out_seg.sum()) <= 5 ** 3  # factor 2 zooms out: the 8-voxel cube becomes about 4 wide
    magnify = SpatialTransform((20, 20, 20), rotation_degrees=0, p_rotation=0, scale_range=(0.5, 0.5), p_scale=1)
    _, out_seg = magnify(seg.float(), seg, generator())
    assert 15 ** 3 <= int(out_seg.sum()) <= 17 ** 3  # factor 0.5 magnifies it to about 16 wide


def test_spatial_labels_are_interpolated_on_their_one_hot_encoding():
    seg = torch.zeros(1, 1, 12, 12, 12, dtype=torch.long)
    seg[..., 4:8, 4:8, 4:8] = 2
    seg[..., 0, :, :] = -1  # padding
    half_voxel = SpatialTransform((12, 12, 12), rotation_degrees=0, p_rotation=0, scale_range=(1.0, 1.0), p_scale=1)
    theta = torch.zeros(1, 3, 4)
    theta[0, 0, 0] = theta[0, 1, 1] = theta[0, 2, 2] = 1.0
    theta[0, 0, 3] = 0.6 * 2 / 11  # shift x by 0.6 voxel: nearest would move the cube a whole voxel, so does this
    out = resample_labels(seg, affine_grid(theta, (12, 12, 12)))
    assert torch.equal(out[..., 4:8, 4:8, 3:7], torch.full((1, 1, 4, 4, 4), 2))
    assert set(out.unique().tolist()) == {-1, 0, 2} and (out[..., 0, :, :] == -1).all()
    assert half_voxel(seg.float(), seg, generator())[1].equal(seg)


def test_spatial_dummy_2d_rotates_in_plane_only():
    seg = torch.zeros(1, 1, 8, 30, 30, dtype=torch.long)
    seg[:, :, 4:, 10:20, 10:20] = 1  # label depends on z
    transform = SpatialTransform((8, 20, 20), rotation_degrees=90, p_rotation=1, p_scale=1, dummy_2d=True)
    _, out_seg = transform(seg.float(), seg, generator(1))
    assert out_seg[:, :, :4].max() == 0 and out_seg[:, :, 4:].sum() > 0


def test_spatial_rejects_small_input():
    with pytest.raises(ValueError):
        SpatialTransform((10, 10, 10))(torch.zeros(1, 1, 9, 10, 10), torch.zeros(1, 1, 9, 10, 10), generator())


# ---- intensity ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("transform", [
    GaussianNoise(p=0), GaussianBlur(p=0), MultiplicativeBrightness(p=0), Contrast(p=0), SimulateLowResolution(p=0),
    Gamma(p=0), Gamma(p=0, invert=True), Mirror(p=0)])
def test_zero_probability_is_identity(transform):
    images, seg = random_images(), torch.randint(0, 3, (2, 1, 12, 16, 18))
    out_images, out_seg = transform(images, seg, generator())
    assert torch.equal(out_images, images) and torch.equal(out_seg, seg)


def test_balanced_factor_range_and_sides():
    draws = balanced_factor(generator(), (4000,), 0.7, 1.5)
    assert draws.min() >= 0.7 and draws.max() < 1.5
    assert abs(float((draws < 1).double().mean()) - 0.5) < 0.05


def test_brightness_multiplies_each_channel_by_factor_in_range():
    images = random_images().abs() + 0.5
    out, _ = MultiplicativeBrightness(p=1)(images, torch.zeros(1), generator())
    ratio = (out / images).flatten(2)
    assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio), atol=1e-5)
    assert ratio.min() >= 0.75 and ratio.max() <= 1.25
    assert not torch.allclose(ratio[0, 0, 0], ratio[0, 1, 0])  # channels draw their own factor


def test_contrast_preserves_range_and_stretches_about_mean():
    images = random_images()
    for seed in range(5):
        out, _ = Contrast(p=1)(images, torch.zeros(1), generator(seed))
        flat_in, flat_out = images.flatten(2), out.flatten(2)
        assert torch.all(flat_out.amin(2) >= flat_in.amin(2) - 1e-5)
        assert torch.all(flat_out.amax(2) <= flat_in.amax(2) + 1e-5)
        mean = flat_in.mean(2, keepdim=True)
        inside = (flat_out > flat_in.amin(2, keepdim=True) + 1e-4) & (flat_out < flat_in.amax(2, keepdim=True) - 1e-4)
        inside &= (flat_in - mean).abs() > 0.5
        factor = ((flat_out - mean) / (flat_in - mean))
        for b in range(2):
            for c in range(2):
                f = factor[b, c][inside[b, c]]
                assert torch.allclose(f, f[:1].expand_as(f), atol=1e-4)
                assert 0.75 <= float(f[0]) <= 1.25


def test_noise_level_within_bound_and_varies():
    images = torch.zeros(2, 1, 20, 30, 30)
    stds = []
    for seed in range(6):
        out, _ = GaussianNoise(p=1)(images, torch.zeros(1), generator(seed))
        stds += [float(out[b].std()) for b in range(2)]
    assert max(stds) <= 0.1 * 1.05 and min(stds) >= 0
    assert len({round(s, 4) for s in stds}) == len(stds)


@pytest.mark.parametrize("invert", [False, True])
def test_gamma_keeps_min_max_without_stats_and_mean_std_with(invert):
    images = (random_images() * 0.5).exp()  # skewed so the curve changes the shape
    out, _ = Gamma(p=1, retain_stats=False, invert=invert)(images, torch.zeros(1), generator(2))
    flat_in, flat_out = images.flatten(2), out.flatten(2)
    assert torch.allclose(flat_out.amin(2), flat_in.amin(2), atol=1e-4)
    assert torch.allclose(flat_out.amax(2), flat_in.amax(2), atol=1e-3)
    assert not torch.allclose(out, images, atol=1e-3)
    out, _ = Gamma(p=1, retain_stats=True, invert=invert)(images, torch.zeros(1), generator(2))
    flat_out = out.flatten(2)
    assert torch.allclose(flat_out.mean(2), flat_in.mean(2), atol=1e-3)
    assert torch.allclose(flat_out.std(2), flat_in.std(2), atol=1e-3)


def test_gamma_applies_exponent_from_range_on_unit_scale():
    ramp = torch.linspace(0, 1, 11).reshape(1, 1, 1, 1, 11)
    out, _ = Gamma(p=1, retain_stats=False)(ramp, torch.zeros(1), generator(5))
    gamma = math.log(float(out[..., 5])) / math.log(0.5)
    assert 0.7 <= gamma <= 1.5
    assert torch.allclose(out, ramp.pow(gamma), atol=1e-4)


def test_blur_matches_scipy_gaussian_filter():
    images = random_images(batch=1, channels=1, shape=(10, 14, 16))
    out, _ = GaussianBlur(p=1, sigma_range=(0.8, 0.8), p_per_channel=1)(images, torch.zeros(1), generator())
    expected = ndimage.gaussian_filter(images[0, 0].double().numpy(), 0.8, mode="nearest", truncate=3.75)
    assert np.allclose(out[0, 0].numpy(), expected, atol=1e-4)


def test_blur_preserves_constants_and_selects_channels():
    images = torch.full((2, 3, 8, 9, 10), 4.0)
    out, _ = GaussianBlur(p=1, p_per_channel=1)(images, torch.zeros(1), generator())
    assert torch.allclose(out, images)
    noisy = random_images(channels=3)
    out, _ = GaussianBlur(p=1, p_per_channel=0.5)(noisy, torch.zeros(1), generator(1))
    changed = (out != noisy).flatten(2).any(2)
    assert changed.any() and not changed.all()
    assert torch.all(out.flatten(2).std(2)[changed] < noisy.flatten(2).std(2)[changed] * 0.8)


def test_lowres_matches_nearest_exact_down_linear_up():
    images = random_images(batch=2, channels=2, shape=(12, 15, 17)).double()
    out, _ = SimulateLowResolution(p=1, p_per_channel=1)(images, torch.zeros(1), generator(4))
    for b in range(2):
        for c in range(2):
            volume = images[b, c][None, None]
            matches = []
            for zoom in np.linspace(0.5, 1.0, 200):
                size = [max(1, round(s * zoom)) for s in volume.shape[2:]]
                down = F.interpolate(volume, size=size, mode="nearest-exact")
                up = F.interpolate(down, size=volume.shape[2:], mode="trilinear", align_corners=False)[0, 0]
                matches.append(torch.allclose(up, out[b, c], atol=1e-9))
            assert any(matches)


def test_lowres_keeps_a_blob_on_its_label():
    """Over zooms in [0.5, 1) the centre of mass of a smooth blob moves by a quarter voxel or less on average, and
    never by more than half a voxel (a block of even length has no centre voxel); block-start sampling (``nearest``)
    moved it by about 1.1 voxels, away from the label, which the transform leaves alone."""
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in (40, 44, 48)], indexing="ij")
    blob = torch.exp(-sum((g - c) ** 2 for g, c in zip(grids, (19.3, 22.0, 23.6))) / (2 * 4.0 ** 2))[None, None]
    shifts = []
    for zoom in np.arange(0.5, 1.0, 0.02):
        params = Draws(torch.tensor([[True]]), torch.tensor([[zoom]], dtype=torch.float64))
        out, _ = SimulateLowResolution().apply(blob, torch.zeros(1), params)
        shifts.append([float((out[0, 0] * g).sum() / out.sum() - (blob[0, 0] * g).sum() / blob.sum()) for g in grids])
    shifts = np.abs(shifts)
    assert shifts.mean(axis=0).max() <= 0.25
    assert shifts.max() <= 0.5 + 1e-3


def test_lowres_ignores_axes():
    images = torch.arange(12.0).reshape(1, 1, 12, 1, 1).expand(2, 1, 12, 10, 10).contiguous()
    out, _ = SimulateLowResolution(p=1, p_per_channel=1, ignore_axes=(0,))(images, torch.zeros(1), generator())
    assert torch.allclose(out, images)  # varies only along the ignored z axis


# ---- mirror, remove label, pipeline ----------------------------------------------------------------------------

def test_mirror_flips_image_and_label_together():
    seg = torch.randint(0, 4, (2, 1, 5, 6, 7))
    images = seg.float() * 10
    out_images, out_seg = Mirror(axes=(0, 1, 2), p=1)(images, seg, generator())
    assert torch.equal(out_seg, seg.flip(2, 3, 4)) and torch.equal(out_images, images.flip(2, 3, 4))
    out_images, out_seg = Mirror(axes=(2,), p=1)(images, seg, generator())
    assert torch.equal(out_seg, seg.flip(4))
    flipped = [not torch.equal(Mirror(axes=(1,))(images, seg, generator(s))[1], seg) for s in range(40)]
    assert 5 < sum(flipped) < 35
    for s in range(5):
        out_images, out_seg = Mirror()(images, seg, generator(s))
        assert torch.equal(out_images, out_seg.float() * 10)


def test_remove_label_sets_minus_one_to_zero():
    seg = torch.tensor([-1, 0, 1, 2, -1], dtype=torch.int8).reshape(1, 1, 1, 1, 5)
    _, out = RemoveLabel()(torch.zeros(1, 1, 1, 1, 5), seg, generator())
    assert out.tolist() == [[[[[0, 0, 1, 2, 0]]]]] and out.dtype == torch.int8
    assert seg.min() == -1  # input untouched


def test_spatial_then_mirror_keeps_alignment():
    seg = blobs(seed=5)
    images = seg.float()
    spatial, mirror = SpatialTransform((16, 28, 30), p_rotation=1, p_scale=1), Mirror()
    for seed in range(3):
        rng = generator(seed)
        out_images, out_seg = mirror(*spatial(images, seg, rng), rng)
        interior = out_seg >= 0
        assert ((out_images > 0.5).long() == out_seg)[interior].float().mean() >= 0.98


def test_pipeline_shapes_and_labels():
    patch = (16, 28, 30)
    pipeline = build_training_pipeline(patch)
    assert pipeline.initial_patch_size == initial_patch_size(patch, 30, (0.85, 1.25))
    seg = torch.nn.functional.pad(blobs(), (20, 20, 20, 20, 20, 20), value=0)
    starts = [(s - i) // 2 for s, i in zip(seg.shape[2:], pipeline.initial_patch_size)]
    seg = seg[(Ellipsis,) + tuple(slice(s, s + i) for s, i in zip(starts, pipeline.initial_patch_size))].contiguous()
    seg[:, :, :2] = -1
    images = seg.float().clamp(min=0)
    for seed in range(4):
        out_images, out_seg = pipeline(images, seg, generator(seed))
        assert out_images.shape == (2, 1) + patch and out_seg.shape == (2, 1) + patch
        assert out_seg.min() >= 0 and out_seg.dtype == seg.dtype and out_images.dtype == torch.float32


def test_pipeline_dummy_2d_and_mirror_options():
    pipeline = build_training_pipeline((8, 40, 40), mirror_axes=None)
    assert pipeline.initial_patch_size[0] == 8 and pipeline.initial_patch_size[1] > 40
    assert not any(isinstance(t, Mirror) for t in pipeline.transforms)
    lowres = next(t for t in pipeline.transforms if isinstance(t, SimulateLowResolution))
    assert lowres.ignore_axes == (0,)
    validation = build_validation_pipeline((8, 40, 40))
    seg = torch.full((1, 1, 8, 40, 40), -1)
    images = torch.randn(1, 1, 8, 40, 40)
    out_images, out_seg = validation(images, seg, generator())
    assert torch.equal(out_images, images) and out_seg.max() == 0


def test_pipeline_is_deterministic_per_seed():
    patch = (8, 12, 14)
    pipeline = build_training_pipeline(patch)
    for transform in pipeline.transforms:  # force every random branch so the comparison covers them all
        for name in ("p", "p_rotation", "p_scale"):
            if hasattr(transform, name):
                setattr(transform, name, 1.0)
    images = random_images(channels=2, shape=pipeline.initial_patch_size, seed=1)
    seg = torch.randint(0, 3, (2, 1) + pipeline.initial_patch_size, generator=generator(2))
    first = pipeline(images, seg, generator(7))
    second = pipeline(images, seg, generator(7))
    other = pipeline(images, seg, generator(8))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.allclose(first[0], other[0])


# ---- deep supervision -------------------------------------------------------------------------------------------

def test_deep_supervision_scales_and_targets():
    scales = deep_supervision_scales([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]])
    assert scales == [(1.0, 1.0, 1.0), (1.0, 0.5, 0.5), (0.5, 0.25, 0.25)]
    seg = torch.randint(-1, 3, (2, 1, 8, 16, 16), dtype=torch.int8)
    targets = downsample_seg_for_ds(seg, scales)
    assert [tuple(t.shape) for t in targets] == [(2, 1, 8, 16, 16), (2, 1, 8, 8, 8), (2, 1, 4, 4, 4)]
    assert targets[0] is seg and all(t.dtype == torch.int8 for t in targets)
    # nearest-exact, as nnU-Net: output j takes input floor((j + 0.5) / scale), the odd voxels at scale 1/2
    assert torch.equal(targets[1], seg[:, :, :, 1::2, 1::2]) and torch.equal(targets[2], seg[:, :, 1::2, 2::4, 2::4])
    assert [tuple(t.shape) for t in downsample_seg_for_ds(seg, [1, 0.5])] == [(2, 1, 8, 16, 16), (2, 1, 4, 8, 8)]


@pytest.mark.gpu
def test_pipeline_runs_on_cuda_like_on_cpu():
    patch = (16, 28, 30)
    spatial = SpatialTransform(patch, p_rotation=1, p_scale=1)
    seg = blobs()
    images = seg.float()
    cpu = spatial(images, seg, generator(3))
    gpu = spatial(images.cuda(), seg.cuda(), generator(3))
    assert gpu[0].is_cuda and torch.allclose(gpu[0].cpu(), cpu[0], atol=1e-3)
    assert (gpu[1].cpu() == cpu[1]).float().mean() > 0.999
    pipeline = build_training_pipeline(patch)
    padded = torch.zeros((2, 1) + pipeline.initial_patch_size, device="cuda")
    out_images, out_seg = pipeline(padded, padded.long(), generator(0))
    assert out_images.is_cuda and out_images.shape == (2, 1) + patch and out_seg.shape == (2, 1) + patch
