"""benchmarks/batch_stats*.py: the per-sample statistics and the comparison, on hand-made batches (nnU-Net is not
needed)."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from batch_stats import compare  # noqa: E402
from batch_stats_common import STATS, sample_stats  # noqa: E402


def test_sample_stats_of_a_hand_made_batch():
    images = torch.zeros(2, 1, 3, 4, 5)
    images[0, 0, 0] = 2.0  # 20 of 60 voxels at 2: mean 2/3, zeros 2/3
    seg = torch.zeros(2, 1, 3, 4, 5, dtype=torch.long)
    seg[0, 0, 0, 0, 0] = 1
    seg[0, 0, 2, 3, 4] = 1  # two opposite corners: centre of mass at the patch centre
    seg[1, 0, 0, 0, 0] = 1  # one corner: sqrt(1 + 1.5² + 2²) from the centre (1, 1.5, 2)
    got = dict(zip(STATS, sample_stats(images, seg).T))
    assert got["foreground_fraction"] == pytest.approx([2 / 60, 1 / 60])
    assert got["has_foreground"].tolist() == [1.0, 1.0]
    assert got["image_mean"] == pytest.approx([2 / 3, 0.0])
    assert got["image_std"][0] == pytest.approx(np.std([2.0] * 20 + [0.0] * 40, ddof=1))
    assert got["zero_fraction"] == pytest.approx([2 / 3, 1.0])
    assert got["centre_offset"] == pytest.approx([0.0, math.sqrt(1 + 1.5 ** 2 + 2 ** 2)], abs=1e-6)


def test_sample_stats_without_foreground_has_no_centre_offset():
    got = dict(zip(STATS, sample_stats(torch.ones(1, 2, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2)).T))
    assert got["has_foreground"].tolist() == [0.0] and math.isnan(got["centre_offset"][0])


def test_compare_gives_the_welch_z_of_the_means_and_drops_nans():
    ours = {"train_image_mean": np.array([1.0, 2.0, 3.0, np.nan])}
    theirs = {"train_image_mean": np.array([0.0, 1.0, 2.0, 3.0])}
    (row,) = compare(ours, theirs)
    se = math.sqrt(np.var([1, 2, 3], ddof=1) / 3 + np.var([0, 1, 2, 3], ddof=1) / 4)
    assert (row["split"], row["statistic"], row["n"]) == ("train", "image_mean", [3, 4])
    assert row["z"] == pytest.approx((2.0 - 1.5) / se)
    assert 0 < row["ks_p"] <= 1
