"""The core data layer: roots and dataset lookup, atomic writes, dataset.json, cropping, typed plans (image I/O:
``test_image_io.py``)."""

import json
from pathlib import Path

import numpy as np
import pytest

from covtransfer.atomic import atomic_directory, atomic_path, write_json, write_text
from covtransfer.config import DEFAULT_BASE, dataset_name, find_dataset, parse_dataset_id, resolve_roots
from covtransfer.data.cropping import bounding_box, crop_to_box, crop_to_nonzero, nonzero_mask
from covtransfer.data.dataset_json import DatasetInfo, list_cases, load_dataset_json
from covtransfer.errors import CovtransferError
from covtransfer.plans import ChannelNormalization, Configuration, Plans, ResamplingSettings


# --------------------------------------------------------------------------------------------------- config

ENV = ("COVTRANSFER_RAW", "COVTRANSFER_PREPROCESSED", "COVTRANSFER_RESULTS")


def test_resolve_roots_defaults(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    roots = resolve_roots()
    assert (roots.raw, roots.preprocessed, roots.results) == (
        DEFAULT_BASE / "raw", DEFAULT_BASE / "preprocessed", DEFAULT_BASE / "results")
    assert DEFAULT_BASE == Path("covtransfer_data")


def test_resolve_roots_flag_beats_env_beats_default(monkeypatch, tmp_path):
    monkeypatch.setenv("COVTRANSFER_RAW", str(tmp_path / "env_raw"))
    monkeypatch.setenv("COVTRANSFER_PREPROCESSED", str(tmp_path / "env_pre"))
    monkeypatch.setenv("COVTRANSFER_RESULTS", "")
    roots = resolve_roots(raw=tmp_path / "flag_raw")
    assert roots.raw == tmp_path / "flag_raw"
    assert roots.preprocessed == tmp_path / "env_pre"
    assert roots.results == DEFAULT_BASE / "results"


def test_dataset_name_and_id():
    assert dataset_name(1, "Covid") == "Dataset001_Covid"
    assert dataset_name(123, "Lung-GTV_2") == "Dataset123_Lung-GTV_2"
    assert parse_dataset_id("Dataset042_Effusion") == 42
    assert parse_dataset_id("Task06_Lung") is None
    assert parse_dataset_id("Dataset42_X") is None
    with pytest.raises(CovtransferError, match="out of range"):
        dataset_name(1000, "X")
    with pytest.raises(CovtransferError, match="may hold only"):
        dataset_name(1, "bad name")


@pytest.fixture
def raw_root(tmp_path: Path) -> Path:
    for name in ("Dataset001_Covid", "Dataset002_Lung", "Dataset003_A", "Dataset003_B"):
        (tmp_path / name).mkdir()
    (tmp_path / "Dataset004_file").write_text("not a folder")
    return tmp_path


@pytest.mark.parametrize("key", [1, "1", "001", "Dataset001_Covid"])
def test_find_dataset(raw_root, key):
    assert find_dataset(raw_root, key) == raw_root / "Dataset001_Covid"


@pytest.mark.parametrize("key, fragment", [
    (9, "no dataset with id 9 (expected a folder Dataset009_<Name>; found Dataset001_Covid, Dataset002_Lung, "
        "Dataset003_A, Dataset003_B)"),
    ("Dataset009_Missing", "Dataset009_Missing: no such dataset folder (found Dataset001_Covid, Dataset002_Lung, "
                           "Dataset003_A, Dataset003_B)"),
    (4, "no dataset with id 4"),
    ("003", "dataset id 3 is ambiguous (Dataset003_A, Dataset003_B); use the full name"),
])
def test_find_dataset_errors(raw_root, key, fragment):
    with pytest.raises(CovtransferError) as info:
        find_dataset(raw_root, key)
    assert fragment in str(info.value)
    assert str(raw_root) in str(info.value)


def test_find_dataset_missing_root(tmp_path):
    with pytest.raises(CovtransferError, match="no dataset with id 1 .*; the folder does not exist"):
        find_dataset(tmp_path / "nowhere", 1)
    with pytest.raises(CovtransferError, match="no dataset with id 1 .*; it holds no DatasetNNN_<Name> folder"):
        find_dataset(tmp_path, 1)


# --------------------------------------------------------------------------------------------------- atomic

def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_success_keeps_ending_and_leaves_only_final(tmp_path):
    target = tmp_path / "sub" / "image.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp != target
        tmp.write_bytes(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new"
    assert _names(target.parent) == ["image.nii.gz"]


def test_atomic_path_error_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "plans.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["plans.json"]


def test_atomic_path_error_without_old_file_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "x.npz") as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert _names(tmp_path) == []


def test_write_json_and_text(tmp_path):
    write_json(tmp_path / "a.json", {"b": [1, 2.5, None]})
    write_text(tmp_path / "c.txt", "hello\n")
    assert json.loads((tmp_path / "a.json").read_text()) == {"b": [1, 2.5, None]}
    assert (tmp_path / "c.txt").read_text() == "hello\n"
    assert _names(tmp_path) == ["a.json", "c.txt"]


def test_atomic_directory_success(tmp_path):
    target = tmp_path / "3d_fullres"
    with atomic_directory(target) as tmp:
        (tmp / "case.npz").write_bytes(b"x")
        assert not target.exists()
    assert _names(target) == ["case.npz"]
    assert _names(tmp_path) == ["3d_fullres"]


def test_atomic_directory_error_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "half.npz").write_bytes(b"x")
            raise ValueError
    assert _names(tmp_path) == []


def test_atomic_directory_existing(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FileExistsError):
        with atomic_directory(target) as tmp:
            (tmp / "new.txt").write_text("new")
    assert _names(target) == ["old.txt"] and _names(tmp_path) == ["out"]
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _names(target) == ["new.txt"] and _names(tmp_path) == ["out"]


# --------------------------------------------------------------------------------------------------- dataset.json

V2 = {"name": "Covid", "channel_names": {"0": "CT"}, "labels": {"background": 0, "infection": 1},
      "numTraining": 20, "file_ending": ".nii.gz", "reference": "Ma et al."}


def _write(folder: Path, content) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def test_load_v2_dataset_json(tmp_path):
    info = load_dataset_json(_write(tmp_path / "Dataset001_Covid", V2))
    assert info.name == "Covid" and info.channel_names == {0: "CT"} and info.num_channels == 1
    assert info.labels == {"background": 0, "infection": 1}
    assert info.label_values == [0, 1] and info.foreground_labels == [1]
    assert info.num_training == 20 and info.file_ending == ".nii.gz"
    assert info.extra == {"reference": "Ma et al."}
    info.save(tmp_path / "copy")
    assert load_dataset_json(tmp_path / "copy") == info
    assert json.loads((tmp_path / "copy" / "dataset.json").read_text()) == V2


def test_load_msd_dataset_json(tmp_path):
    msd = {"name": "Lung", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "cancer"},
           "training": [{"image": f"./imagesTr/lung_{i:03d}.nii.gz", "label": f"./labelsTr/lung_{i:03d}.nii.gz"}
                        for i in range(3)], "test": []}
    info = load_dataset_json(_write(tmp_path / "Task06_Lung", msd))
    assert info.channel_names == {0: "CT"}
    assert info.labels == {"background": 0, "cancer": 1}
    assert info.num_training == 3 and info.file_ending == ".nii.gz"
    assert info.to_dict()["channel_names"] == {"0": "CT"} and info.to_dict()["labels"] == {"background": 0,
                                                                                          "cancer": 1}


def test_dataset_json_name_defaults_to_folder(tmp_path):
    content = {k: v for k, v in V2.items() if k != "name"}
    assert load_dataset_json(_write(tmp_path / "Dataset007_X", content)).name == "Dataset007_X"


@pytest.mark.parametrize("content, fragment", [
    ("{broken", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ({**V2, "channel_names": None}, "'channel_names' (or MSD 'modality') must be a non-empty mapping"),
    ({**V2, "channel_names": {"0": "CT", "2": "PET"}}, "channel indices must be 0..1"),
    ({**V2, "channel_names": {"zero": "CT"}}, "channel indices must be integers"),
    ({**V2, "labels": {}}, "'labels' must be a non-empty mapping"),
    ({**V2, "labels": {"lesion": 1}}, "must declare background as 0"),
    ({**V2, "labels": {"background": 0, "a": 1, "b": 1}}, "two labels share one value"),
    ({**V2, "labels": {"background": 0, "a": -2}}, "must be non-negative"),
    ({**V2, "labels": {"background": 0, "lungs": [1, 2]}}, "region labels"),
    ({**V2, "labels": {"background": 0, "a": "one"}}, "non-integer value 'one'"),
    ({k: v for k, v in V2.items() if k != "numTraining"}, "'numTraining' must be a non-negative integer"),
    ({**V2, "numTraining": -1}, "'numTraining' must be a non-negative integer, got -1"),
    ({**V2, "file_ending": "nii.gz"}, "'file_ending' must look like '.nii.gz'"),
])
def test_invalid_dataset_json(tmp_path, content, fragment):
    folder = _write(tmp_path / "Dataset001_Bad", content)
    with pytest.raises(CovtransferError) as info:
        load_dataset_json(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / 'dataset.json'}: ") and fragment in message
    assert "\n" not in message


def test_missing_dataset_json(tmp_path):
    with pytest.raises(CovtransferError, match="dataset.json: file not found"):
        load_dataset_json(tmp_path)


def test_list_cases_multi_channel(tmp_path):
    info = DatasetInfo("X", {0: "CT", 1: "PET"}, {"background": 0, "lesion": 1}, 2)
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for name in ("b_0001.nii.gz", "b_0000.nii.gz", "a_1_0000.nii.gz", "a_1_0001.nii.gz", "notes.txt", "c.nii.gz",
                 "d_0000.nii"):
        (tmp_path / "imagesTr" / name).write_bytes(b"")
    (tmp_path / "labelsTr" / "a_1.nii.gz").write_bytes(b"")
    cases = list_cases(tmp_path, info)
    assert [c.case_id for c in cases] == ["a_1", "b"]
    assert [p.name for p in cases[0].images] == ["a_1_0000.nii.gz", "a_1_0001.nii.gz"]
    assert [p.name for p in cases[1].images] == ["b_0000.nii.gz", "b_0001.nii.gz"]
    assert cases[0].label == tmp_path / "labelsTr" / "a_1.nii.gz" and cases[1].label is None
    assert list_cases(tmp_path, info, subset="Ts") == []


# --------------------------------------------------------------------------------------------------- cropping

def test_bounding_box_and_crop_on_hand_made_array():
    data = np.zeros((2, 8, 9, 10), np.float32)
    data[0, 2:5, 3:4, 1:7] = 1.0
    data[1, 6, 0, 9] = -3.0
    seg = np.zeros((1, 8, 9, 10), np.int8)
    seg[0, 3, 3, 2] = 1
    mask = nonzero_mask(data)
    assert mask.shape == (8, 9, 10) and mask.sum() == 3 * 1 * 6 + 1
    assert bounding_box(mask) == [[2, 7], [0, 4], [1, 10]]
    cropped, cropped_seg, box, cropped_mask = crop_to_nonzero(data, seg)
    assert box == [[2, 7], [0, 4], [1, 10]]
    assert cropped.shape == (2, 5, 4, 9) and cropped_seg.shape == (1, 5, 4, 9) and cropped_mask.shape == (5, 4, 9)
    assert cropped[1, 4, 0, 8] == -3.0 and cropped_seg[0, 1, 3, 1] == 1
    assert crop_to_nonzero(data)[1] is None


def test_nonzero_mask_fills_holes_and_empty_box_is_everything():
    data = np.zeros((1, 7, 7, 7))
    data[0, 1:6, 1:6, 1:6] = 5.0
    data[0, 3, 3, 3] = 0.0
    assert nonzero_mask(data)[3, 3, 3]
    assert bounding_box(np.zeros((3, 4, 5), bool)) == [[0, 3], [0, 4], [0, 5]]
    assert crop_to_box(np.arange(24).reshape(2, 3, 4), [[1, 3], [0, 2]]).tolist() == [[[4, 5], [8, 9]],
                                                                                       [[16, 17], [20, 21]]]


# --------------------------------------------------------------------------------------------------- plans

def _plans() -> Plans:
    config = Configuration(
        name="3d_fullres", spacing=[2.5, 0.7, 0.7], patch_size=[32, 64, 64], batch_size=2,
        features_per_stage=[32, 64, 128], kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], median_image_size=[60, 200, 200],
        normalization=[ChannelNormalization("CT", 40.0, 300.0, -1000.0, 800.0)],
        resampling=ResamplingSettings(order_z=1), data_identifier="3d_fullres")
    return Plans(dataset_name="Dataset001_Covid", channel_names={"0": "CT"}, labels={"background": 0, "lesion": 1},
                 transpose_forward=[0, 1, 2], transpose_backward=[0, 1, 2], original_median_spacing=[2.5, 0.7, 0.7],
                 original_median_shape=[60, 200, 200], configurations={"3d_fullres": config},
                 foreground_intensity_properties_per_channel={"0": {"mean": 40.0, "std": 300.0}},
                 plans_from="Dataset002_Lung")


def test_plans_dict_round_trip():
    plans = _plans()
    d = json.loads(json.dumps(plans.to_dict()))
    assert d["configurations"]["3d_fullres"]["n_stages"] == 3
    assert d["configurations"]["3d_fullres"]["normalization"][0] == {"scheme": "CT", "mean": 40.0, "std": 300.0,
                                                                    "lower": -1000.0, "upper": 800.0}
    again = Plans.from_dict(d)
    assert again == plans
    assert isinstance(again.configuration("3d_fullres").resampling, ResamplingSettings)
    assert again.configuration("3d_fullres").n_stages == 3 and again.num_input_channels == 1


def test_plans_save_load(tmp_path):
    plans = _plans()
    plans.save(tmp_path / "plans.json")
    assert Plans.load(tmp_path / "plans.json") == plans
    assert _names(tmp_path) == ["plans.json"]


def test_plans_errors(tmp_path):
    with pytest.raises(CovtransferError, match="no plans"):
        Plans.load(tmp_path / "plans.json")
    (tmp_path / "plans.json").write_text('{"dataset_name": "x"}')
    with pytest.raises(CovtransferError, match="plans.json: not a valid plans file"):
        Plans.load(tmp_path / "plans.json")
    with pytest.raises(CovtransferError, match=r"no configuration '2d' \(planned: 3d_fullres\)"):
        _plans().configuration("2d")
