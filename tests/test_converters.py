"""The public-dataset converters on tiny synthetic copies of each release layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from covtransfer.cli import convert as convert_cli
from covtransfer.cli.common import run_cli
from covtransfer.datasets.converters import convert
from covtransfer.datasets.converters.covid19ctseg import OFFICIAL_TRAINING, case_id_from_name
from covtransfer.errors import CovtransferError
from fake_public_layouts import (COVID_CASES, DIRECTION, ORIGIN, SHAPE, SPACING_ZYX, write_covid19ctseg,
                                 write_msd_lung, write_nsclc_pe, write_structseg_gtv, write_volume)

FEW_COVID = ("coronacases_001", "coronacases_002", "radiopaedia_29_86491_1")


def read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def assert_fake_geometry(image: sitk.Image) -> None:
    assert np.allclose(image.GetSpacing(), SPACING_ZYX[::-1])
    assert np.allclose(image.GetOrigin(), ORIGIN)
    assert np.allclose(image.GetDirection(), DIRECTION)


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.iterdir()) if raw.exists() else []


@pytest.mark.parametrize("name, expected", [
    ("coronacases_org_001.nii.gz", "coronacases_001"),
    ("coronacases_001.nii.gz", "coronacases_001"),
    ("coronacases_001_0000.nii.gz", "coronacases_001"),
    ("radiopaedia_org_covid-19-pneumonia-29_86491_1-dcm.nii.gz", "radiopaedia_29_86491_1"),
    ("radiopaedia_29_86491_1_0000.nii.gz", "radiopaedia_29_86491_1"),
    ("radiopaedia_4_85506_1.nii", "radiopaedia_4_85506_1"),
    ("notes.txt", None),
])
def test_covid_case_ids_from_mirror_file_names(name, expected):
    assert case_id_from_name(name) == expected


def test_covid_infection_conversion_remaps_windowed_cases_and_keeps_geometry(tmp_path):
    src, raw = tmp_path / "src", tmp_path / "raw"
    written = write_covid19ctseg(src, FEW_COVID)
    before = tree_digest(src)
    report = convert("covid19ctseg", src, 501, raw_root=raw)

    folder = raw / "Dataset501_COVID19CTSeg"
    assert report.dataset_folder == folder
    assert report.cases == sorted(FEW_COVID)
    assert report.windowed_cases == ["radiopaedia_29_86491_1"]
    assert report.unpaired == [] and not report.splits_written
    assert not (folder / "splits.json").exists()
    info = json.loads((folder / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "CT"} and info["labels"] == {"background": 0, "infection": 1}
    assert info["numTraining"] == 3 and info["file_ending"] == ".nii.gz"
    assert {"description", "reference", "licence"} <= set(info)
    assert info["windowed_cases_remapped_to_hu"] == ["radiopaedia_29_86491_1"]

    windowed, image = read(folder / "imagesTr" / "radiopaedia_29_86491_1_0000.nii.gz")
    source = written["radiopaedia_29_86491_1"]["image"].astype(np.float64)
    assert windowed.dtype == np.float32
    np.testing.assert_allclose(windowed, source / 255 * 1500 - 1250, atol=1e-3)
    assert windowed.min() == pytest.approx(-1250) and windowed.max() == pytest.approx(250)
    assert_fake_geometry(image)
    hu, _ = read(folder / "imagesTr" / "coronacases_002_0000.nii.gz")
    np.testing.assert_array_equal(hu, written["coronacases_002"]["image"])
    for case in FEW_COVID:
        label, label_image = read(folder / "labelsTr" / f"{case}.nii.gz")
        np.testing.assert_array_equal(label, written[case]["infection"])
        assert_fake_geometry(label_image)
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == sorted(f"{c}_0000.nii.gz" for c in FEW_COVID)
    assert tree_digest(src) == before
    assert leftovers(raw) == ["Dataset501_COVID19CTSeg"]


def test_covid_lung_infection_labels_declared_and_copied(tmp_path):
    written = write_covid19ctseg(tmp_path / "src", FEW_COVID[:2], style="plain")
    report = convert("covid19ctseg", tmp_path / "src", 502, raw_root=tmp_path / "raw", labels="lung-infection")
    info = json.loads((report.dataset_folder / "dataset.json").read_text())
    assert report.dataset_folder.name == "Dataset502_COVID19CTSegLungInfection"
    assert info["labels"] == {"background": 0, "left_lung": 1, "right_lung": 2, "infection": 3}
    label, _ = read(report.dataset_folder / "labelsTr" / "coronacases_001.nii.gz")
    np.testing.assert_array_equal(label, written["coronacases_001"]["lung_infection"])
    assert set(np.unique(label)) == {0, 1, 2, 3}
    assert report.windowed_cases == []


def test_covid_pairs_suffixed_names_and_reports_unpaired_files(tmp_path):
    src = tmp_path / "src"
    write_covid19ctseg(src, ("coronacases_003",), style="nnunet")
    write_covid19ctseg(src, ("radiopaedia_7_85703_0",), style="org")
    write_volume(src / "COVID-19-CT-Seg_20cases" / "coronacases_org_009.nii.gz", np.zeros(SHAPE, np.int16) - 1000)
    write_volume(src / "Infection_Mask" / "radiopaedia_40_86625_0.nii.gz", np.zeros(SHAPE, np.uint8))
    report = convert("covid19ctseg", src, 3, raw_root=tmp_path / "raw")
    assert report.cases == ["coronacases_003", "radiopaedia_7_85703_0"]
    assert sorted(p.name for p in report.unpaired) == ["coronacases_org_009.nii.gz", "radiopaedia_40_86625_0.nii.gz"]
    assert "coronacases_org_009.nii.gz" in report.summary() and "radiopaedia_40_86625_0.nii.gz" in report.summary()


def test_covid_official_split_written_only_with_all_20_cases(tmp_path):
    write_covid19ctseg(tmp_path / "src", COVID_CASES)
    report = convert("covid19ctseg", tmp_path / "src", 4, raw_root=tmp_path / "raw")
    assert report.splits_written and len(report.cases) == 20 and len(report.windowed_cases) == 10
    assert all(case.startswith("radiopaedia") for case in report.windowed_cases)
    splits = json.loads((report.dataset_folder / "splits.json").read_text())
    assert len(splits) == 5
    assert splits[0]["train"] == ["coronacases_007", "coronacases_008", "radiopaedia_36_86526_0",
                                  "radiopaedia_4_85506_1"]
    for fold, split in enumerate(splits):
        assert split["train"] == list(OFFICIAL_TRAINING[fold])
        assert len(split["val"]) == 16 and split["val"] == split["test"]
        assert sorted(split["train"] + split["val"]) == sorted(COVID_CASES)
    assert sorted(c for s in splits for c in s["train"]) == sorted(COVID_CASES)


def test_label_shape_mismatch_names_file_and_leaves_nothing(tmp_path):
    src, raw = tmp_path / "src", tmp_path / "raw"
    write_covid19ctseg(src, FEW_COVID)
    bad = write_volume(src / "Infection_Mask" / "radiopaedia_29_86491_1.nii.gz", np.zeros((8, 16, 15), np.uint8))
    with pytest.raises(CovtransferError, match=r"radiopaedia_29_86491_1\.nii\.gz: label shape \(8, 16, 15\)") as exc:
        convert("covid19ctseg", src, 5, raw_root=raw)
    assert str(bad) in str(exc.value)
    assert leftovers(raw) == []


def test_label_geometry_mismatch_names_file(tmp_path):
    src = tmp_path / "src"
    write_structseg_gtv(src, numbers=(1, 2))
    bad = write_volume(src / "Lung_GTV" / "2" / "label.nii.gz", np.zeros(SHAPE, np.uint8), origin=(0.0, 0.0, 0.0))
    with pytest.raises(CovtransferError, match="origin") as exc:
        convert("structseg-gtv", src, 6, raw_root=tmp_path / "raw")
    assert str(exc.value).startswith(str(bad))
    assert leftovers(tmp_path / "raw") == []


def test_unexpected_label_value_names_file(tmp_path):
    src = tmp_path / "src"
    write_covid19ctseg(src, FEW_COVID[:1])
    mask = np.zeros(SHAPE, np.uint8)
    mask[0, 0, 0] = 3
    bad = write_volume(src / "Infection_Mask" / "coronacases_001.nii.gz", mask)
    with pytest.raises(CovtransferError, match=r"unexpected label value\(s\) \[3\]") as exc:
        convert("covid19ctseg", src, 7, raw_root=tmp_path / "raw")
    assert str(exc.value).startswith(str(bad))


def test_existing_dataset_refused_without_overwrite_and_replaced_with_it(tmp_path):
    src, raw = tmp_path / "src", tmp_path / "raw"
    write_structseg_gtv(src, numbers=(1,))
    convert("structseg-gtv", src, 8, raw_root=raw)
    write_structseg_gtv(src, numbers=(2,))
    with pytest.raises(CovtransferError, match="already exists"):
        convert("structseg-gtv", src, 8, raw_root=raw)
    report = convert("structseg-gtv", src, 8, raw_root=raw, overwrite=True)
    assert report.cases == ["structseg_01", "structseg_02"]
    assert json.loads((report.dataset_folder / "dataset.json").read_text())["numTraining"] == 2
    with pytest.raises(CovtransferError, match="already used by Dataset008_StructSegGTV"):
        convert("structseg-gtv", src, 8, name="Other", raw_root=raw)
    kept = tree_digest(report.dataset_folder)
    write_volume(src / "Lung_GTV" / "2" / "label.nii.gz", np.zeros((4, 16, 16), np.uint8))
    with pytest.raises(CovtransferError, match="label shape"):
        convert("structseg-gtv", src, 8, raw_root=raw, overwrite=True)
    assert tree_digest(report.dataset_folder) == kept
    assert leftovers(raw) == ["Dataset008_StructSegGTV"]


def test_msd_lung_with_benchmark_validation_fold_and_test_images(tmp_path):
    task = write_msd_lung(tmp_path / "src", train_numbers=(1, 3, 4, 25), test_numbers=(2,))
    report = convert("msd-lung", tmp_path / "src", 10, raw_root=tmp_path / "raw")
    folder = report.dataset_folder
    assert folder.name == "Dataset010_MSDLung"
    assert report.cases == ["lung_001", "lung_003", "lung_004", "lung_025"] and report.test_cases == ["lung_002"]
    assert report.unpaired == []
    splits = json.loads((folder / "splits.json").read_text())
    assert splits == [{"train": ["lung_001", "lung_004"], "val": ["lung_003", "lung_025"]}]
    info = json.loads((folder / "dataset.json").read_text())
    assert info["labels"] == {"background": 0, "lesion": 1} and info["numTraining"] == 4
    assert "lung_003" in info["description"] and info["licence"] == "CC-BY-SA 4.0"
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["lung_002_0000.nii.gz"]
    label, image = read(folder / "labelsTr" / "lung_004.nii.gz")
    np.testing.assert_array_equal(label, read(task / "labelsTr" / "lung_004.nii.gz")[0])
    assert_fake_geometry(image)
    # the task folder itself is accepted as input too
    again = convert("msd-lung", task, 11, raw_root=tmp_path / "raw")
    assert again.cases == report.cases


@pytest.mark.parametrize("given", ["parent", "Lung_GTV"])
def test_structseg_from_parent_or_lung_gtv_folder_binarises_labels(tmp_path, given):
    src = tmp_path / "src"
    lung_gtv = write_structseg_gtv(src, numbers=(1, 2, 10), label_value=255)
    (lung_gtv / "11").mkdir()
    write_volume(lung_gtv / "11" / "data.nii.gz", np.zeros(SHAPE, np.int16))
    report = convert("structseg-gtv", src if given == "parent" else lung_gtv, 12, raw_root=tmp_path / "raw")
    assert report.cases == ["structseg_01", "structseg_02", "structseg_10"]
    assert report.unpaired == [lung_gtv / "11" / "data.nii.gz"]
    label, _ = read(report.dataset_folder / "labelsTr" / "structseg_10.nii.gz")
    source, _ = read(lung_gtv / "10" / "label.nii.gz")
    np.testing.assert_array_equal(label, (source > 0).astype(np.uint8))
    assert set(np.unique(label)) == {0, 1}
    info = json.loads((report.dataset_folder / "dataset.json").read_text())
    assert info["labels"] == {"background": 0, "GTV": 1}


def test_nsclc_pe_pairs_by_patient_merges_sides_and_skips_unlabelled(tmp_path):
    src = tmp_path / "src"
    written = write_nsclc_pe(src)
    report = convert("nsclc-pe", src, 13, raw_root=tmp_path / "raw")
    assert report.cases == ["LUNG1-001", "LUNG1-002"]
    assert [p.name for p in report.unpaired] == ["LUNG1-004_effusion.nii.gz"]
    assert any("1 patient(s) without an effusion mask" in note for note in report.notes)
    assert any("second-reviewer" in note for note in report.notes)
    folder = report.dataset_folder
    first, _ = read(folder / "labelsTr" / "LUNG1-001.nii.gz")
    np.testing.assert_array_equal(first, written["LUNG1-001"]["first"])
    merged, image = read(folder / "labelsTr" / "LUNG1-002.nii.gz")
    expected = ((written["LUNG1-002"]["left"] > 0) | (written["LUNG1-002"]["right"] > 0)).astype(np.uint8)
    np.testing.assert_array_equal(merged, expected)
    assert_fake_geometry(image)
    assert json.loads((folder / "dataset.json").read_text())["labels"] == {"background": 0, "effusion": 1}
    assert not (folder / "splits.json").exists()


def test_nsclc_two_images_for_one_patient_is_an_error(tmp_path):
    src = tmp_path / "src"
    write_nsclc_pe(src)
    write_volume(src / "images" / "LUNG1-002_series2.nii.gz", np.zeros(SHAPE, np.int16))
    with pytest.raises(CovtransferError, match="LUNG1-002 has more than one image"):
        convert("nsclc-pe", src, 14, raw_root=tmp_path / "raw")


def test_missing_layout_and_bad_options_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CovtransferError, match="no image folder"):
        convert("covid19ctseg", tmp_path / "empty", 15, raw_root=tmp_path / "raw")
    with pytest.raises(CovtransferError, match="no image/label pairs found for structseg-gtv"):
        convert("structseg-gtv", tmp_path / "empty", 15, raw_root=tmp_path / "raw")
    with pytest.raises(CovtransferError, match="unknown source"):
        convert("lits", tmp_path / "empty", 15, raw_root=tmp_path / "raw")
    with pytest.raises(CovtransferError, match="applies only to covid19ctseg"):
        convert("msd-lung", tmp_path / "empty", 15, raw_root=tmp_path / "raw", labels="lung-infection")
    with pytest.raises(CovtransferError, match="not a folder"):
        convert("nsclc-pe", tmp_path / "missing", 15, raw_root=tmp_path / "raw")
    assert leftovers(tmp_path / "raw") == []


def test_cli_main_converts_and_prints_windowed_and_unpaired(tmp_path, capsys):
    src, raw = tmp_path / "src", tmp_path / "raw"
    write_covid19ctseg(src, FEW_COVID)
    write_volume(src / "Lung_and_Infection_Mask" / "coronacases_010.nii.gz", np.zeros(SHAPE, np.uint8))
    code = convert_cli.main(["covid19ctseg", "-i", str(src), "-d", "20", "--name", "Covid", "--labels",
                             "lung-infection", "--raw", str(raw)])
    out = capsys.readouterr().out
    assert code == 0
    assert (raw / "Dataset020_Covid" / "labelsTr" / "coronacases_001.nii.gz").is_file()
    assert "radiopaedia_29_86491_1" in out and "windowed" in out
    assert "coronacases_010.nii.gz" in out
    with pytest.raises(CovtransferError, match="already exists"):
        convert_cli.main(["covid19ctseg", "-i", str(src), "-d", "20", "--name", "Covid", "--raw", str(raw)])
    assert run_cli(convert_cli.main, ["covid19ctseg", "-i", str(src), "-d", "20", "--name", "Covid",
                                      "--raw", str(raw)]) == 1
    assert "error: " in capsys.readouterr().err
    assert convert_cli.main(["covid19ctseg", "-i", str(src), "-d", "20", "--name", "Covid", "--raw", str(raw),
                             "--overwrite"]) == 0
    info = json.loads((raw / "Dataset020_Covid" / "dataset.json").read_text())
    assert info["labels"] == {"background": 0, "infection": 1}

