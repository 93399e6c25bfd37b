"""Preprocessing: normalisation, the per-case preprocessor, storage, the dataset runner and the CLI (resampling:
``test_resampling.py``)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import covtransfer.preprocessing
from covtransfer.cli.common import run_cli
from covtransfer.cli.plan_and_preprocess import main as plan_and_preprocess_main
from covtransfer.data.image_io import Geometry, read_image, write_image
from covtransfer.errors import CovtransferError
from covtransfer.plans import ChannelNormalization, Configuration, Plans, ResamplingSettings
from covtransfer.preprocessing.normalization import normalize
from covtransfer.preprocessing.preprocessor import CasePreprocessor, sample_class_locations
from covtransfer.preprocessing.resampling import compute_new_shape, resample_image, resample_labels
from covtransfer.preprocessing.run import preprocess_dataset
from covtransfer.preprocessing.storage import load_case, save_case
from tiny_data import smooth


CT = ChannelNormalization("CT", mean=50.0, std=100.0, lower=-1000.0, upper=1000.0)


def make_plans(spacing, normalization=(CT,), transpose=(0, 1, 2), labels=None, name="Dataset001_Test"):
    transpose = list(transpose)
    backward = [transpose.index(a) for a in range(3)]
    configuration = Configuration(
        name="3d_fullres", spacing=list(spacing), patch_size=[16, 16, 16], batch_size=2,
        features_per_stage=[8, 16], kernel_sizes=[[3, 3, 3]] * 2, strides=[[1, 1, 1], [2, 2, 2]],
        median_image_size=[20, 20, 20], normalization=list(normalization), resampling=ResamplingSettings(),
        data_identifier="3d_fullres")
    return Plans(dataset_name=name, channel_names={str(i): "CT" for i in range(len(normalization))},
                 labels=labels or {"background": 0, "lesion": 1}, transpose_forward=transpose,
                 transpose_backward=backward, original_median_spacing=list(spacing),
                 original_median_shape=[20, 20, 20], configurations={"3d_fullres": configuration})


def body_case(shape=(12, 28, 30), seed=0):
    """A CT-like case: a cylinder of tissue (zeros in the corners, so -1 appears inside the crop) with a lesion."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    inside = ((y - shape[1] / 2) / (shape[1] / 2)) ** 2 + ((x - shape[2] / 2) / (shape[2] / 2)) ** 2 < 0.9
    image = np.where(inside, 100 + 300 * smooth(shape) + rng.normal(0, 5, shape), 0).astype(np.float32)
    image[:2] = 0  # two empty slices to crop away
    seg = np.zeros(shape, dtype=np.uint8)
    seg[4:9, 10:18, 11:19] = 1
    return image, seg


def write_raw_dataset(root: Path, dataset_id: int, name: str, n_cases: int = 3, channels: int = 1,
                      spacing=(2.0, 1.0, 1.0), splits: bool = False) -> Path:
    folder = root / f"Dataset{dataset_id:03d}_{name}"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    geometry = Geometry(spacing)
    for index in range(n_cases):
        image, seg = body_case(seed=index)
        case = f"{name.lower()}_{index:03d}"
        for channel in range(channels):
            write_image(folder / "imagesTr" / f"{case}_{channel:04d}.nii.gz", image + channel, geometry)
        write_image(folder / "labelsTr" / f"{case}.nii.gz", seg, geometry)
    (folder / "dataset.json").write_text(json.dumps({
        "name": name, "channel_names": {str(c): "CT" for c in range(channels)},
        "labels": {"background": 0, "lesion": 1}, "numTraining": n_cases, "file_ending": ".nii.gz"}))
    if splits:
        (folder / "splits.json").write_text(json.dumps([{"train": ["a"], "val": ["b"]}]))
    return folder


# ---------------------------------------------------------------- normalisation

def test_ct_normalisation_clips_then_standardises_with_dataset_statistics():
    data = np.array([-2000, 0, 100, 5000], dtype=np.int16).reshape(1, 1, 1, 4)
    out = normalize(data, [CT])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), [(-1000 - 50) / 100, -0.5, 0.5, (1000 - 50) / 100], rtol=1e-6)


def test_zscore_is_per_image_none_keeps_values_and_constant_channels_do_not_divide_by_zero():
    data = np.stack([np.arange(8, dtype=np.float32).reshape(2, 2, 2), np.full((2, 2, 2), 3.0, np.float32),
                     np.arange(8, dtype=np.float32).reshape(2, 2, 2)])
    out = normalize(data, [ChannelNormalization("zscore"), ChannelNormalization("zscore"),
                           ChannelNormalization("none")])
    expected = (np.arange(8) - 3.5) / np.std(np.arange(8))
    np.testing.assert_allclose(out[0].ravel(), expected, rtol=1e-6)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_array_equal(out[2], data[2])
    with pytest.raises(CovtransferError, match="2 channel"):
        normalize(data, [CT, CT])


# ---------------------------------------------------------------- per-case preprocessor

def test_preprocessed_case_resampled_back_matches_the_original():
    image, seg = body_case()
    spacing = (2.0, 1.0, 0.9)
    plans = make_plans([1.0, 1.3, 1.5], transpose=(0, 2, 1))
    data, out_seg, props = CasePreprocessor(plans, "3d_fullres").run([image], Geometry(spacing), seg, "case")
    assert data.dtype == np.float32 and out_seg.dtype == np.int8
    assert data.shape[1:] == out_seg.shape[1:] == tuple(props["shape_after_resampling"])
    assert props["original_shape"] == list(image.shape)
    assert props["original_spacing"] == [2.0, 0.9, 1.0] and props["target_spacing"] == [1.0, 1.3, 1.5]
    assert props["bbox"][0] == [2, 12]
    assert props["shape_after_resampling"] == compute_new_shape(props["shape_after_cropping"],
                                                                props["original_spacing"], [1.0, 1.3, 1.5])

    back = resample_image(data, props["target_spacing"], props["original_spacing"], props["shape_after_cropping"])
    canvas = np.zeros([1] + props["shape_before_cropping"], np.float32)
    canvas[(0,) + tuple(slice(a, b) for a, b in props["bbox"])] = back[0]
    restored = canvas[0].transpose(plans.transpose_backward)
    expected = normalize(image[None], [CT])[0]
    body = ndimage.binary_erosion(image != 0, iterations=2)
    error = np.abs(restored - expected)[body]
    assert np.median(error) < 0.05 and error.max() < 0.6  # noise sd is 0.05 after normalisation

    seg_back = resample_labels(out_seg[0], props["target_spacing"], props["original_spacing"],
                               props["shape_after_cropping"])
    lesion = np.zeros(props["shape_before_cropping"], bool)
    lesion[tuple(slice(a, b) for a, b in props["bbox"])] = seg_back == 1
    overlap = lesion.transpose(plans.transpose_backward) & (seg == 1)
    assert 2 * overlap.sum() / (lesion.sum() + (seg == 1).sum()) > 0.85


def test_outside_mask_becomes_minus_one_and_class_locations_are_labelled_and_in_bounds():
    image, seg = body_case()
    plans = make_plans([2.0, 1.0, 1.0])  # the raw spacing: no resampling, so the mask can be checked exactly
    image_before, seg_before = image.copy(), seg.copy()
    data, out_seg, props = CasePreprocessor(plans, "3d_fullres").run([image], Geometry((2.0, 1.0, 1.0)), seg, "c")
    assert np.array_equal(image, image_before) and np.array_equal(seg, seg_before)  # inputs untouched
    crop = tuple(slice(a, b) for a, b in props["bbox"])
    outside = image[crop] == 0
    assert (out_seg[0][outside] == -1).all() and (out_seg[0][~outside] >= 0).all()
    assert outside.any()
    locations = np.asarray(props["class_locations"]["1"])
    assert len(locations) == (out_seg == 1).sum()  # fewer than 10,000 voxels: all of them
    assert (locations >= 0).all() and (locations < np.array(out_seg.shape[1:])).all()
    assert (out_seg[0][tuple(locations.T)] == 1).all()
    inferred, no_seg, _ = CasePreprocessor(plans, "3d_fullres").run([image], Geometry((2.0, 1.0, 1.0)), None, "c")
    assert no_seg is None and np.array_equal(inferred, data)


def test_class_locations_cap_at_ten_thousand_but_keep_one_percent_and_are_seeded():
    seg = np.zeros((60, 200, 200), np.int8)
    seg[:, :100] = 1   # 1.2 million voxels: 1 % is 12,000
    seg[0, 150, 10:40] = 2
    locations = sample_class_locations(seg, [1, 2, 3])
    assert len(locations["1"]) == 12_000 and len(locations["2"]) == 30 and locations["3"] == []
    assert len({tuple(p) for p in locations["1"]}) == 12_000  # without replacement
    assert locations == sample_class_locations(seg, [1, 2, 3])
    middle = np.zeros((20, 100, 100), np.int8)
    middle[:, :50] = 1  # 100,000 voxels: the 10,000 cap applies
    assert len(sample_class_locations(middle, [1])["1"]) == 10_000


def test_run_files_refuses_a_label_whose_shape_differs(tmp_path):
    image, seg = body_case()
    write_image(tmp_path / "c_0000.nii.gz", image, Geometry((2.0, 1.0, 1.0)))
    write_image(tmp_path / "c.nii.gz", seg[:-1], Geometry((2.0, 1.0, 1.0)))
    preprocessor = CasePreprocessor(make_plans([2.0, 1.0, 1.0]), "3d_fullres")
    with pytest.raises(CovtransferError, match=r"c\.nii\.gz: label shape"):
        preprocessor.run_files([tmp_path / "c_0000.nii.gz"], tmp_path / "c.nii.gz")


# ---------------------------------------------------------------- storage and the dataset runner

def test_storage_round_trip_compresses_only_when_it_pays(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((2, 20, 30, 40)).astype(np.float32)
    seg = np.zeros((1, 20, 30, 40), np.int8)
    seg[0, 5:9] = 1
    properties = {"case_id": "x", "class_locations": {"1": [[5, 0, 0], [8, 29, 39]]}, "spacing": [1.0, 2.0, 3.0]}
    (tmp_path / "x.npy").write_bytes(b"stale")
    save_case(tmp_path, "x", data, seg, properties)
    loaded_data, loaded_seg, loaded_props = load_case(tmp_path, "x")
    assert np.array_equal(loaded_data, data) and loaded_data.dtype == np.float32
    assert np.array_equal(loaded_seg, seg) and loaded_seg.dtype == np.int8
    assert loaded_props == properties and not (tmp_path / "x.npy").exists()
    with zipfile.ZipFile(tmp_path / "x.npz") as archive:
        kinds = {info.filename: info.compress_type for info in archive.infolist()}
    assert kinds == {"data.npy": zipfile.ZIP_STORED, "seg.npy": zipfile.ZIP_DEFLATED}
    with np.load(tmp_path / "x.npz") as archive:  # a plain NumPy archive
        assert set(archive.files) == {"data", "seg"}
    with pytest.raises(CovtransferError, match="missing"):
        load_case(tmp_path, "y")


def test_dataset_runner_writes_every_case_and_resumes(tmp_path):
    raw = write_raw_dataset(tmp_path / "raw", 1, "Test", splits=True)
    out = tmp_path / "pre" / raw.name
    plans = make_plans([2.0, 1.5, 1.5], name=raw.name)
    written = preprocess_dataset(raw, out, plans, ["3d_fullres"], num_processes=1)
    assert written == ["test_000", "test_001", "test_002"]
    folder = out / "3d_fullres"
    expected = sorted(f"test_00{i}.{ending}" for i in range(3) for ending in ("json", "npz"))
    assert sorted(p.name for p in folder.iterdir()) == expected
    assert sorted(p.name for p in (out / "gt_segmentations").iterdir()) == [f"test_00{i}.nii.gz" for i in range(3)]
    assert (out / "dataset.json").read_text() == (raw / "dataset.json").read_text()
    assert (out / "splits.json").read_text() == (raw / "splits.json").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    assert preprocess_dataset(raw, out, plans, ["3d_fullres"], num_processes=1) == []
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    (folder / "test_001.json").unlink()  # an interrupted case is redone
    assert preprocess_dataset(raw, out, plans, ["3d_fullres"], num_processes=1) == ["test_001"]
    assert preprocess_dataset(raw, out, plans, ["3d_fullres"], 1, overwrite=True) == written
    assert all(p.stat().st_mtime_ns != stamps[p.name] for p in folder.iterdir())


def test_worker_errors_name_the_case_file_in_parallel_runs(tmp_path):
    raw = write_raw_dataset(tmp_path / "raw", 1, "Test", n_cases=2)
    broken = raw / "imagesTr" / "test_001_0000.nii.gz"
    broken.write_bytes(broken.read_bytes()[:200])
    plans = make_plans([2.0, 1.0, 1.0], name=raw.name)
    with pytest.raises(CovtransferError, match="test_001_0000.nii.gz"):
        preprocess_dataset(raw, tmp_path / "pre", plans, ["3d_fullres"], num_processes=2)
    folder = tmp_path / "pre" / "3d_fullres"
    assert not (folder / "test_001.npz").exists() and not (folder / "test_001.json").exists()


# ---------------------------------------------------------------- command line

def roots_args(tmp_path):
    """Data roots, and a small fingerprint budget: nnU-Net's 1e8 samples take seconds even for tiny data, and 1e5
    give the same statistics here."""
    return ["--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pre"), "--fingerprint-voxels", "100000"]


def test_cli_refuses_a_broken_dataset_and_writes_nothing(tmp_path):
    raw = write_raw_dataset(tmp_path / "raw", 1, "Test")
    (raw / "labelsTr" / "test_002.nii.gz").unlink()
    with pytest.raises(CovtransferError) as info:
        plan_and_preprocess_main(["-d", "1", "-np", "1", *roots_args(tmp_path)])
    [line] = str(info.value).splitlines()  # one problem: one line, naming the file
    assert "labelsTr/test_002.nii.gz: missing" in line and line.endswith("(nothing written; see covtransfer_verify)")
    assert not (tmp_path / "pre").exists()
    assert run_cli(plan_and_preprocess_main, ["-d", "1", "-np", "1", *roots_args(tmp_path)]) == 1


def test_cli_plans_from_shares_the_target_plans_and_refuses_bad_targets(tmp_path):
    write_raw_dataset(tmp_path / "raw", 1, "Target", n_cases=2, spacing=(2.0, 1.0, 1.0))
    write_raw_dataset(tmp_path / "raw", 2, "Source", n_cases=2, spacing=(1.5, 0.8, 0.8))
    write_raw_dataset(tmp_path / "raw", 3, "TwoChannels", n_cases=2, channels=2)
    args = ["-np", "1", "--preset", "cpu", *roots_args(tmp_path)]
    with pytest.raises(CovtransferError, match="plan the target first"):
        plan_and_preprocess_main(["-d", "2", "--plans-from", "1", *args])
    assert not (tmp_path / "pre" / "Dataset002_Source").exists()

    assert plan_and_preprocess_main(["-d", "1", *args]) == 0
    assert plan_and_preprocess_main(["-d", "2", "--plans-from", "1", *args]) == 0
    target = Plans.load(tmp_path / "pre" / "Dataset001_Target" / "plans.json")
    source = Plans.load(tmp_path / "pre" / "Dataset002_Source" / "plans.json")
    assert source.plans_from == "Dataset001_Target" and source.dataset_name == "Dataset002_Source"
    for name, configuration in target.configurations.items():
        copied = source.configurations[name]
        assert copied.spacing == configuration.spacing and copied.patch_size == configuration.patch_size
        assert copied.normalization == configuration.normalization and copied.strides == configuration.strides
    _, _, props = load_case(tmp_path / "pre" / "Dataset002_Source" / "3d_fullres", "source_000")
    assert props["target_spacing"] == target.configurations["3d_fullres"].spacing
    assert (tmp_path / "pre" / "Dataset002_Source" / "dataset_fingerprint.json").is_file()

    with pytest.raises(CovtransferError, match="channel"):
        plan_and_preprocess_main(["-d", "3", "--plans-from", "1", *args])
    assert not (tmp_path / "pre" / "Dataset003_TwoChannels").exists()


def test_cli_plans_a_listed_target_first_and_redoes_cases_when_the_plans_change(tmp_path, capsys):
    write_raw_dataset(tmp_path / "raw", 1, "Target", n_cases=2)
    write_raw_dataset(tmp_path / "raw", 2, "Source", n_cases=2, spacing=(1.5, 0.8, 0.8))
    args = ["-np", "1", "--preset", "cpu", *roots_args(tmp_path)]
    assert plan_and_preprocess_main(["-d", "2", "1", "--plans-from", "1", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Dataset001_Target: ") and lines[2].startswith("Dataset002_Source (plans from "
                                                                              "Dataset001_Target)")
    source = tmp_path / "pre" / "Dataset002_Source"
    case = source / "3d_fullres" / "source_000.npz"
    stamp = case.stat().st_mtime_ns
    assert plan_and_preprocess_main(["-d", "2", "--plans-from", "1", *args]) == 0
    assert case.stat().st_mtime_ns == stamp  # same plans: finished cases are kept
    plans = Plans.load(source / "plans.json")
    plans.configurations["3d_fullres"].spacing = [3.0, 2.0, 2.0]
    plans.save(source / "plans.json")  # the next run's plans differ from what made the stored cases
    assert plan_and_preprocess_main(["-d", "2", "--plans-from", "1", "--plan-only", *args]) == 0
    assert not case.with_suffix(".json").exists()  # invalidated, though only planning ran
    assert plan_and_preprocess_main(["-d", "2", "--plans-from", "1", *args]) == 0
    assert case.stat().st_mtime_ns != stamp and case.with_suffix(".json").exists()


def test_preprocessing_imports_no_planner():
    """Orchestration (covtransfer.workflow) sits above planning and preprocessing: importing every preprocessing
    module in a fresh interpreter loads no planning module, and none names one in its imports."""
    script = ("import importlib, pkgutil, sys\n"
              "import covtransfer.preprocessing as package\n"
              "for module in pkgutil.iter_modules(package.__path__):\n"
              "    importlib.import_module(f'covtransfer.preprocessing.{module.name}')\n"
              "print(' '.join(sorted(name for name in sys.modules if name.startswith('covtransfer.'))))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert "covtransfer.preprocessing.storage" in loaded
    assert not [name for name in loaded if name.startswith("covtransfer.planning")]
    package = Path(covtransfer.preprocessing.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.startswith("covtransfer.planning")], f"{path.name} imports {names}"


def test_cli_refuses_a_cm_spacing_unless_allowed(tmp_path):
    raw = write_raw_dataset(tmp_path / "raw", 1, "Test")
    for path in (raw / "imagesTr" / "test_000_0000.nii.gz", raw / "labelsTr" / "test_000.nii.gz"):
        array, geometry = read_image(path)
        write_image(path, array, Geometry((50.0, 50.0, 50.0), geometry.origin, geometry.direction))
    with pytest.raises(CovtransferError, match="spacing 50.0 mm is above 20.0 mm"):
        plan_and_preprocess_main(["-d", "1", "-np", "1", *roots_args(tmp_path)])
    assert not (tmp_path / "pre").exists()
    assert plan_and_preprocess_main(["-d", "1", "-np", "1", "--plan-only", "--allow-spacing",
                                     *roots_args(tmp_path)]) == 0
