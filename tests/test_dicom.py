"""DICOM CT series as prediction input (real and synthetic headers), its refusals, and the DICOM SEG output."""

import shutil

import highdicom as hd
import matplotlib.pyplot as plt
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from covtransfer.cli.common import run_cli
from covtransfer.cli.predict import main
from covtransfer.data.dicom_io import find_series, read_series, series_geometry
from covtransfer.data.image_io import Geometry, read_image, write_image
from dicom_series import write_ct_series
from tiny_models import FLIPPED, body_image, make_plans, save_checkpoint

GEOMETRY = Geometry((2.0, 0.8, 0.9), (10.0, -20.0, 5.5), FLIPPED)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom_model") / "fold_0"
    save_checkpoint(folder, make_plans(spacing=(2.0, 1.0, 1.0)))
    return folder


def _volume() -> np.ndarray:
    return np.round(body_image((8, 20, 18)) * 300).astype(np.int16)


def test_real_ct_header_as_one_slice_series_matches_pydicom(tmp_path):
    source = get_testdata_file("CT_small.dcm")
    shutil.copy(source, tmp_path / "CT_small.dcm")
    header = pydicom.dcmread(source)
    array, geometry = read_series(tmp_path)
    shape, header_geometry = series_geometry(find_series(tmp_path))
    assert array.shape == shape == (1, header.Rows, header.Columns)
    assert np.allclose(geometry.spacing[1:], [float(v) for v in header.PixelSpacing])
    assert np.isclose(geometry.spacing[0], float(header.SliceThickness))
    assert np.allclose(geometry.origin, [float(v) for v in header.ImagePositionPatient])
    row, column = np.array(header.ImageOrientationPatient, float).reshape(2, 3)
    assert np.allclose(geometry.direction, np.stack([row, column, np.cross(row, column)], axis=1).ravel())
    assert header_geometry.matches(geometry, 1e-6)
    hu = header.pixel_array * float(header.RescaleSlope) + float(header.RescaleIntercept)
    assert np.array_equal(array[0], hu)


def test_shuffled_series_predicts_exactly_what_the_nifti_predicts(tmp_path, model):
    volume = _volume()
    names = [f"img_{i}.dcm" for i in np.random.default_rng(0).permutation(len(volume))]
    numbers = list(range(1, len(volume) + 1))
    numbers[2], numbers[5] = numbers[5], numbers[2]
    write_ct_series(tmp_path / "dicom" / "case7", volume, GEOMETRY, file_names=names, instance_numbers=numbers)
    write_image(tmp_path / "nifti" / "case7.nii.gz", volume, GEOMETRY)
    array, geometry = read_series(tmp_path / "dicom" / "case7")
    assert np.array_equal(array, volume) and geometry.matches(GEOMETRY, 1e-6)
    for route in ("dicom", "nifti"):
        assert main(["-i", str(tmp_path / route), "-o", str(tmp_path / f"out_{route}"), "-m", str(model),
                     "--quiet", "--no-tta"]) == 0
    dicom = sitk.ReadImage(str(tmp_path / "out_dicom" / "case7.nii.gz"))
    nifti = sitk.ReadImage(str(tmp_path / "out_nifti" / "case7.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(dicom), sitk.GetArrayFromImage(nifti))
    assert dicom.GetSpacing() == nifti.GetSpacing() and dicom.GetOrigin() == nifti.GetOrigin()
    assert dicom.GetDirection() == nifti.GetDirection()


def _refusal(tmp_path, name):
    folder = tmp_path / name
    volume = _volume()
    if name == "two_series":
        write_ct_series(folder, volume[:3], GEOMETRY, file_names=["a0.dcm", "a1.dcm", "a2.dcm"])
        write_ct_series(folder, volume[:3], GEOMETRY, file_names=["b0.dcm", "b1.dcm", "b2.dcm"])
    elif name == "mr":
        write_ct_series(folder, volume[:3], GEOMETRY, modality="MR")
    else:
        paths = write_ct_series(folder, volume, GEOMETRY)
        if name == "gap":
            paths[4].unlink()
        elif name == "tilted":
            ds = pydicom.dcmread(paths[3])
            ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
            ds.save_as(paths[3])
        elif name == "sizes":
            ds = pydicom.dcmread(paths[3])
            ds.Rows, ds.PixelData = 10, ds.PixelData[: 10 * ds.Columns * 2]
            ds.save_as(paths[3])
    return folder


@pytest.mark.parametrize("name, message", [
    ("two_series", "holds 2 DICOM series"), ("gap", "missing or duplicate slice"),
    ("tilted", "mixed slice orientations"), ("mr", "modality MR, expected CT"),
    ("sizes", "slices of different sizes")])
def test_bad_series_are_refused_in_one_line_naming_the_series(tmp_path, model, capsys, name, message):
    folder = _refusal(tmp_path, name)
    out = tmp_path / "out"
    assert run_cli(main, ["-i", str(folder), "-o", str(out), "-m", str(model), "--quiet"]) != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error and str(folder) in error
    assert not out.exists() or not any(out.iterdir())


def _on_grid(volume: hd.Volume, geometry: Geometry, labels: np.ndarray) -> bool:
    """Whether every voxel of a highdicom volume lies on a voxel of ``labels`` (on ``geometry``) with its value."""
    direction = np.array(geometry.direction).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction[:, ::-1] * np.array(geometry.spacing)
    affine[:3, 3] = geometry.origin
    index = np.indices(volume.array.shape).reshape(3, -1)
    mapped = (np.linalg.inv(affine) @ volume.affine @ np.vstack([index, np.ones(index.shape[1])]))[:3]
    target = np.round(mapped).astype(int)
    return bool(np.allclose(mapped, target, atol=1e-4) and
                np.array_equal(labels[tuple(target)], volume.array[tuple(index)]))


def test_dicom_seg_round_trip_equals_the_nifti_prediction_and_overlays_decode(tmp_path, model):
    volume = _volume()
    write_ct_series(tmp_path / "dicom" / "case3", volume, GEOMETRY)
    out = tmp_path / "out"
    assert main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(model), "--quiet", "--no-tta",
                 "--dicom-seg", "--overlays"]) == 0
    prediction, geometry = read_image(out / "case3.nii.gz")
    seg = hd.seg.segread(out / "case3.dcm")
    series = find_series(tmp_path / "dicom" / "case3")
    masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=[h.SOPInstanceUID for h in series.headers],
                                              combine_segments=True)
    assert np.array_equal(masks, prediction) and prediction.any()
    assert seg.FrameOfReferenceUID == series.headers[0].FrameOfReferenceUID
    assert seg.get_segment_description(1).segment_label == "lesion"
    algorithm = seg.get_segment_description(1).algorithm_identification[0]
    assert algorithm.AlgorithmName == "covtransfer" and algorithm.AlgorithmVersion
    assert _on_grid(seg.get_volume(combine_segments=True), geometry, prediction)
    assert plt.imread(out / "case3_overlay.png").shape[2] in (3, 4)


def test_dicom_seg_refuses_nifti_input(tmp_path, model, capsys):
    write_image(tmp_path / "in" / "a.nii.gz", _volume(), GEOMETRY)
    assert run_cli(main, ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model),
                          "--dicom-seg"]) == 1
    assert "a.nii.gz: --dicom-seg needs DICOM series input" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
