"""Metrics against hand-computed values: overlap counts, surface areas, NSD and HD95 with anisotropic spacing."""

import math

import numpy as np
import pytest
from scipy import ndimage

from covtransfer.evaluation import metrics as m
from covtransfer.evaluation.evaluate import summarise
from covtransfer.evaluation.surface import (neighbourhood_codes, surface_area, surface_distances,
                                            surface_elements, surfel_area_table)

SPACING = (3.0, 1.0, 0.5)  # z, y, x in mm


def box(shape, z, y, x):
    mask = np.zeros(shape, dtype=bool)
    mask[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = True
    return mask


def test_confusion_counts_and_ratios_on_a_hand_counted_line():
    ref = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool).reshape(1, 1, 10)
    pred = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0], dtype=bool).reshape(1, 1, 10)
    assert m.confusion_counts(ref, pred) == (2, 1, 2, 5)
    assert m.dice(ref, pred) == pytest.approx(4 / 7)
    assert m.sensitivity(ref, pred) == pytest.approx(0.5)
    assert m.precision(ref, pred) == pytest.approx(2 / 3)
    assert m.specificity(ref, pred) == pytest.approx(5 / 6)
    assert m.accuracy(ref, pred) == pytest.approx(0.7)
    assert m.mcc(ref, pred) == pytest.approx((2 * 5 - 1 * 2) / math.sqrt(3 * 4 * 6 * 7))


def test_dice_of_known_overlap():
    ref = box((4, 4, 12), (1, 2), (1, 2), (0, 10))
    pred = box((4, 4, 12), (1, 2), (1, 2), (5, 12))  # 7 voxels, 5 shared with the 10 of ref
    assert m.dice(ref, pred) == pytest.approx(2 * 5 / 17)
    assert m.dice(pred, ref) == m.dice(ref, pred)


def test_mcc_on_counts_of_a_huge_volume_does_not_overflow():
    c = m.Counts(tp=10**9, fp=10**8, fn=2 * 10**8, tn=10**11)
    expected = (1e9 * 1e11 - 1e8 * 2e8) / math.sqrt(1.1e9 * 1.2e9 * 1.001e11 * 1.002e11)
    assert m.mcc_from_counts(c) == pytest.approx(expected, rel=1e-12)
    assert m.mcc_from_counts(m.Counts(0, 0, 5, 5)) == 0.0  # no prediction at all: denominator 0


def test_single_voxel_surface_area_is_an_octahedron_scaled_by_the_spacing():
    voxel = box((3, 3, 3), (1, 2), (1, 2), (1, 2))
    sz, sy, sx = SPACING
    # eight triangles with corners at half-spacing offsets along the axes
    assert surface_area(voxel, SPACING) == pytest.approx(math.sqrt((sy * sx) ** 2 + (sz * sx) ** 2 + (sz * sy) ** 2))
    assert surface_area(voxel, (1, 1, 1)) == pytest.approx(math.sqrt(3))


def test_flat_face_element_has_the_area_of_one_voxel_face():
    table = surfel_area_table(SPACING)
    assert table[0] == table[255] == 0.0
    assert table[0b00001111] == pytest.approx(SPACING[1] * SPACING[2])  # the four dz = 0 voxels: a z-face
    assert table[0b01010101] == pytest.approx(SPACING[0] * SPACING[1])  # the four dx = 0 voxels: an x-face
    assert np.all(table[1:255] > 0)


def test_non_flat_pentagon_is_split_into_its_largest_triangles():
    # Three inside voxels forming an L on the dz = 0 face, at offsets (0, 0, 0), (0, 0, 1), (0, 1, 0) (bits 0, 1, 2);
    # the outside voxel of that face is (0, 1, 1). The surface is a non-flat pentagon through the midpoints of the
    # three vertical edges, (1/2, 0, 0), (1/2, 0, 1), (1/2, 1, 0), and of the two face edges towards (0, 1, 1),
    # (0, 1/2, 1) and (0, 1, 1/2). Its largest split (the marching-cubes triangles of surface-distance) is the flat
    # triangle through the vertical midpoints, area vector (1/2, 0, 0) in voxel units, plus two triangles with area
    # vectors (1/4, 1/4, 1/4) and (1/8, 1/8, 1/8). A component i of an area vector scales by prod(spacing) / s_i.
    sz, sy, sx = SPACING
    slanted = math.sqrt((sy * sx) ** 2 + (sz * sx) ** 2 + (sz * sy) ** 2)  # |(1, 1, 1) scaled|
    expected = 0.5 * sy * sx + (0.25 + 0.125) * slanted
    table = surfel_area_table(SPACING)
    assert table[0b00000111] == pytest.approx(expected, rel=1e-12)
    assert table[0b11111000] == pytest.approx(expected, rel=1e-12)  # the complement: five inside voxels
    assert surfel_area_table((1, 1, 1))[0b00000111] == pytest.approx(0.5 + 0.375 * math.sqrt(3), rel=1e-12)
    # (splitting around the centroid, the old rule, gave 1.0865 instead of 1.1495)


def test_five_or_more_inside_voxels_have_the_surface_of_their_complement():
    table = surfel_area_table(SPACING)
    np.testing.assert_allclose(table, table[::-1], rtol=1e-12)  # table[c] == table[255 - c]
    # six inside voxels; the two outside ones, (1, 0, 0) and (1, 1, 1), lie on a diagonal of the dz = 1 face and are
    # kept apart: two corner triangles like a single voxel's, not one hexagon joining the inside voxels around them
    assert table[0b01101111] == pytest.approx(2 * table[0b00000001], rel=1e-12)
    sz, sy, sx = SPACING
    assert table[0b00000001] == pytest.approx(math.sqrt((sy * sx) ** 2 + (sz * sx) ** 2 + (sz * sy) ** 2) / 8)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.6)])
def test_large_box_surface_area_matches_its_faces(spacing):
    a, b, c = 30, 36, 40
    mask = box((a + 4, b + 4, c + 4), (2, a + 2), (2, b + 2), (2, c + 2))
    sz, sy, sx = spacing
    exact = 2 * (a * sz * b * sy + b * sy * c * sx + a * sz * c * sx)
    assert surface_area(mask, spacing) == pytest.approx(exact, rel=0.03)
    assert surface_area(mask, spacing) < exact  # edges and corners are chamfered


@pytest.mark.parametrize("axis, step", [(0, 3.0), (2, 0.5)])
def test_single_voxel_shifted_by_one_along_an_axis(axis, step):
    ref = box((5, 5, 5), (2, 3), (2, 3), (2, 3))
    pred = np.roll(ref, 1, axis=axis)
    # half of each voxel's eight surface elements are shared, the other half lie one voxel step away
    assert m.normalized_surface_dice(ref, pred, SPACING, step * 0.99) == pytest.approx(0.5)
    assert m.normalized_surface_dice(ref, pred, SPACING, step) == pytest.approx(1.0)
    assert m.hd95(ref, pred, SPACING) == pytest.approx(step)
    assert m.dice(ref, pred) == 0.0


@pytest.mark.parametrize("axis, step", [(0, 3.0), (2, 0.5)])
def test_flat_box_shifted_by_one_voxel(axis, step):
    ref = box((6, 12, 14), (2, 4), (2, 10), (3, 11))
    pred = np.roll(ref, 1, axis=axis)
    # every element has a partner exactly one step away, and the leading face (> 5 % of the area) is that far
    assert m.hd95(ref, pred, SPACING) == pytest.approx(step)
    assert m.normalized_surface_dice(ref, pred, SPACING, step) == pytest.approx(1.0)
    assert 0.0 < m.normalized_surface_dice(ref, pred, SPACING, step * 0.9) < 1.0


def test_disjoint_boxes_a_known_distance_apart():
    ref = box((30, 10, 10), (2, 6), (2, 8), (2, 8))
    pred = np.roll(ref, 10, axis=0)  # z 12..16: a gap of 6 empty slices, a shift of 10 slices
    sz = SPACING[0]
    assert m.hd95(ref, pred, SPACING) == pytest.approx(10 * sz)
    assert m.normalized_surface_dice(ref, pred, SPACING, 6 * sz - 0.1) == 0.0
    assert m.normalized_surface_dice(ref, pred, SPACING, 10 * sz) == pytest.approx(1.0)
    assert 0.0 < m.normalized_surface_dice(ref, pred, SPACING, 8 * sz) < 1.0
    assert m.dice(ref, pred) == 0.0


def test_hd95_is_an_area_weighted_percentile_not_the_maximum():
    ref = box((40, 24, 24), (2, 12), (2, 22), (2, 22))
    pred = ref.copy()
    pred[35, 12, 12] = True  # one far-away voxel: well under 5 % of the prediction's surface area
    assert m.hd95(ref, pred, SPACING) == 0.0
    sd = surface_distances(ref, pred, SPACING)
    # the box's surface lies between slices 11 and 12, the voxel's far side between slices 35 and 36
    assert sd.distances_pred_to_ref.max() == pytest.approx(24 * SPACING[0])
    assert m.hausdorff_from_distances(sd, percentile=100) == pytest.approx(24 * SPACING[0])
    assert 0.99 < m.normalized_surface_dice(ref, pred, SPACING, 1.0) < 1.0


def test_distances_equal_a_distance_transform_of_the_other_border():
    rng = np.random.default_rng(3)
    ref = ndimage.binary_opening(rng.random((14, 20, 22)) > 0.55)
    pred = ndimage.binary_opening(rng.random((14, 20, 22)) > 0.6)
    sd = surface_distances(ref, pred, SPACING)
    borders = []
    for mask in (ref, pred):
        codes = neighbourhood_codes(mask)  # uncropped block grid
        borders.append((codes != 0) & (codes != 255))
        np.testing.assert_array_equal(surface_elements(codes), borders[-1])
    expected_to_pred = ndimage.distance_transform_edt(~borders[1], sampling=SPACING)[borders[0]]
    expected_to_ref = ndimage.distance_transform_edt(~borders[0], sampling=SPACING)[borders[1]]
    np.testing.assert_allclose(sd.distances_ref_to_pred, expected_to_pred, atol=1e-9)
    np.testing.assert_allclose(sd.distances_pred_to_ref, expected_to_ref, atol=1e-9)
    assert sd.areas_ref.sum() == pytest.approx(surface_area(ref, SPACING))


@pytest.mark.parametrize("spacing", [(0.6, 0.6, 0.6), (1.2, 0.6, 0.6)])
def test_distances_equal_the_distance_transform_bit_for_bit_where_elements_tie(spacing):
    # With these spacings, equally near elements at different offsets have lengths that round differently: with
    # 0.6 mm steps, offsets (0, 0, 3) and (2, 2, 1) are both 1.8 mm away but evaluate to 1.7999999999999998 and 1.8,
    # so a tolerance of 3 * 0.6 mm counts one and not the other. The distances must be the transform's values exactly,
    # not just to 1e-9 (taking whichever tied element the k-d tree finds first misses 11 and 4 of them here).
    rng = np.random.default_rng(0)
    ref = ndimage.gaussian_filter(rng.random((14, 16, 18)), 1.5) > 0.52  # touches the array border
    pred = ndimage.gaussian_filter(rng.random((14, 16, 18)), 1.5) > 0.52
    sd = surface_distances(ref, pred, spacing)
    border_ref, border_pred = (surface_elements(neighbourhood_codes(mask)) for mask in (ref, pred))
    expected_to_pred = ndimage.distance_transform_edt(~border_pred, sampling=spacing)[border_ref]
    expected_to_ref = ndimage.distance_transform_edt(~border_ref, sampling=spacing)[border_pred]
    np.testing.assert_array_equal(sd.distances_ref_to_pred, expected_to_pred)
    np.testing.assert_array_equal(sd.distances_pred_to_ref, expected_to_ref)


def test_metrics_are_symmetric_in_reference_and_prediction():
    rng = np.random.default_rng(7)
    ref = ndimage.binary_dilation(rng.random((12, 16, 16)) > 0.97, iterations=2)
    pred = ndimage.binary_dilation(rng.random((12, 16, 16)) > 0.97, iterations=2)
    assert m.dice(ref, pred) == pytest.approx(m.dice(pred, ref))
    assert m.normalized_surface_dice(ref, pred, SPACING, 2.0) == pytest.approx(
        m.normalized_surface_dice(pred, ref, SPACING, 2.0))
    assert m.hd95(ref, pred, SPACING) == pytest.approx(m.hd95(pred, ref, SPACING))
    assert m.mcc(ref, pred) == pytest.approx(m.mcc(pred, ref))


def test_empty_mask_conventions():
    empty = np.zeros((4, 4, 4), dtype=bool)
    full = box((4, 4, 4), (1, 3), (1, 3), (1, 3))
    both = m.label_metrics(empty, empty, SPACING, 3.0)
    assert (both["dice"], both["nsd"], both["hd95"]) == (1.0, 1.0, 0.0)
    assert math.isnan(both["sensitivity"]) and math.isnan(both["precision"])
    assert (both["specificity"], both["accuracy"], both["mcc"]) == (1.0, 1.0, 0.0)
    for ref, pred in ((empty, full), (full, empty)):
        one = m.label_metrics(ref, pred, SPACING, 3.0)
        assert (one["dice"], one["nsd"], one["mcc"]) == (0.0, 0.0, 0.0)
        assert math.isnan(one["hd95"])
    assert math.isnan(m.sensitivity(empty, full)) and m.precision(empty, full) == 0.0
    assert math.isnan(m.precision(full, empty)) and m.sensitivity(full, empty) == 0.0
    assert math.isnan(m.hd95(empty, full, SPACING)) and m.hd95(empty, empty, SPACING) == 0.0
    assert m.normalized_surface_dice(empty, empty, SPACING, 1.0) == 1.0
    assert m.empty_label_row(3, 64) == {**both, "label": 3}


def test_two_empty_masks_score_nsd_one_and_count_in_the_mean():
    """Our convention (documentation/evaluation.md): NSD 1 and DSC 1 when the label is absent from both masks, and
    such a case enters the mean. MONAI's compute_surface_dice returns NaN there and DeepMind's surface-distance 0/0
    (NaN); a NaN-skipping mean would then score this pair of cases 0 instead of 0.5."""
    empty = np.zeros((6, 6, 6), dtype=bool)
    lesion = box((6, 6, 6), (1, 4), (1, 4), (1, 4))
    assert m.normalized_surface_dice(empty, empty, SPACING, 3.0) == 1.0
    assert m.normalized_surface_dice(empty, empty, SPACING, 0.0) == 1.0  # whatever the tolerance
    missed = {**m.label_metrics(lesion, empty, SPACING, 3.0), "case": "missed"}
    absent = {**m.label_metrics(empty, empty, SPACING, 3.0), "case": "absent"}
    assert (missed["nsd"], missed["dice"], absent["nsd"], absent["dice"]) == (0.0, 0.0, 1.0, 1.0)
    summary = summarise([missed, absent], [1])
    assert summary["mean"]["1"]["nsd"] == summary["mean"]["1"]["dice"] == 0.5
    assert summary["empty_reference"] == {"1": 1} and summary["empty_prediction"] == {"1": 2}


def test_case_metrics_crops_without_changing_any_number():
    ref = np.zeros((20, 30, 30), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[5:9, 10:16, 10:18] = 1
    ref[12:14, 20:25, 3:9] = 2
    pred[6:9, 11:16, 10:19] = 1
    pred[12:14, 21:25, 4:9] = 2
    pred[2, 2, 2] = 2
    rows = m.case_metrics(ref, pred, SPACING, [1, 2, 3], tolerance_mm=1.0)
    assert [r["label"] for r in rows] == [1, 2, 3]
    for row in rows[:2]:
        full = m.label_metrics(ref == row["label"], pred == row["label"], SPACING, 1.0, row["label"])
        assert row == pytest.approx(full, nan_ok=True)
    assert rows[2] == m.empty_label_row(3, ref.size)
    assert rows[0]["n_ref"] == 4 * 6 * 8 and rows[1]["n_pred"] == 2 * 4 * 5 + 1
    assert set(rows[0]) == {"label", *m.METRIC_NAMES, "n_ref", "n_pred"}


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        m.dice(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool))
    with pytest.raises(ValueError, match="spacing"):
        surface_area(np.ones((2, 2, 2), bool), (1.0, 0.0, 1.0))
