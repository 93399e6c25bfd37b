"""Planning: fingerprint statistics, target spacing, topology, memory estimate, patch and batch, presets."""

from __future__ import annotations

import numpy as np
import pytest

from covtransfer.data.dataset_json import DatasetInfo
from covtransfer.data.image_io import Geometry, write_image
from covtransfer.errors import CovtransferError
from covtransfer.planning.fingerprint import compute_fingerprint, load_fingerprint, save_fingerprint
from covtransfer.planning.memory import feature_map_units
from covtransfer.planning.planner import PRESETS, plan_experiment, plans_from
from covtransfer.planning.spacing import target_spacing, transpose_axes
from covtransfer.planning.topology import features_per_stage, initial_patch_size, pool_and_conv_props
from covtransfer.plans import Plans

CT_PROPS = {"0": {"mean": -400.0, "std": 350.0, "min": -1024.0, "max": 1500.0, "median": -500.0,
                  "percentile_00_5": -1000.0, "percentile_99_5": 400.0}}
REFERENCE_STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]


def ct_info(num_training: int = 20, channels: dict | None = None) -> DatasetInfo:
    return DatasetInfo("Dataset001_Test", channels or {0: "CT"}, {"background": 0, "lesion": 1}, num_training)


def fingerprint_of(spacing, shape, n: int = 5, props: dict = CT_PROPS) -> dict:
    return {"spacings": [list(spacing)] * n, "shapes_after_crop": [list(shape)] * n,
            "foreground_intensity_properties_per_channel": props, "median_relative_size_after_cropping": 1.0}


def units_of(configuration, num_classes: int = 2) -> int:
    return feature_map_units(configuration.patch_size, configuration.strides, configuration.features_per_stage,
                             num_classes)


# --- target spacing and transpose -------------------------------------------------------------------------------

def test_isotropic_spacing_is_the_median():
    spacings = [[1.0, 0.8, 0.8], [1.2, 0.7, 0.7], [0.9, 0.9, 0.9]]
    shapes = [[200, 300, 300]] * 3
    assert target_spacing(spacings, shapes) == pytest.approx([1.0, 0.8, 0.8])


def test_anisotropic_rule_fires_with_few_slices():
    spacings = [[5.0, 0.7, 0.7], [5.0, 0.8, 0.8], [5.0, 0.75, 0.75], [2.0, 0.7, 0.7], [1.5, 0.8, 0.8]]
    shapes = [[50, 512, 512]] * 5
    expected_z = np.percentile([5.0, 5.0, 5.0, 2.0, 1.5], 10)
    assert target_spacing(spacings, shapes) == pytest.approx([expected_z, 0.75, 0.75])


def test_anisotropic_rule_does_not_fire_with_many_slices():
    spacings = [[5.0, 0.7, 0.7], [5.0, 0.8, 0.8], [5.0, 0.75, 0.75], [2.0, 0.7, 0.7], [1.5, 0.8, 0.8]]
    shapes = [[200, 512, 512]] * 5  # 200 * 3 >= 512: not "few slices"
    assert target_spacing(spacings, shapes) == pytest.approx([5.0, 0.75, 0.75])


def test_anisotropic_target_never_finer_than_other_axes():
    spacings = [[4.0, 1.0, 1.0]] * 8 + [[0.5, 1.0, 1.0]] * 2
    shapes = [[20, 256, 256]] * 10
    assert target_spacing(spacings, shapes)[0] == pytest.approx(1.0 + 1e-5)


def test_transpose_moves_coarsest_axis_first():
    forward, backward = transpose_axes([0.8, 0.8, 3.0])
    assert forward == [2, 0, 1] and backward == [1, 2, 0]
    assert transpose_axes([3.0, 0.8, 0.8]) == ([0, 1, 2], [0, 1, 2])


# --- topology --------------------------------------------------------------------------------------------------

def test_anisotropic_topology_keeps_z_unpooled_first():
    topology = pool_and_conv_props([3.0, 0.8, 0.8], [40, 160, 160])
    assert topology.kernel_sizes[0] == [1, 3, 3]
    assert topology.strides[0] == [1, 1, 1] and topology.strides[1] == [1, 2, 2]
    assert topology.strides[2] == [2, 2, 2]
    assert topology.kernel_sizes[-1] == [3, 3, 3]
    assert len(topology.kernel_sizes) == len(topology.strides)


def test_reference_network_topology_is_reproduced():
    topology = pool_and_conv_props([2.5, 0.79, 0.79], [56, 160, 192])
    assert topology.strides == REFERENCE_STRIDES
    assert topology.kernel_sizes == [[1, 3, 3]] + [[3, 3, 3]] * 5
    assert topology.patch_size == [56, 160, 192]
    assert features_per_stage(topology.n_stages) == [32, 64, 128, 256, 320, 320]


def test_topology_pads_patch_to_divisibility():
    topology = pool_and_conv_props([1.0, 1.0, 1.0], [50, 100, 100])
    assert topology.pools_per_axis == [3, 4, 4]
    assert topology.divisors == [8, 16, 16]
    assert topology.patch_size == [56, 112, 112]


def test_lone_axis_needs_three_min_edges():
    assert pool_and_conv_props([1.0, 1.0, 1.0], [6, 6, 12]).strides == [[1, 1, 1], [1, 1, 2]]
    assert pool_and_conv_props([1.0, 1.0, 1.0], [6, 6, 10]).strides == [[1, 1, 1]]


def test_max_stages_caps_depth():
    assert pool_and_conv_props([1.0, 1.0, 1.0], [128, 128, 128], max_stages=3).n_stages == 3


def test_initial_patch_has_256_cubed_volume_and_is_clipped():
    patch = initial_patch_size([2.0, 1.0, 1.0], [1000, 1000, 1000])
    assert np.prod(patch) == pytest.approx(256 ** 3, rel=0.01)
    assert patch[1] / patch[0] == pytest.approx(2.0, rel=0.01)
    assert initial_patch_size([2.0, 1.0, 1.0], [50, 1000, 120]) == [50, 323, 120]


# --- memory estimate -------------------------------------------------------------------------------------------

def test_feature_map_units_by_hand():
    # two stages: 8^3 then 4^3; features 4, 8; 3 classes
    units = feature_map_units([8, 8, 8], [[1, 1, 1], [2, 2, 2]], [4, 8], num_classes=3)
    encoder = 2 * 4 * 512 + 2 * 8 * 64
    decoder = 3 * 4 * 512 + 3 * 512  # transposed conv + 2 convs, and the head, at the top level
    assert units == encoder + decoder
    assert feature_map_units([8, 8, 8], [[1, 1, 1], [2, 2, 2]], [4, 8], 3, deep_supervision=False) == units


def test_reference_network_units():
    assert feature_map_units([56, 160, 192], REFERENCE_STRIDES, [32, 64, 128, 256, 320, 320], 2) == 461_786_640


# --- planning --------------------------------------------------------------------------------------------------

def test_smaller_memory_gives_smaller_patch_within_budget():
    fingerprint = fingerprint_of([1.0, 0.76, 0.76], [300, 364, 456])
    voxels = []
    for gb in (24, 8, 4, 2):
        configuration = plan_experiment(fingerprint, ct_info(), "D", gpu_memory_gb=gb).configuration("3d_fullres")
        assert units_of(configuration) <= 560e6 * gb / 8
        voxels.append(np.prod(configuration.patch_size))
        pools = [sum(stride[axis] == 2 for stride in configuration.strides) for axis in range(3)]
        assert all(p % 2 ** n == 0 for p, n in zip(configuration.patch_size, pools))
    assert voxels == sorted(voxels, reverse=True) and voxels[0] > voxels[-1]


def test_anisotropic_plan_uses_reference_strides_and_transpose():
    fingerprint = fingerprint_of([0.79, 0.79, 2.5], [380, 460, 110])  # z last in the files: transposed to first
    plans = plan_experiment(fingerprint, ct_info(), "D")
    configuration = plans.configuration("3d_fullres")
    assert plans.transpose_forward == [2, 0, 1] and plans.transpose_backward == [1, 2, 0]
    assert configuration.spacing == pytest.approx([2.5, 0.79, 0.79])
    assert configuration.median_image_size == [110, 380, 460]
    assert configuration.strides == REFERENCE_STRIDES
    assert configuration.kernel_sizes[0] == [1, 3, 3]
    assert configuration.patch_size == [48, 192, 224]
    assert configuration.features_per_stage == [32, 64, 128, 256, 320, 320]
    assert plans.original_median_spacing == pytest.approx([2.5, 0.79, 0.79])
    assert plans.original_median_shape == [110, 380, 460]


def test_batch_size_capped_at_five_percent_of_dataset():
    fingerprint = fingerprint_of([1.0, 1.0, 1.0], [64, 64, 64])
    capped = plan_experiment(fingerprint, ct_info(num_training=200), "D").configuration("3d_fullres")
    assert capped.patch_size == [64, 64, 64]
    assert capped.batch_size == round(64 ** 3 * 200 * 0.05 / 64 ** 3) == 10
    free = plan_experiment(fingerprint, ct_info(num_training=5000), "D").configuration("3d_fullres")
    assert free.batch_size == round(560e6 / units_of(free) * 2) > 10
    tiny = plan_experiment(fingerprint, ct_info(num_training=2), "D").configuration("3d_fullres")
    assert tiny.batch_size == 2  # the cap would give 0; the floor is 2


def test_lowres_created_for_large_images_only():
    big = plan_experiment(fingerprint_of([1.0, 0.76, 0.76], [300, 364, 456]), ct_info(), "D")
    lowres, fullres = big.configuration("3d_lowres"), big.configuration("3d_fullres")
    assert all(lo > fu for lo, fu in zip(lowres.spacing, fullres.spacing))
    assert np.prod(lowres.patch_size) / np.prod(lowres.median_image_size) >= 0.25 - 0.01
    assert np.prod(fullres.median_image_size) / np.prod(lowres.median_image_size) >= 2
    assert lowres.data_identifier == "3d_lowres" and fullres.data_identifier == "3d_fullres"
    small = plan_experiment(fingerprint_of([1.5, 1.5, 1.5], [64, 128, 128]), ct_info(), "D")
    assert list(small.configurations) == ["3d_fullres"]


def test_batch_dice_planned_as_nnunet():
    """Batch Dice for fullres exactly when a lowres stage exists; never for lowres; kept through a save and load."""
    big = plan_experiment(fingerprint_of([1.0, 0.76, 0.76], [300, 364, 456]), ct_info(), "D")
    assert big.configuration("3d_fullres").batch_dice and not big.configuration("3d_lowres").batch_dice
    small = plan_experiment(fingerprint_of([1.5, 1.5, 1.5], [64, 128, 128]), ct_info(), "D")
    assert not small.configuration("3d_fullres").batch_dice
    assert Plans.from_dict(big.to_dict()).configuration("3d_fullres").batch_dice
    legacy = big.to_dict()
    del legacy["configurations"]["3d_fullres"]["batch_dice"]  # plans written before the field existed
    assert not Plans.from_dict(legacy).configuration("3d_fullres").batch_dice


def test_lowres_dropped_when_reduction_below_two():
    # the fullres patch covers a little under 25 % of the median image, so lowres would shrink it by < 2x
    plans = plan_experiment(fingerprint_of([1.0, 1.0, 1.0], [208, 208, 208]), ct_info(), "D")
    fullres = plans.configuration("3d_fullres")
    assert np.prod(fullres.patch_size) / 208 ** 3 < 0.25
    assert "3d_lowres" not in plans.configurations


def test_normalisation_per_channel_name():
    props = {str(c): CT_PROPS["0"] for c in range(4)}
    info = ct_info(channels={0: "CT", 1: "noNorm", 2: "T2", 3: "ct"})
    plans = plan_experiment(fingerprint_of([1.0, 1.0, 1.0], [64, 64, 64], props=props), info, "D")
    schemes = plans.configuration("3d_fullres").normalization
    assert [n.scheme for n in schemes] == ["CT", "none", "zscore", "CT"]
    assert (schemes[0].mean, schemes[0].std, schemes[0].lower, schemes[0].upper) == (-400.0, 350.0, -1000.0, 400.0)
    assert schemes[2].mean is None and schemes[1].lower is None
    assert plans.channel_names == {"0": "CT", "1": "noNorm", "2": "T2", "3": "ct"}


def test_cpu_preset_is_small():
    for spacing, shape in (([1.0, 0.76, 0.76], [300, 364, 456]), ([2.5, 0.79, 0.79], [110, 380, 460]),
                           ([5.0, 0.75, 0.75], [60, 400, 500]), ([1.0, 1.0, 1.0], [160, 160, 160])):
        plans = plan_experiment(fingerprint_of(spacing, shape), ct_info(), "D", preset="cpu")
        assert list(plans.configurations) == ["3d_fullres"]
        configuration = plans.configuration("3d_fullres")
        assert configuration.features_per_stage[0] == 8 and max(configuration.features_per_stage) <= 64
        assert configuration.n_stages <= 5 and configuration.batch_size == 2
        assert 30_000 <= np.prod(configuration.patch_size) <= 80_000
        assert units_of(configuration) <= PRESETS["cpu"].reference_units
        assert configuration.spacing == pytest.approx(spacing)
    with pytest.raises(CovtransferError, match="preset"):
        plan_experiment(fingerprint_of([1, 1, 1], [64, 64, 64]), ct_info(), "D", preset="tiny")


def test_cpu_small_preset_halves_the_patch():
    for spacing, shape in (([4.13, 2.85, 2.85], [50, 104, 118]), ([2.5, 0.79, 0.79], [110, 380, 460])):
        fingerprint = fingerprint_of(spacing, shape)
        cpu = plan_experiment(fingerprint, ct_info(), "D", preset="cpu").configuration("3d_fullres")
        small = plan_experiment(fingerprint, ct_info(), "D", preset="cpu-small").configuration("3d_fullres")
        assert small.features_per_stage == cpu.features_per_stage and small.batch_size == 2
        assert 0.4 <= np.prod(small.patch_size) / np.prod(cpu.patch_size) <= 0.6
        assert units_of(small) <= PRESETS["cpu-small"].reference_units
    demo_like = plan_experiment(fingerprint_of([4.13, 2.85, 2.85], [50, 104, 118]), ct_info(), "D",
                                preset="cpu-small").configuration("3d_fullres")
    assert demo_like.patch_size == [20, 40, 48]


def test_plans_json_round_trip(tmp_path):
    plans = plan_experiment(fingerprint_of([1.0, 0.76, 0.76], [300, 364, 456]), ct_info(), "Dataset001_Test")
    plans.save(tmp_path / "plans.json")
    loaded = Plans.load(tmp_path / "plans.json")
    assert loaded == plans and loaded.to_dict() == plans.to_dict()


def test_plans_from_copies_everything_but_labels_and_name():
    target = plan_experiment(fingerprint_of([2.5, 0.79, 0.79], [110, 380, 460]), ct_info(), "Dataset100_Covid")
    source_info = DatasetInfo("Dataset200_Lung", {0: "CT"}, {"background": 0, "tumour": 1, "effusion": 2}, 63)
    source = plans_from(target, "Dataset200_Lung", source_info)
    assert source.dataset_name == "Dataset200_Lung" and source.plans_from == "Dataset100_Covid"
    assert source.labels == {"background": 0, "tumour": 1, "effusion": 2}
    same = {k: v for k, v in source.to_dict().items() if k not in ("dataset_name", "labels", "plans_from")}
    assert same == {k: v for k, v in target.to_dict().items() if k not in ("dataset_name", "labels", "plans_from")}
    assert target.plans_from is None and target.labels == {"background": 0, "lesion": 1}
    two_channels = DatasetInfo("Dataset300_Two", {0: "CT", 1: "CT"}, {"background": 0, "x": 1}, 4)
    with pytest.raises(CovtransferError, match="Dataset300_Two.*Dataset100_Covid"):
        plans_from(target, "Dataset300_Two", two_channels)


# --- fingerprint -----------------------------------------------------------------------------------------------

def write_case(folder, case_id: str, image: np.ndarray, label: np.ndarray, spacing) -> None:
    geometry = Geometry(tuple(spacing))
    write_image(folder / "imagesTr" / f"{case_id}_0000.nii.gz", image, geometry)
    write_image(folder / "labelsTr" / f"{case_id}.nii.gz", label, geometry)


def test_fingerprint_statistics_match_numpy(tiny_dataset):
    folder, info, cases = tiny_dataset
    budget = 3000
    fingerprint = compute_fingerprint(folder, info, num_processes=1, voxel_budget=budget)
    assert fingerprint["case_ids"] == ["case_0", "case_1", "case_2"]
    assert np.allclose(fingerprint["spacings"], [c[4] for c in cases.values()])
    boxes = [c[2] for c in cases.values()]
    assert fingerprint["shapes_after_crop"] == [[b[1] - b[0], b[3] - b[2], b[5] - b[4]] for b in boxes]
    relative = [np.prod(s) / np.prod(c[3]) for s, c in zip(fingerprint["shapes_after_crop"], cases.values())]
    assert fingerprint["median_relative_size_after_cropping"] == pytest.approx(np.median(relative))

    samples = []
    for image, label, *_ in cases.values():
        foreground = image[label > 0].astype(np.float32)
        samples.append(np.random.RandomState(1234).choice(foreground, budget // 3, replace=True))
    pooled = np.concatenate(samples).astype(np.float64)
    stats = fingerprint["foreground_intensity_properties_per_channel"]["0"]
    assert stats["mean"] == pytest.approx(pooled.mean())
    assert stats["std"] == pytest.approx(pooled.std())
    assert stats["median"] == pytest.approx(np.median(pooled))
    assert stats["percentile_00_5"] == pytest.approx(np.percentile(pooled, 0.5))
    assert stats["percentile_99_5"] == pytest.approx(np.percentile(pooled, 99.5))
    every_foreground = np.concatenate([c[0][c[1] > 0] for c in cases.values()])
    assert every_foreground.min() <= stats["min"] and stats["max"] <= every_foreground.max()


def test_fingerprint_parallel_equals_serial_and_round_trips(tiny_dataset, tmp_path):
    folder, info, _ = tiny_dataset
    serial = compute_fingerprint(folder, info, num_processes=1, voxel_budget=3000)
    parallel = compute_fingerprint(folder, info, num_processes=2, voxel_budget=3000)
    assert parallel == serial
    save_fingerprint(tmp_path / "out" / "dataset_fingerprint.json", serial)
    assert load_fingerprint(tmp_path / "out" / "dataset_fingerprint.json") == serial
    plans = plan_experiment(serial, info, "Dataset001_Test", preset="cpu")
    assert plans.foreground_intensity_properties_per_channel == serial["foreground_intensity_properties_per_channel"]


def test_fingerprint_errors(tiny_dataset, tmp_path):
    folder, info, _ = tiny_dataset
    (folder / "labelsTr" / "case_1.nii.gz").unlink()
    with pytest.raises(CovtransferError, match="case_1"):
        compute_fingerprint(folder, info, num_processes=1, voxel_budget=300)
    (tmp_path / "bad.json").write_text('{"spacings": []}')
    with pytest.raises(CovtransferError, match="shapes_after_crop"):
        load_fingerprint(tmp_path / "bad.json")


def test_fingerprint_without_foreground_is_an_error(tmp_path):
    folder = tmp_path / "Dataset002_Empty"
    info = ct_info(num_training=1)
    info.save(folder)
    write_case(folder, "a", np.ones((4, 5, 6), np.int16), np.zeros((4, 5, 6), np.uint8), (1.0, 1.0, 1.0))
    with pytest.raises(CovtransferError, match="no foreground"):
        compute_fingerprint(folder, info, num_processes=1, voxel_budget=100)
