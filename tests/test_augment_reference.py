"""Our batched transforms against batchgeneratorsv2, the augmentation library nnU-Net 2.8 trains with.

On fixed parameters each transform must give what the batchgeneratorsv2 transform it imitates gives (to float
rounding, or to interpolation error where the two interpolate differently), and the parameters it draws must follow
the distributions nnU-Net configures (``nnUNetTrainer.get_training_transforms``). batchgeneratorsv2 rather than the
older batchgenerators is the reference because it is what nnU-Net 2.8 runs; batchgenerators 0.25 implements
low-resolution simulation and spatial resampling differently (scipy/skimage orders) from what nnU-Net does today.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from covtransfer.training.augment.base import Draws
from covtransfer.training.augment.blur import GaussianBlur
from covtransfer.training.augment.brightness import MultiplicativeBrightness
from covtransfer.training.augment.contrast import Contrast
from covtransfer.training.augment.gamma import Gamma
from covtransfer.training.augment.lowres import SimulateLowResolution
from covtransfer.training.augment.mirror import Mirror
from covtransfer.training.augment.noise import GaussianNoise, NoiseParams
from covtransfer.training.augment.pipeline import build_training_pipeline
from covtransfer.training.augment.spatial import SpatialParams, SpatialTransform

bg = pytest.importorskip("batchgeneratorsv2")
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform  # noqa: E402
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform  # noqa: E402
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform  # noqa: E402
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform  # noqa: E402
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform  # noqa: E402
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform  # noqa: E402
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform  # noqa: E402
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform as BgSpatialTransform  # noqa: E402

SHAPE = (10, 12, 14)


def smooth_volume(channels=1, seed=0):
    """(1, C, Z, Y, X) float32: a skewed smooth field plus mild noise, so every transform changes it visibly."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, s) for s in SHAPE], indexing="ij"))
    volumes = [np.exp(np.sin(3 * grid[0] + c) + grid[1] * grid[2] * 2) + 0.05 * rng.standard_normal(SHAPE)
               for c in range(channels)]
    return torch.from_numpy(np.stack(volumes)[None].astype(np.float32))


def one(values, dtype=torch.float64):
    """A single-sample, single-channel Draws with ``values``."""
    return Draws(torch.tensor([True]), torch.tensor([values], dtype=dtype))


def reference(transform, image, **params):
    """batchgeneratorsv2's deterministic half: ``_apply_to_image`` on a (C, Z, Y, X) copy."""
    return transform._apply_to_image(image[0].clone(), **params)[None]


# ---- fixed parameters ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [0.7, 1.4])
@pytest.mark.parametrize("invert", [False, True])
def test_gamma_matches_batchgeneratorsv2(gamma, invert):
    image = smooth_volume()
    ours, _ = Gamma(invert=invert, retain_stats=True).apply(image, torch.zeros(1), one([gamma]))
    theirs = reference(GammaTransform((0.7, 1.5), p_invert_image=1, synchronize_channels=False, p_per_channel=1,
                                      p_retain_stats=1), image, apply_to_channel=torch.tensor([0]),
                       retain_stats=torch.tensor([True]), invert_image=torch.tensor([invert]),
                       gamma=torch.tensor([gamma]))
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_brightness_matches_batchgeneratorsv2():
    image = smooth_volume(channels=2)
    params = Draws(torch.tensor([True]), torch.tensor([[0.8, 1.2]], dtype=torch.float64))
    ours, _ = MultiplicativeBrightness().apply(image, torch.zeros(1), params)
    theirs = reference(MultiplicativeBrightnessTransform(BGContrast((0.75, 1.25)), False), image,
                       apply_to_channel=torch.tensor([0, 1]), multipliers=torch.tensor([0.8, 1.2]))
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("factor", [0.75, 1.25])
def test_contrast_matches_batchgeneratorsv2(factor):
    image = smooth_volume()
    ours, _ = Contrast(preserve_range=True).apply(image, torch.zeros(1), one([factor]))
    theirs = reference(ContrastTransform(BGContrast((0.75, 1.25)), preserve_range=True, synchronize_channels=False),
                       image, apply_to_channel=torch.tensor([0]), multipliers=torch.tensor([factor]))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_noise_matches_batchgeneratorsv2_on_the_same_field():
    """Both draw the field from a standard normal on the CPU generator: seeded alike, the fields are the same."""
    image = smooth_volume()
    ours, _ = GaussianNoise().apply(image, torch.zeros(1), NoiseParams(torch.tensor([True]),
                                                                      torch.tensor([0.07], dtype=torch.float64), 5))
    torch.manual_seed(5)
    theirs = reference(GaussianNoiseTransform((0, 0.1), 1, synchronize_channels=True), image,
                       num_apply=1, apply_idx=torch.tensor([0]), sigmas=0.07)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_blur_matches_batchgeneratorsv2_inside_the_border():
    """Same separable Gaussian; the kernels are cut at 3 sigma (ours) and about 2.5 to 3.5 sigma (theirs), and the
    borders are padded by replication (ours) and reflection (theirs), so only voxels 3 from the border compare."""
    image = smooth_volume()
    sigmas = [0.9, 0.6, 1.0]
    params = Draws(torch.tensor([[True]]), torch.tensor([[sigmas]], dtype=torch.float64))
    ours, _ = GaussianBlur().apply(image, torch.zeros(1), params)
    theirs = reference(GaussianBlurTransform((0.5, 1.0), p_per_channel=1), image,
                       apply_to_channel=torch.tensor([True]), sigmas=[sigmas])
    inside = (Ellipsis, slice(3, -3), slice(3, -3), slice(3, -3))
    assert torch.allclose(ours[inside], theirs[inside], atol=2e-3 * float(image.abs().max()))
    assert not torch.allclose(ours, image, atol=1e-2)


@pytest.mark.parametrize("zoom", [0.5, 0.8])
def test_lowres_matches_batchgeneratorsv2(zoom):
    """Both keep the centre voxel of every coarse block (``nearest-exact``) and upsample trilinearly."""
    image = smooth_volume()
    params = Draws(torch.tensor([[True]]), torch.tensor([[zoom]], dtype=torch.float64))
    ours, _ = SimulateLowResolution().apply(image, torch.zeros(1), params)
    theirs = reference(SimulateLowResolutionTransform((0.5, 1), False, True, None), image,
                       apply_to_channel=torch.tensor([0]), scales=torch.tensor([[zoom] * 3]))
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(ours, image, atol=1e-2)


def test_mirror_matches_batchgeneratorsv2():
    image = smooth_volume()
    seg = (image > image.mean()).long()
    flips = torch.tensor([[True, False, True]])
    ours = Mirror().apply(image, seg, flips)
    mirror = MirrorTransform((0, 1, 2))
    assert torch.equal(ours[0], mirror._apply_to_image(image[0], axes=[0, 2])[None])
    assert torch.equal(ours[1], mirror._apply_to_segmentation(seg[0], axes=[0, 2])[None])


@pytest.mark.parametrize("axis,angle,scale", [(0, 0.4, 1.0), (1, -0.3, 1.0), (2, 0.5, 1.0), (0, 0.0, 1.3),
                                              (1, 0.2, 0.8)])
def test_spatial_matches_batchgeneratorsv2_for_one_axis_and_scale(axis, angle, scale):
    """Rotation about one axis with zoom, image bilinear with zero padding: our grid (``align_corners=True`` about
    the crop centre) and theirs (``align_corners=False`` about ``shape / 2``) land on the same input points when input
    and patch differ by an even number of voxels, so inside the patch the images agree to float rounding.

    With several axes at once the compositions differ in order (ours ``R0 R1 R2``, theirs ``R2 R1 R0``); with
    angles drawn symmetrically about 0 one is distributed as the other's inverse, which is equally random."""
    image = smooth_volume()
    patch = (6, 8, 10)
    angles = [0.0, 0.0, 0.0]
    angles[axis] = angle
    params = SpatialParams(torch.tensor([True]), torch.tensor([angles], dtype=torch.float64), torch.tensor([True]),
                           torch.tensor([scale], dtype=torch.float64))
    ours, _ = SpatialTransform(patch).apply(image, (image > 2).long(), params)
    theirs_transform = BgSpatialTransform(patch, patch_center_dist_from_border=0, random_crop=False,
                                          p_elastic_deform=0, p_rotation=1, rotation=lambda image, dim: angles[dim],
                                          p_scaling=1, scaling=(scale, scale), p_synchronize_scaling_across_axes=1)
    theirs = theirs_transform._apply_to_image(image[0], **theirs_transform.get_parameters(image=image[0]))[None]
    assert torch.allclose(ours, theirs, atol=1e-4)
    assert not torch.allclose(ours, image[..., 2:8, 2:10, 2:12], atol=1e-2)


# ---- parameter distributions as nnU-Net configures them -----------------------------------------------------------

N = 3000


def bg_draws(draw, seed=0):
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.array([float(draw()) for _ in range(N)])


def same_distribution(ours, theirs):
    assert stats.ks_2samp(np.asarray(ours, dtype=np.float64), theirs).pvalue > 1e-3


def test_transform_probabilities_equal_nnunets():
    """nnU-Net wraps each intensity transform in ``RandomTransform(apply_probability=p)``; ours carry the same p."""
    pipeline = build_training_pipeline((16, 32, 32))
    by_type = {}
    for transform in pipeline.transforms:
        by_type.setdefault(type(transform).__name__, []).append(transform)
    spatial = by_type["SpatialTransform"][0]
    assert (spatial.p_rotation, spatial.p_scale, spatial.scale_range) == (0.2, 0.2, (0.7, 1.4))
    assert torch.allclose(spatial.max_radians, torch.full((3,), math.radians(30), dtype=torch.float64))
    assert (by_type["GaussianNoise"][0].p, by_type["GaussianNoise"][0].std_range) == (0.1, (0.0, 0.1))
    blur = by_type["GaussianBlur"][0]
    assert (blur.p, blur.p_per_channel, blur.sigma_range) == (0.2, 0.5, (0.5, 1.0))
    assert (by_type["MultiplicativeBrightness"][0].p, by_type["Contrast"][0].p) == (0.15, 0.15)
    lowres = by_type["SimulateLowResolution"][0]
    assert (lowres.p, lowres.p_per_channel, lowres.zoom_range) == (0.25, 0.5, (0.5, 1.0))
    assert [(g.p, g.invert, g.retain_stats) for g in by_type["Gamma"]] == [(0.1, True, True), (0.3, False, True)]
    assert by_type["Mirror"][0].p == 0.5 and by_type["Mirror"][0].axes == (0, 1, 2)


@pytest.mark.parametrize("transform,low,high", [(MultiplicativeBrightness(p=1), 0.75, 1.25),
                                                (Contrast(p=1), 0.75, 1.25), (Gamma(p=1), 0.7, 1.5)])
def test_factor_draws_follow_bgcontrast(transform, low, high):
    """nnU-Net draws brightness, contrast and gamma with ``BGContrast``: below 1 half of the time."""
    ours = transform.sample(N, 1, torch.Generator().manual_seed(0)).values.flatten()
    theirs = bg_draws(BGContrast((low, high)))
    same_distribution(ours, theirs)
    assert abs(float((ours < 1).double().mean()) - float(np.mean(theirs < 1))) < 0.05


def test_scalar_draws_follow_nnunets_ranges():
    generator = torch.Generator().manual_seed(0)
    uniform = {"noise": (0.0, 0.1), "blur": (0.5, 1.0), "lowres": (0.5, 1.0), "scale": (0.7, 1.4)}
    ours = {"noise": GaussianNoise(p=1).sample(N, 1, generator).stds,
            "blur": GaussianBlur(p=1).sample(N // 3, 1, generator).values.flatten(),
            "lowres": SimulateLowResolution(p=1).sample(N, 1, generator).values.flatten(),
            "scale": SpatialTransform((4, 4, 4), p_scale=1).sample(N, 1, generator).factors}
    for name, (low, high) in uniform.items():
        same_distribution(ours[name], bg_draws(lambda: np.random.uniform(low, high)))
    angles = SpatialTransform((4, 4, 4), p_rotation=1).sample(N, 1, generator).angles.flatten()
    same_distribution(angles, bg_draws(lambda: np.random.uniform(-math.radians(30), math.radians(30))))


def test_selection_rates_follow_nnunets_probabilities():
    """Per-sample coins against ``RandomTransform``'s and per-channel coins against ``p_per_channel``'s."""
    generator = torch.Generator().manual_seed(1)
    blur = GaussianBlur().sample(N, 2, generator).apply.double()
    lowres = SimulateLowResolution().sample(N, 2, generator).apply.double()
    flips = Mirror().sample(N, 1, generator).double()
    spatial = SpatialTransform((4, 4, 4)).sample(N, 1, generator)
    observed = {"blur": float(blur.mean()), "lowres": float(lowres.mean()), "mirror": float(flips.mean()),
                "rotation": float(spatial.rotate.double().mean()), "scale": float(spatial.zoom.double().mean())}
    expected = {"blur": 0.2 * 0.5, "lowres": 0.25 * 0.5, "mirror": 0.5, "rotation": 0.2, "scale": 0.2}
    for name, p in expected.items():
        assert abs(observed[name] - p) < 4 * math.sqrt(p * (1 - p) / N), name
    theirs = MirrorTransform((0, 1, 2))
    torch.manual_seed(0)
    bg_rate = np.mean([len(theirs.get_parameters(image=None)["axes"]) / 3 for _ in range(N)])
    assert abs(observed["mirror"] - bg_rate) < 0.05
