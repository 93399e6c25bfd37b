"""benchmarks/fidelity*.py: the statistics, the centre of mass, patch fractions and start decoding, on hand-made
inputs (nnU-Net is not needed)."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from fidelity import (centre_of_mass, gaussian_blob, ks_p, markdown, patch_fractions, rate_label, rate_z,  # noqa: E402
                      row)
from fidelity_covtransfer import decode_starts, voxel_numbers  # noqa: E402

from covtransfer.training.sampler import crop_padded  # noqa: E402


def test_rate_z_is_the_pooled_two_proportion_z():
    a = np.array([True] * 30 + [False] * 70)  # 0.3
    b = np.array([True] * 20 + [False] * 80)  # 0.2; pooled 0.25
    expected = 0.1 / math.sqrt(0.25 * 0.75 * (1 / 100 + 1 / 100))
    assert rate_z(a, b) == pytest.approx(expected)  # 1.633
    assert rate_z(b, a) == pytest.approx(-expected)


def test_rate_z_of_two_equal_constant_rates_is_zero():
    assert rate_z(np.ones(10, bool), np.ones(40, bool)) == 0.0
    assert rate_z(np.zeros(10, bool), np.zeros(3, bool)) == 0.0


def test_ks_p_separates_shifted_samples_and_accepts_equal_ones():
    rng = np.random.default_rng(0)
    assert ks_p(rng.uniform(0, 1, 2000), rng.uniform(0, 1, 2000)) > 0.01
    assert ks_p(rng.uniform(0, 1, 2000), rng.uniform(0.1, 1.1, 2000)) < 1e-6
    assert ks_p(np.ones(5), np.ones(7)) == 1.0


def test_centre_of_mass_of_two_point_masses():
    volume = np.zeros((4, 4, 4))
    volume[1, 2, 3], volume[3, 2, 1] = 1.0, 3.0
    assert np.allclose(centre_of_mass(volume), [(1 + 9) / 4, 2.0, (3 + 3) / 4])


def test_centre_of_mass_finds_the_centre_of_a_blob():
    assert np.allclose(centre_of_mass(gaussian_blob((30, 32, 34), (14.3, 15.6, 17.2), 3.0)), [14.3, 15.6, 17.2],
                       atol=1e-4)


def test_decode_starts_reads_back_where_patches_were_cut():
    shape, patch = (5, 6, 7), (4, 3, 8)
    starts = np.array([[0, 0, 0], [-2, 4, -1], [3, -1, -3], [1, 2, 0]])
    data = voxel_numbers(shape)
    patches = np.stack([crop_padded(data, start, patch, 0.0) for start in starts])
    assert np.array_equal(decode_starts(patches, shape), starts)


def test_patch_fractions_count_foreground_and_padding_in_the_cut_and_the_centre():
    label = np.zeros((4, 4, 4), np.int8)
    label[0, 0, 0] = 1
    fractions = patch_fractions(label, np.array([[-1, 0, 0], [2, 2, 2]]), (2, 2, 2), (2, 2, 2))
    # the first box holds one padding layer (4 of 8 voxels) and the foreground voxel; the second neither
    assert fractions["padding, cut patch"].tolist() == [0.5, 0.0]
    assert fractions["foreground, cut patch"].tolist() == [0.125, 0.0]
    assert np.array_equal(fractions["foreground, final crop"], fractions["foreground, cut patch"])
    # a 4³ box from -1 reads one padding layer per axis; its centre crop is voxels 0..1, inside the image
    centred = patch_fractions(label, np.array([[-1, -1, -1]]), (4, 4, 4), (2, 2, 2))
    assert centred["padding, final crop"].tolist() == [0.0]
    assert centred["foreground, final crop"].tolist() == [1 / 8]
    assert centred["padding, cut patch"].tolist() == [1 - 27 / 64]


def test_rate_labels_name_the_unit():
    assert rate_label("rate/blur_channel") == "blur, per channel"
    assert rate_label("rate/lowres") == "low resolution, per sample"
    assert rate_label("rate/gamma_inverted_invert") == "gamma (inverted image): image inverted, per chosen channel"


def test_markdown_marks_failing_rows_and_counts_them():
    rows = [row("loss", "a", "1", "1", "KS p = 0.5", True), row("lowres", "b", "0.9", "0.1", "mean ≤ 0.25", False)]
    text = markdown(rows)
    assert "| a | 1 | 1 | KS p = 0.5 | yes |" in text
    assert "| b | 0.9 | 0.1 | mean ≤ 0.25 | **no** |" in text
    assert text.endswith("1 of 2 rows pass; failing: b")


def test_a_flat_patch_draws_in_plane_rotations_up_to_half_a_turn():
    """The dummy-2D path of thick-slice data: rotations about z alone, beyond the 3D path's ±30°."""
    from fidelity_covtransfer import augmentation_draws

    drawn = augmentation_draws((8, 32, 32), 2000, 1, seed=0)
    about_z = drawn["value/rotation_z"]
    assert len(about_z) > 300 and not drawn["value/rotation_y"].any() and not drawn["value/rotation_x"].any()
    assert np.abs(about_z).max() <= math.pi and np.abs(about_z).max() > 3.0 and (np.abs(about_z) > 1.0).mean() > 0.6
    three_d = augmentation_draws((24, 32, 32), 2000, 1, seed=0)
    assert np.abs(three_d["value/rotation_y"]).max() <= math.radians(30) < np.abs(about_z).max()
