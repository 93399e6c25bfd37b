"""covtransfer_verify: a valid tiny dataset passes; every planted problem is reported on a line naming its file."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from covtransfer.cli.common import run_cli
from covtransfer.cli.verify import main
from covtransfer.data.image_io import Geometry, write_image
from covtransfer.data.verify import VerifyReport, verify_dataset

SHAPE = (6, 10, 12)
CASES = {"case_000": (2.0, 0.8, 0.8), "case_001": (2.5, 0.7, 0.8), "case_002": (3.0, 0.8, 0.9)}
DATASET_JSON = {"name": "Toy", "channel_names": {"0": "CT", "1": "PET"},
                "labels": {"background": 0, "lesion": 1, "effusion": 2}, "numTraining": 3, "file_ending": ".nii.gz"}


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 100, SHAPE).astype(np.float32)


def _label(seed: int) -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[1:3, 2:5, 3:6] = 1
    label[4, 6:8, 7:9] = 2 if seed % 2 == 0 else 1
    return label


def _write_case(folder: Path, subset: str, case_id: str, geometry: Geometry, seed: int, label: bool = True) -> None:
    for channel in range(2):
        write_image(folder / f"images{subset}" / f"{case_id}_{channel:04d}.nii.gz", _image(seed + channel), geometry)
    if label:
        write_image(folder / f"labels{subset}" / f"{case_id}.nii.gz", _label(seed), geometry)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Dataset001_Toy: 3 training cases of 2 channels (CT, PET) with labels 0/1/2, one test case with a label."""
    folder = tmp_path / "raw" / "Dataset001_Toy"
    for seed, (case_id, spacing) in enumerate(CASES.items()):
        _write_case(folder, "Tr", case_id, Geometry(spacing, (1.0, -2.0, 3.0)), seed)
    _write_case(folder, "Ts", "test_000", Geometry((2.0, 0.8, 0.8)), 10)
    (folder / "dataset.json").write_text(json.dumps(DATASET_JSON))
    return folder


def _only_problem(folder: Path, expected_start: str, *fragments: str) -> str:
    report = verify_dataset(folder)
    assert not report.ok
    assert len(report.problems) == 1, report.problems
    line = report.problems[0]
    assert line.startswith(expected_start), line
    for fragment in fragments:
        assert fragment in line, line
    return line


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _set_json(folder: Path, **changes) -> None:
    content = dict(DATASET_JSON, **changes)
    (folder / "dataset.json").write_text(json.dumps(content))


def test_valid_dataset_passes_with_summary(dataset):
    report = verify_dataset(dataset)
    assert isinstance(report, VerifyReport)
    assert report.ok and report.problems == []
    assert report.summary == ("Dataset001_Toy: 3 training case(s), 1 test case(s), 2 channel(s); spacing (z, y, x) "
                              "2..3, 0.7..0.8, 0.8..0.9 mm; labels found: 0 (background), 1 (lesion), 2 (effusion)")


def test_hidden_files_are_ignored(dataset):
    (dataset / "imagesTr" / ".DS_Store").write_text("x")
    (dataset / "labelsTr" / ".case_000.nii.gz.tmp").write_text("x")
    assert verify_dataset(dataset).ok


def test_msd_dataset_json_is_accepted(dataset):
    msd = {"name": "Toy", "modality": {"0": "CT", "1": "PET"}, "labels": {"0": "background", "1": "a", "2": "b"},
           "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in CASES]}
    (dataset / "dataset.json").write_text(json.dumps(msd))
    report = verify_dataset(dataset)
    assert report.ok, report.problems
    assert "labels found: 0 (background), 1 (a), 2 (b)" in report.summary


def test_missing_dataset_json_is_the_only_problem(dataset):
    (dataset / "dataset.json").unlink()
    (dataset / "labelsTr" / "case_000.nii.gz").unlink()
    _only_problem(dataset, str(dataset / "dataset.json"), "file not found")


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not valid JSON"),
    (json.dumps({"channel_names": {"0": "CT"}, "labels": {"lesion": 1}, "numTraining": 3}), "background as 0"),
    (json.dumps({"channel_names": {}, "labels": {"background": 0}, "numTraining": 3}), "channel_names"),
])
def test_invalid_dataset_json_is_the_only_problem(dataset, text, fragment):
    (dataset / "dataset.json").write_text(text)
    _truncate(dataset / "imagesTr" / "case_000_0000.nii.gz")
    _only_problem(dataset, str(dataset / "dataset.json"), fragment)


def test_missing_folder(tmp_path):
    report = verify_dataset(tmp_path / "Dataset009_Nothing")
    assert report.problems == [f"{tmp_path / 'Dataset009_Nothing'}: no such dataset folder"]


def test_missing_channel(dataset):
    (dataset / "imagesTr" / "case_001_0001.nii.gz").unlink()
    _only_problem(dataset, "imagesTr/case_001_0001.nii.gz: missing",
                  "case case_001 has 1 channel file(s); dataset.json declares 2: 0 CT, 1 PET")


def test_extra_channel(dataset):
    write_image(dataset / "imagesTr" / "case_002_0002.nii.gz", _image(0), Geometry(CASES["case_002"]))
    _only_problem(dataset, "imagesTr/case_002_0002.nii.gz: channel not declared",
                  "case case_002 has 3 channel files; dataset.json declares 2")


def test_label_without_images(dataset):
    write_image(dataset / "labelsTr" / "case_009.nii.gz", _label(0), Geometry((2.0, 0.8, 0.8)))
    _only_problem(dataset, "labelsTr/case_009.nii.gz: label without images", "imagesTr/case_009_0000.nii.gz")


def test_images_without_label(dataset):
    (dataset / "labelsTr" / "case_002.nii.gz").unlink()
    _only_problem(dataset, "labelsTr/case_002.nii.gz: missing", "case case_002 has images in imagesTr")


@pytest.mark.parametrize("relative, expected", [
    ("imagesTr/case_000.nii.gz", "name does not match <case>_<XXXX>.nii.gz"),
    ("imagesTr/case_000_01.nii.gz", "name does not match <case>_<XXXX>.nii.gz"),
    ("labelsTr/readme.txt", "name does not match <case>.nii.gz"),
])
def test_file_names_not_matching_the_pattern(dataset, relative, expected):
    (dataset / relative).write_text("x")
    _only_problem(dataset, f"{relative}: {expected}")


def test_a_stray_nii_beside_its_nii_gz_is_named_and_the_blank_read_it_causes_is_caught(dataset):
    """ITK's NIfTI reader looks for ``<name>.nii`` before ``<name>.nii.gz``: a stray ``.nii`` makes the real image
    read as zeros without an error. The blank CT channel is refused instead of passing silently."""
    (dataset / "imagesTr" / "case_000_0000.nii").write_text("x")
    problems = verify_dataset(dataset).problems
    assert len(problems) == 2 and problems[0].startswith("imagesTr/case_000_0000.nii: name does not match")
    assert problems[1] == ("imagesTr/case_000_0000.nii.gz: intensities span only 0 to 0: a label map or a blank "
                           "image, not a CT in Hounsfield units")


@pytest.mark.parametrize("relative", ["imagesTr/case_000_0003.nii.gz", "labelsTr/case_009.nii.gz"])
def test_folders_among_files(dataset, relative):
    (dataset / relative).mkdir()
    _only_problem(dataset, f"{relative}: not a file")


@pytest.mark.parametrize("relative, expected", [
    ("imagesTr/case_000_0000.nii.gz", "unreadable image (truncated or corrupt compressed data)"),
    ("imagesTr/case_001_0001.nii.gz", "unreadable image (truncated or corrupt compressed data)"),
    ("labelsTr/case_002.nii.gz", "unreadable image"),  # cut inside the header: ITK cannot even tell the format
])
def test_truncated_file_is_reported(dataset, relative, expected):
    _truncate(dataset / relative)
    line = _only_problem(dataset, f"{relative}: {expected}")
    assert str(dataset) not in line


def _convert(folder: Path, ending: str) -> None:
    """Rewrite every file of the dataset with another file ending."""
    for path in folder.rglob("*.nii.gz"):
        sitk.WriteImage(sitk.ReadImage(str(path)), str(path).replace(".nii.gz", ending))
        path.unlink()
    _set_json(folder, file_ending=ending)


def test_truncated_uncompressed_nifti_is_reported(dataset):
    _convert(dataset, ".nii")
    assert verify_dataset(dataset).ok
    _truncate(dataset / "imagesTr" / "case_001_0000.nii")
    _only_problem(dataset, "imagesTr/case_001_0000.nii: unreadable image (truncated:", "of 3232 bytes")


def test_garbage_file_is_reported(dataset):
    (dataset / "labelsTr" / "case_000.nii.gz").write_bytes(b"this is not an image")
    _only_problem(dataset, "labelsTr/case_000.nii.gz: unreadable image")


def test_label_size_mismatch(dataset):
    write_image(dataset / "labelsTr" / "case_001.nii.gz", np.zeros((6, 10, 13), np.uint8), Geometry(CASES["case_001"],
                                                                                                   (1.0, -2.0, 3.0)))
    _only_problem(dataset, "labelsTr/case_001.nii.gz: size (z, y, x) [6, 10, 13] differs from "
                           "imagesTr/case_001_0000.nii.gz [6, 10, 12]")


@pytest.mark.parametrize("geometry, expected", [
    (Geometry((2.6, 0.7, 0.8), (1.0, -2.0, 3.0)),
     "spacing (z, y, x) [2.6, 0.7, 0.8] differs from imagesTr/case_001_0000.nii.gz [2.5, 0.7, 0.8]"),
    (Geometry((2.5, 0.7, 0.8), (1.0, -2.0, 13.5)),
     "origin (x, y, z) [1, -2, 13.5] differs from imagesTr/case_001_0000.nii.gz [1, -2, 3]"),
    (Geometry((2.5, 0.7, 0.8), (1.0, -2.0, 3.0), (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)),
     "direction [-1, 0, 0, 0, -1, 0, 0, 0, 1] differs from imagesTr/case_001_0000.nii.gz [1, 0, 0, 0, 1, 0, 0, 0, 1]"),
])
def test_label_geometry_mismatch(dataset, geometry, expected):
    write_image(dataset / "labelsTr" / "case_001.nii.gz", _label(1), geometry)
    _only_problem(dataset, f"labelsTr/case_001.nii.gz: {expected}")


def test_geometry_within_tolerance_passes(dataset):
    write_image(dataset / "labelsTr" / "case_001.nii.gz", _label(1), Geometry((2.5 + 1e-5, 0.7, 0.8),
                                                                              (1.0 + 1e-4, -2.0, 3.0)))
    assert verify_dataset(dataset).ok


def test_channels_disagreeing_in_geometry(dataset):
    write_image(dataset / "imagesTr" / "case_000_0001.nii.gz", _image(1), Geometry((2.0, 0.8, 0.8), (0.0, 0.0, 0.0)))
    _only_problem(dataset, "imagesTr/case_000_0001.nii.gz: origin (x, y, z) [0, 0, 0] differs from "
                           "imagesTr/case_000_0000.nii.gz [1, -2, 3]")


def test_channels_disagreeing_in_size(dataset):
    write_image(dataset / "imagesTr" / "case_000_0001.nii.gz", np.zeros((6, 11, 12), np.float32),
                Geometry((2.0, 0.8, 0.8), (1.0, -2.0, 3.0)))
    _only_problem(dataset, "imagesTr/case_000_0001.nii.gz: size (z, y, x) [6, 11, 12] differs from "
                           "imagesTr/case_000_0000.nii.gz [6, 10, 12]")


def test_undeclared_label_values(dataset):
    label = _label(2)
    label[0, 0, 0], label[5, 9, 11] = 7, 3
    write_image(dataset / "labelsTr" / "case_002.nii.gz", label, Geometry(CASES["case_002"], (1.0, -2.0, 3.0)))
    _only_problem(dataset, "labelsTr/case_002.nii.gz: label values 3, 7 are not declared in dataset.json",
                  "(declared: 0, 1, 2)")


def test_negative_label_values_are_undeclared(dataset):
    label = _label(2).astype(np.int16)
    label[0, 0, 0] = -1
    write_image(dataset / "labelsTr" / "case_002.nii.gz", label, Geometry(CASES["case_002"], (1.0, -2.0, 3.0)))
    _only_problem(dataset, "labelsTr/case_002.nii.gz: label values -1 are not declared")


def test_float_labels_with_fractions(dataset):
    label = _label(0).astype(np.float32)
    label[2, 3, 4], label[0, 0, 0] = 0.5, 1.25
    write_image(dataset / "labelsTr" / "case_000.nii.gz", label, Geometry(CASES["case_000"], (1.0, -2.0, 3.0)))
    _only_problem(dataset, "labelsTr/case_000.nii.gz: non-integer label values", "float32", "0.5, 1.25")


def test_float_labels_with_whole_values_pass(dataset):
    write_image(dataset / "labelsTr" / "case_000.nii.gz", _label(0).astype(np.float32),
                Geometry(CASES["case_000"], (1.0, -2.0, 3.0)))
    assert verify_dataset(dataset).ok


@pytest.mark.parametrize("ending, dtype", [(".nii.gz", np.float32), (".nii.gz", np.float64), (".nii", np.float32),
                                           (".mha", np.float32)])
def test_nan_and_inf_in_image(dataset, ending, dtype):
    if ending != ".nii.gz":
        _convert(dataset, ending)
    image = _image(1).astype(dtype)
    image[0, 0, 0] = image[1, 1, 1] = np.nan
    image[2, 2, 2] = -np.inf
    write_image(dataset / "imagesTr" / f"case_001_0000{ending}", image, Geometry(CASES["case_001"], (1.0, -2.0, 3.0)))
    _only_problem(dataset, f"imagesTr/case_001_0000{ending}: 2 NaN and 1 Inf voxels")


@pytest.mark.parametrize("shape, dims", [((10, 12), 2), ((2, 6, 10, 12), 4)])
def test_not_three_dimensional(dataset, shape, dims):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros(shape, np.float32), isVector=False),
                    str(dataset / "imagesTr" / "case_002_0000.nii.gz"))
    line = _only_problem(dataset, "imagesTr/case_002_0000.nii.gz: ", f"is {dims}-D, expected a 3-D image")
    assert str(dataset) not in line


def test_num_training_mismatch(dataset):
    _set_json(dataset, numTraining=5)
    _only_problem(dataset, "dataset.json: numTraining is 5 but imagesTr holds 3 case(s)")


def test_no_training_cases(dataset):
    for path in [*dataset.glob("imagesTr/*"), *dataset.glob("labelsTr/*")]:
        path.unlink()
    _set_json(dataset, numTraining=0)
    _only_problem(dataset, "imagesTr: no training cases")


def test_missing_images_folder(dataset):
    for path in [*dataset.glob("imagesTr/*"), *dataset.glob("labelsTr/*")]:
        path.unlink()
    (dataset / "imagesTr").rmdir()
    (dataset / "labelsTr").rmdir()
    problems = verify_dataset(dataset).problems
    assert problems == ["imagesTr: folder missing", "imagesTr: no training cases (expected files <case>_0000.nii.gz)",
                        "dataset.json: numTraining is 3 but imagesTr holds 0 case(s)"]


def test_test_images_are_checked(dataset):
    (dataset / "imagesTs" / "test_000_0001.nii.gz").unlink()
    _truncate(dataset / "imagesTs" / "test_000_0000.nii.gz")
    _set_json(dataset)
    problems = verify_dataset(dataset).problems
    assert problems[0].startswith("imagesTs/test_000_0001.nii.gz: missing")
    assert problems[1].startswith("imagesTs/test_000_0000.nii.gz: unreadable image (truncated")
    assert len(problems) == 2


def test_test_labels_are_checked_when_present(dataset):
    write_image(dataset / "labelsTs" / "test_000.nii.gz", _label(0), Geometry((2.0, 0.8, 0.9)))
    write_image(dataset / "labelsTs" / "test_404.nii.gz", _label(0), Geometry((2.0, 0.8, 0.8)))
    _write_case(dataset, "Ts", "test_001", Geometry((2.0, 0.8, 0.8)), 3, label=False)
    problems = verify_dataset(dataset).problems
    assert problems == [
        "labelsTs/test_404.nii.gz: label without images (no imagesTs/test_404_0000.nii.gz)",
        "labelsTs/test_001.nii.gz: missing (case test_001 has images in imagesTs)",
        "labelsTs/test_000.nii.gz: spacing (z, y, x) [2, 0.8, 0.9] differs from imagesTs/test_000_0000.nii.gz "
        "[2, 0.8, 0.8]"]


def test_test_images_without_labels_folder_pass(dataset):
    for path in dataset.glob("labelsTs/*"):
        path.unlink()
    (dataset / "labelsTs").rmdir()
    report = verify_dataset(dataset)
    assert report.ok and "1 test case(s)" in report.summary


def _plant_several(folder: Path) -> None:
    (folder / "imagesTr" / "case_001_0001.nii.gz").unlink()
    _truncate(folder / "imagesTr" / "case_000_0000.nii.gz")
    image = _image(4)
    image[0, 0, 0] = np.nan
    write_image(folder / "imagesTr" / "case_002_0001.nii.gz", image, Geometry((3.0, 0.8, 0.9), (1.0, -2.0, 3.5)))
    (folder / "labelsTr" / "stray.txt").write_text("x")
    _set_json(folder, numTraining=4)


def test_several_problems_are_all_listed(dataset):
    _plant_several(dataset)
    problems = verify_dataset(dataset).problems
    assert problems == [
        "imagesTr/case_001_0001.nii.gz: missing (case case_001 has 1 channel file(s); dataset.json declares 2: "
        "0 CT, 1 PET)",
        "labelsTr/stray.txt: name does not match <case>.nii.gz (ending from dataset.json)",
        "dataset.json: numTraining is 4 but imagesTr holds 3 case(s)",
        "imagesTr/case_000_0000.nii.gz: unreadable image (truncated or corrupt compressed data)",
        "imagesTr/case_002_0001.nii.gz: 1 NaN and 0 Inf voxels",
        "imagesTr/case_002_0001.nii.gz: origin (x, y, z) [1, -2, 3.5] differs from imagesTr/case_002_0000.nii.gz "
        "[1, -2, 3]",
    ]


def test_parallel_report_equals_sequential(dataset):
    _plant_several(dataset)
    assert verify_dataset(dataset, num_processes=2) == verify_dataset(dataset)


def test_cli_valid_dataset_prints_summary(dataset, capsys):
    assert main(["-d", "1", "--raw", str(dataset.parent)]) == 0
    out = capsys.readouterr().out
    assert out == verify_dataset(dataset).summary + "\n"
    assert out.startswith("Dataset001_Toy: 3 training case(s)")


def test_cli_lists_problems_one_per_line(dataset, capsys, monkeypatch):
    _plant_several(dataset)
    monkeypatch.setenv("COVTRANSFER_RAW", str(dataset.parent))
    assert main(["-d", "Dataset001_Toy", "-np", "2"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == verify_dataset(dataset).problems
    assert captured.err.strip() == f"6 problem(s) in {dataset}"


def test_cli_unknown_dataset_is_an_error(tmp_path, capsys):
    assert run_cli(main, ["-d", "7", "--raw", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: no dataset with id 7")


def test_implausible_spacing_is_a_problem(dataset):
    write_image(dataset / "imagesTr" / "case_000_0000.nii.gz", _image(0), Geometry((50.0, 50.0, 50.0)))
    problems = verify_dataset(dataset).problems
    assert any(p.startswith("imagesTr/case_000_0000.nii.gz: spacing 50.0 mm is above 20.0 mm") for p in problems)
