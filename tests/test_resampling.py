"""Resampling: new shapes, cubic image resampling against scipy's zoom, the separate-z rule for anisotropic
spacing, and label resampling against a one-hot linear reference, ties going to the nearest label."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from covtransfer.preprocessing.resampling import (compute_new_shape, resample_image, resample_labels, resample_probabilities, separate_z_axis)
from tiny_data import smooth


def test_compute_new_shape_rounds_spacing_ratio_times_shape():
    assert compute_new_shape((200, 512, 512), (1.25, 0.7, 0.7), (1.5, 1.0, 1.0)) == [167, 358, 358]
    assert compute_new_shape((3, 4, 5), (1, 1, 1), (100, 1, 1)) == [1, 4, 5]


@pytest.mark.parametrize("new_shape", [(15, 31, 22), (30, 18, 40)])
def test_cubic_resampling_equals_scipy_zoom_and_approximates_the_function(new_shape):
    shape = (22, 26, 30)
    data = smooth(shape)[None] * 100
    out = resample_image(data, (1, 1, 1), (1, 1, 1), new_shape, order=3)
    reference = ndimage.zoom(data[0].astype(np.float64), np.divide(new_shape, shape), order=3, mode="nearest",
                             grid_mode=True)
    assert out.shape == (1, *new_shape) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], np.clip(reference, data.min(), data.max()), atol=1e-3)
    exact = smooth(new_shape, np.divide(shape, new_shape)) * 100
    interior = tuple(slice(2, -2) for _ in range(3))
    assert np.abs(out[0][interior] - exact[interior]).max() < 1.0  # 1 % of the amplitude


def test_separate_z_rule():
    assert separate_z_axis((5, 1, 1), (1, 1, 1)) == 0
    assert separate_z_axis((1, 1, 1), (1, 4, 1)) == 1
    assert separate_z_axis((5, 5, 1), (1, 1, 1)) is None  # two coarse axes tie
    assert separate_z_axis((2, 1, 1), (1, 1, 1)) is None
    assert separate_z_axis((3, 1, 1), (1, 1, 1)) is None  # ratio must exceed the threshold


def test_anisotropic_spacing_interpolates_the_coarse_axis_with_nearest_and_the_plane_with_cubic():
    shape = (6, 20, 24)
    data = smooth(shape, (5, 1, 1))[None] * 100
    new_shape = compute_new_shape(shape, (5, 1, 1), (2.5, 0.8, 0.8))
    out = resample_image(data, (5, 1, 1), (2.5, 0.8, 0.8), new_shape)
    source = np.floor((np.arange(new_shape[0]) + 0.5) * shape[0] / new_shape[0]).astype(int)
    for z, k in enumerate(source):
        in_plane = ndimage.zoom(data[0, k].astype(np.float64), np.divide(new_shape[1:], shape[1:]), order=3,
                                mode="nearest", grid_mode=True)
        np.testing.assert_allclose(out[0, z], np.clip(in_plane, data.min(), data.max()), atol=1e-3)
    isotropic = resample_image(data, (5, 1, 1), (2.5, 0.8, 0.8), new_shape, anisotropy_threshold=10)
    assert np.abs(isotropic - out).max() > 0.1  # with the rule off the z-axis is cubic


def one_hot_reference(seg, new_shape):
    """nnU-Net 2.8.1's rule in float64: every label's mask resized linearly, the largest wins, an exact tie goes to the
    nearest-neighbour label; returns the labels and the winning mask value."""
    zoom = np.divide(new_shape, seg.shape)
    labels = np.unique(seg)
    scores = np.stack([ndimage.zoom((seg == label).astype(float), zoom, order=1, mode="nearest", grid_mode=True)
                       for label in labels])
    nearest = ndimage.zoom(seg, zoom, order=0, mode="nearest", grid_mode=True)
    best = scores.max(axis=0)
    reference = labels[scores.argmax(axis=0)]
    nearest_wins = np.take_along_axis(scores, np.searchsorted(labels, nearest)[None], axis=0)[0] == best
    reference[nearest_wins] = nearest[nearest_wins]
    return reference, best


def assert_matches_one_hot_reference(out, seg):
    """Equal to nnU-Net's rule except where no label has a clear majority: where three or more labels meet (covtransfer
    keeps the fill, nnU-Net the largest mask) or float64 rounding broke a tie; returns how many voxels differ."""
    reference, best = one_hot_reference(seg, out.shape)
    differ = out != reference
    assert np.all(best[differ] <= 0.5 + 1e-9)
    return int(differ.sum())


def test_label_resampling_keeps_shape_and_labels_and_matches_one_hot_linear():
    rng = np.random.default_rng(0)
    seg = ndimage.zoom(rng.integers(-1, 3, (6, 7, 8)).astype(np.int8), 3, order=0)
    new_shape = (13, 29, 20)
    out = resample_labels(seg, (1, 1, 1), (1, 1, 1), new_shape)
    assert out.shape == new_shape and out.dtype == np.int8
    assert set(np.unique(out)) == set(np.unique(seg))
    assert_matches_one_hot_reference(out, seg)


def test_a_tie_between_two_labels_goes_to_the_nearest_neighbour_label():
    # 30 -> 25 voxels along x puts output voxels 2, 7, ... exactly halfway between input voxels k and k + 1
    seg = np.zeros((4, 6, 30), np.int8)
    seg[:, :, 3:15] = 1
    out = resample_labels(seg, (1, 1, 1), (1, 1, 1), (4, 6, 25))
    scores = ndimage.zoom((seg == 1).astype(float), (1, 1, 25 / 30), order=1, mode="nearest", grid_mode=True)
    nearest = ndimage.zoom(seg, (1, 1, 25 / 30), order=0, mode="nearest", grid_mode=True)
    ties = np.abs(scores - 0.5) < 1e-12
    assert ties[0, 0].sum() == 2  # both ends of the label, one tie the nearest neighbour gives to each label
    assert set(nearest[ties]) == {0, 1}
    np.testing.assert_array_equal(out[ties], nearest[ties])
    np.testing.assert_array_equal(out[~ties], (scores[~ties] > 0.5).astype(np.int8))


def test_label_resampling_of_scattered_voxels_matches_the_whole_volume_rule():
    rng = np.random.default_rng(1)
    seg = np.zeros((30, 24, 26), np.int8)
    for z in (0, 1, 14, 28, 29):  # isolated slabs, as -1 voxels on the first and last CT slices
        seg[z][rng.random((24, 26)) < 0.2] = -1
    seg[5:12, 6:15, 4:20] = 1
    seg[13:16, 2:5, 3:6] = 2
    for new_shape in [(20, 31, 17), (45, 18, 26)]:
        out = resample_labels(seg, (1, 1, 1), (1, 1, 1), new_shape)
        assert assert_matches_one_hot_reference(out, seg) < 0.001 * out.size
    anisotropic = resample_labels(seg, (4, 1, 1), (2, 1, 1), (60, 24, 26))
    np.testing.assert_array_equal(anisotropic, seg[np.arange(60) // 2])  # nearest along z, nothing else to do


def test_downsample_then_upsample_of_smooth_image_returns_close_to_original():
    shape = (24, 30, 28)
    data = smooth(shape)[None]
    small_shape = compute_new_shape(shape, (1, 1, 1), (1.6, 1.6, 1.6))
    down = resample_image(data, (1, 1, 1), (1.6, 1.6, 1.6), small_shape)
    up = resample_image(down, (1.6, 1.6, 1.6), (1, 1, 1), shape)
    interior = (0,) + tuple(slice(3, -3) for _ in range(3))
    assert np.abs(up[interior] - data[interior]).max() < 0.02
    probabilities = resample_probabilities(np.stack([data[0], 1 - data[0]]), (1, 1, 1), (1.6, 1.6, 1.6),
                                           small_shape)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)
