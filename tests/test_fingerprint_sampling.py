"""The fingerprint's foreground sampling: a case with fewer voxels than its share of the budget sends back each value
once with how often nnU-Net's draw picks it, and the statistics are those of the samples themselves."""

import numpy as np
import pytest

from covtransfer.planning.fingerprint import (analyse_case, compute_fingerprint, draw_counts, intensity_statistics,
                                              weighted_intensity_statistics)

KEYS = ("mean", "std", "min", "max", "median", "percentile_00_5", "percentile_99_5")


def test_counts_are_those_of_the_choice_and_leave_the_generator_where_it_does():
    values = np.arange(37, dtype=np.float32)
    for k in (1, 36, 37, 5000):
        chosen = np.random.RandomState(1234)
        picked = chosen.choice(values, k, replace=True)
        counted = np.random.RandomState(1234)
        counts = draw_counts(counted, values.size, k)
        assert counts.tolist() == np.bincount(picked.astype(int), minlength=37).tolist()
        assert chosen.randint(0, 1000, 5).tolist() == counted.randint(0, 1000, 5).tolist()


def test_weighted_statistics_are_those_of_the_expanded_array():
    rng = np.random.default_rng(3)
    values = rng.normal(0, 300, 501).astype(np.float32)
    counts = rng.integers(1, 6, 501)
    expected = intensity_statistics(np.repeat(values, counts))
    got = weighted_intensity_statistics(values, counts)
    assert list(got) == list(expected)
    for key in KEYS:
        assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-4), key


def test_mixed_budget_keeps_nnunets_samples(tiny_dataset):  # noqa: F811
    folder, info, cases = tiny_dataset  # 210, 486 and 200 foreground voxels
    per_case = 300  # more than cases 0 and 2 hold, fewer than case 1
    fingerprint = compute_fingerprint(folder, info, num_processes=1, voxel_budget=3 * per_case)
    samples = [np.random.RandomState(1234).choice(image[label > 0].astype(np.float32), per_case, replace=True)
               for image, label, *_ in cases.values()]
    expected = intensity_statistics(np.concatenate(samples))
    stats = fingerprint["foreground_intensity_properties_per_channel"]["0"]
    for key in KEYS:
        assert stats[key] == pytest.approx(expected[key], rel=1e-6), key


def test_a_small_case_sends_back_its_voxels_not_the_budget(tiny_dataset):  # noqa: F811
    folder, _, cases = tiny_dataset
    image, label, *_ = cases["case_0"]
    images, seg = [folder / "imagesTr" / "case_0_0000.nii.gz"], folder / "labelsTr" / "case_0.nii.gz"
    values, counts = analyse_case(images, seg, 10 ** 6)["samples"][0]
    assert values.size <= int((label > 0).sum()) == 210 and counts.sum() == 10 ** 6
    sampled = analyse_case(images, seg, 100)["samples"][0]  # fewer than the voxels: the samples themselves
    expected = np.random.RandomState(1234).choice(image[label > 0].astype(np.float32), 100, replace=True)
    assert np.array_equal(sampled, expected)
