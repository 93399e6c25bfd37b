"""Disease burden: HU lung extraction, left/right by patient coordinates, PO/PHO and grades on hand-built volumes,
and the accuracy targets on synthetic phantoms whose true lungs are known."""

import numpy as np
import pytest

from covtransfer.data.geometry import Geometry
from covtransfer.datasets.synthetic import KINDS, case_rng, generate_case
from covtransfer.errors import CovtransferError
from covtransfer.evaluation.burden import case_statistics, csv_row, lung_label_values, severity_grade
from covtransfer.evaluation.burden_accuracy import phantom_errors, true_sides
from covtransfer.evaluation.lung_mask import hu_lung_mask
from covtransfer.evaluation.patient_sides import patient_point

SPACING = (5.0, 4.0, 4.0)  # (z, y, x) mm: a voxel is 0.08 mL
VOXEL_ML = 0.08
LESION = {"background": 0, "lesion": 1}


def chest(trachea: bool = True, shape=(20, 30, 40)):
    """A box phantom in HU: air around a soft-tissue body holding a right lung (low x index, 1 080 voxels) and a
    larger left lung (high x index, 1 440 voxels) at -850 HU, optionally a 4 x 4 trachea of pure air entering from
    the top slice (high z: superior with an identity direction) down into the left lung's top slice, and a lesion in
    the left lung: 60 voxels at -500 HU over 40 at -100 HU. Returns the image and the lesion (label 1)."""
    image = np.full(shape, -1000, dtype=np.int16)
    image[:, 3:-3, 3:-3] = 40
    image[4:16, 8:17, 8:18] = -850  # right lung: 12 x 9 x 10
    image[4:16, 8:20, 24:34] = -850  # left lung: 12 x 12 x 10
    if trachea:
        image[15:, 11:15, 26:30] = -1000
    seg = np.zeros(shape, dtype=np.uint8)
    image[6:9, 10:14, 26:31] = -500
    image[9:11, 10:14, 26:31] = -100
    seg[6:11, 10:14, 26:31] = 1
    return image, seg


def flipped_x(image, seg, geometry: Geometry):
    """The same physical scan stored with its x axis reversed (direction -1 along x, origin at the far end)."""
    far = patient_point(np.array([0, 0, image.shape[2] - 1]), geometry)
    direction = np.array(geometry.direction).reshape(3, 3).copy()
    direction[:, 0] *= -1
    return image[:, :, ::-1].copy(), seg[:, :, ::-1].copy(), Geometry(geometry.spacing, tuple(far),
                                                                       tuple(direction.ravel()))


def test_grades_follow_the_po_bands():
    assert [severity_grade(po) for po in (None, 0.0, 0.01, 24.9, 25.0, 49.9, 50.0, 75.0, 75.1, 100.0)] == \
        [None, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_lung_labels_are_found_by_name():
    assert lung_label_values({"background": 0, "left_lung": 1, "right_lung": 2, "infection": 3}) == [1, 2]
    assert lung_label_values({"background": 0, "Lung": 1, "lesion": 2}) == [1]
    assert lung_label_values(LESION) == []


def test_hu_lungs_leave_out_outside_air_and_the_trachea():
    image, seg = chest()
    lung = hu_lung_mask(image, Geometry(SPACING), seg == 1)
    assert not lung[:, :3].any() and not lung[16:].any()  # outside air; the trachea above the lungs
    assert lung[4:16, 8:17, 8:18].all() and lung[:, :, :20].sum() == 1080
    # the left lung, less at most the trachea's 4 x 4 cross-section in the lung's top slice and its rim below
    assert 1440 - 32 <= lung[:, :, 20:].sum() <= 1440
    without = hu_lung_mask(image, Geometry(SPACING), None)
    assert without.sum() == lung.sum()  # the -100 HU part of the lesion is a hole the filling closes


def test_statistics_are_hand_computed_numbers():
    image, seg = chest(trachea=False)
    stats = case_statistics(image, seg, Geometry(SPACING), LESION)
    assert stats["lung_source"] == "hu"
    right, left, total = stats["right"], stats["left"], stats["total"]
    assert right["lung_ml"] == pytest.approx(1080 * VOXEL_ML) and left["lung_ml"] == pytest.approx(1440 * VOXEL_ML)
    assert left["lesion_ml"] == pytest.approx(100 * VOXEL_ML) and right["lesion_ml"] == 0
    assert left["po"] == pytest.approx(100 * 100 / 1440) and left["pho"] == pytest.approx(100 * 40 / 1440)
    assert right["po"] == 0 and right["grade"] == 0 and left["grade"] == 1
    assert total["po"] == pytest.approx(100 * 100 / 2520) and total["pho"] == pytest.approx(100 * 40 / 2520)
    assert stats["lesion_count"] == 1 and stats["lesion_mean_hu"] == pytest.approx((60 * -500 + 40 * -100) / 100)
    assert stats["label_volumes_ml"] == {"lesion": pytest.approx(100 * VOXEL_ML)}
    row = csv_row("c", stats)
    assert row["po_left"] == left["po"] and row["volume_ml_lesion"] == pytest.approx(8.0)


def test_a_lesion_filling_the_lung_base_below_the_air_counts_in_the_lung():
    image, seg = chest(trachea=False)
    image[2:4, 8:17, 8:18] = 20  # fluid under the right lung, below every air voxel of the scan
    seg[2:4, 8:17, 8:18] = 1
    stats = case_statistics(image, seg, Geometry(SPACING), LESION)
    assert stats["right"]["lung_ml"] == pytest.approx((1080 + 180) * VOXEL_ML)
    assert stats["right"]["po"] == pytest.approx(100 * 180 / 1260) and stats["right"]["pho"] == stats["right"]["po"]


def test_sides_follow_patient_coordinates_not_array_order():
    image, seg = chest()
    geometry = Geometry(SPACING, (10.0, -20.0, 5.0))
    stats = case_statistics(image, seg, geometry, LESION)
    flipped = case_statistics(*flipped_x(image, seg, geometry), LESION)
    assert stats["left"]["lesion_ml"] > 0 and stats["right"]["lesion_ml"] == 0
    for side in ("right", "left"):
        assert flipped[side] == pytest.approx(stats[side])
    # LPS -> RAS-like storage: x and y both reversed in the array
    direction = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    ras = case_statistics(image[:, ::-1, ::-1].copy(), seg[:, ::-1, ::-1].copy(), Geometry(SPACING, (0, 0, 0), direction),
                          LESION)
    for side in ("right", "left"):
        assert ras[side] == pytest.approx(stats[side])


def test_model_lung_labels_are_used_when_present():
    image, seg = chest()
    labels = {"background": 0, "lung": 1, "lesion": 2}
    model = np.where(seg == 1, 2, 0).astype(np.uint8)
    model[4:16, 8:17, 8:18] = 1
    model[4:16, 8:20, 24:34] = np.where(model[4:16, 8:20, 24:34] == 2, 2, 1)
    stats = case_statistics(image, model, Geometry(SPACING), labels, lung_label_values(labels))
    assert stats["lung_source"] == "model"
    assert stats["left"]["lung_ml"] == pytest.approx(1440 * VOXEL_ML)  # the trachea is not lung in the labels
    assert stats["left"]["po"] == pytest.approx(100 * 100 / 1440)
    without = case_statistics(image, np.where(model == 2, 2, 0).astype(np.uint8), Geometry(SPACING), labels,
                              lung_label_values(labels))
    assert without["lung_source"] == "hu"


def test_no_lung_is_a_one_line_error_naming_the_source():
    image = np.full((8, 20, 20), 30, dtype=np.int16)
    with pytest.raises(CovtransferError, match=r"^case\.nii\.gz: no lung found") as info:
        case_statistics(image, np.zeros(image.shape, np.uint8), Geometry(SPACING), LESION, source="case.nii.gz")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_hu_lungs_meet_the_targets_on_phantoms(kind):
    """Given the true lesion mask: each lung's volume within 5 %, PO and PHO within 0.5 points of the truth."""
    for index in range(3):
        errors = phantom_errors(kind, "small", 5, index)
        assert errors["lung_source"] == "hu"
        for side in ("right", "left"):
            assert abs(errors[side]["volume_percent"]) <= 5
            assert abs(errors[side]["po"]) <= 0.5 and abs(errors[side]["pho"]) <= 0.5


def test_phantom_truth_puts_the_right_lung_at_low_x():
    image, label, spacing = generate_case("covid", "tiny", case_rng(5, "covid", 0), with_lungs=True)
    right, left = true_sides(image, label, Geometry(spacing))
    assert right.any() and left.any() and not (right & left).any()
    assert np.nonzero(right)[2].max() < np.nonzero(left)[2].min()
    assert np.count_nonzero(right | left) == np.count_nonzero(label)
