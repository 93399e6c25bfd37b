"""A table of bad scans, each through the entry point of every command that reads scans (verify,
plan_and_preprocess, predict, evaluate): a non-zero exit, one line naming the file and the problem, nothing written.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk

from covtransfer.cli import evaluate, plan_and_preprocess, predict, verify
from covtransfer.cli.common import run_cli
from covtransfer.data.image_io import Geometry, read_image, write_image
from covtransfer.plans import ChannelNormalization
from tiny_models import make_plans, save_checkpoint
from tiny_data import write_raw_dataset

SHAPE = (12, 24, 24)
SPACING = (2.0, 1.5, 1.5)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
CASE = "blob_tr000"


def ct_image(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """Air around soft tissue with a little noise: a plausible CT in Hounsfield units."""
    image = np.random.default_rng(seed).normal(40.0, 20.0, shape).astype(np.float32)
    image[:, :3] = -1000.0
    return image


def _write(path: Path, array: np.ndarray, spacing=SPACING, direction=IDENTITY) -> None:
    write_image(path, array, Geometry(spacing, (0.0, 0.0, 0.0), direction))


def _nan_slab(path: Path) -> None:
    image = ct_image()
    image[4] = np.nan
    _write(path, image)


def _inf_voxels(path: Path) -> None:
    image = ct_image()
    image[2, 5, 5:8] = np.inf
    _write(path, image)


def _2d(path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(ct_image()[0]), str(path))


def _4d(path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([ct_image()] * 2), isVector=False), str(path))


def _truncated_gzip(path: Path) -> None:
    _write(path, ct_image())
    path.write_bytes(path.read_bytes()[:-300])


def _not_gzip(path: Path) -> None:
    path.write_bytes(gzip.compress(b"not an image at all")[:10])


def _symlink_loop(path: Path) -> None:
    partner = path.with_name("loop_partner.nii.gz")
    os.symlink(partner, path)
    os.symlink(path, partner)


@dataclasses.dataclass(frozen=True)
class BadScan:
    """One row: how the bad CT file is made and a fragment its one-line answer must hold."""

    name: str
    write: Callable[[Path], None]
    needle: str
    ending: str = ".nii.gz"


BAD_SCANS = [
    BadScan("NaN slab", _nan_slab, "NaN"),
    BadScan("infinite voxels", _inf_voxels, "NaN and"),
    BadScan("spacing in cm (50 mm voxels)", lambda p: _write(p, ct_image(), spacing=(50.0, 50.0, 50.0)),
            "the header may be in cm"),
    BadScan("spacing in m (0.001 mm voxels)", lambda p: _write(p, ct_image(), spacing=(0.001, 0.001, 0.001)),
            "below 0.05 mm"),
    BadScan("implausible extent", lambda p: _write(p, ct_image((120, 8, 8)), spacing=(19.0, 1.0, 1.0)),
            "physical extent"),
    BadScan("degenerate direction", lambda p: _write(p, ct_image(), direction=(1.0, 0, 0, 0.5, 1.0, 0, 0, 0, 1.0)),
            "direction matrix", ".mha"),  # NIfTI cannot hold it: ITK makes a NIfTI's direction a rotation on reading
    BadScan("2-D image", _2d, "2-D"),
    BadScan("4-D image", _4d, "4-D"),
    BadScan("single slice", lambda p: _write(p, ct_image((1, 24, 24))), "single slice"),
    BadScan("uint8 CT", lambda p: _write(p, np.clip(ct_image() + 100, 0, 255).astype(np.uint8)), "uint8 voxels"),
    BadScan("int8 CT", lambda p: _write(p, np.clip(ct_image(), -128, 127).astype(np.int8)), "int8 voxels"),
    BadScan("label-like integer range", lambda p: _write(p, (ct_image() > 40).astype(np.int16) * 3),
            "not a CT in Hounsfield units"),
    BadScan("truncated gzip", _truncated_gzip, "unreadable"),
    BadScan("not an image", _not_gzip, "unreadable"),
    BadScan("symlink loop", _symlink_loop, "symlink loop"),
]
IDS = [row.name for row in BAD_SCANS]
NIFTI_SCANS = [row for row in BAD_SCANS if row.ending == ".nii.gz"]  # the tiny datasets' file ending
NIFTI_IDS = [row.name for row in NIFTI_SCANS]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A tiny random model whose one channel is CT-normalised, as trained models of CT datasets are."""
    root = tmp_path_factory.mktemp("results")
    plans = make_plans(spacing=SPACING)
    configuration = plans.configuration("3d_fullres")
    configuration.normalization = [ChannelNormalization("CT", mean=40.0, std=20.0, lower=-1000.0, upper=1000.0)]
    save_checkpoint(root / "Dataset001_Test" / "scratch" / "fold_0", plans)
    return root


def _dataset(tmp_path: Path, row: BadScan) -> tuple[Path, Path]:
    """A two-case raw dataset whose first image is the bad scan (its label may then disagree with it too: the
    tests look for the scan's own problem line)."""
    raw = tmp_path / "raw"
    folder = write_raw_dataset(raw, 1, "Blob", n_train=2, shape=SHAPE)
    image = folder / "imagesTr" / f"{CASE}_0000.nii.gz"
    image.unlink()
    row.write(image)
    return raw, image


@pytest.mark.parametrize("row", BAD_SCANS, ids=IDS)
def test_predict_refuses_in_one_line_and_writes_nothing(tmp_path, results, capsys, row):
    images = tmp_path / "images"
    images.mkdir()
    row.write(images / f"a_0000{row.ending}")
    out = tmp_path / "out"
    code = run_cli(predict.main, ["-i", str(images), "-o", str(out), "-d", "1", "-t", "scratch", "-f", "0",
                                  "--results", str(results), "--quiet"])
    message = _one_line(capsys.readouterr().err)
    assert code != 0 and f"a_0000{row.ending}" in message and row.needle in message, message
    assert _files(out) == []


@pytest.mark.parametrize("row", NIFTI_SCANS, ids=NIFTI_IDS)
def test_verify_names_the_file_and_the_problem(tmp_path, capsys, row):
    raw, image = _dataset(tmp_path, row)
    code = run_cli(verify.main, ["-d", "1", "--raw", str(raw)])
    captured = capsys.readouterr()
    about = [line for line in captured.out.splitlines() if image.name in line and row.needle in line]
    assert code != 0 and len(about) == 1, captured.out + captured.err


@pytest.mark.parametrize("row", NIFTI_SCANS, ids=NIFTI_IDS)
def test_plan_and_preprocess_refuses_and_writes_nothing(tmp_path, capsys, row):
    raw, image = _dataset(tmp_path, row)
    preprocessed = tmp_path / "preprocessed"
    code = run_cli(plan_and_preprocess.main, ["-d", "1", "--raw", str(raw), "--preprocessed", str(preprocessed),
                                              "--preset", "cpu", "-np", "1"])
    captured = capsys.readouterr()
    assert code != 0 and image.name in captured.err and row.needle in captured.err, captured.out + captured.err
    assert not list(preprocessed.rglob("*.npz"))


def test_predict_refuses_a_resampling_beyond_memory_even_with_allow_spacing(tmp_path, results, capsys):
    images = tmp_path / "images"
    _write(images / "a_0000.nii.gz", ct_image(), spacing=(1000.0, 1000.0, 1000.0))
    out = tmp_path / "out"
    code = run_cli(predict.main, ["-i", str(images), "-o", str(out), "-d", "1", "-t", "scratch", "-f", "0",
                                  "--results", str(results), "--quiet", "--allow-spacing"])
    warning, error = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and warning.startswith("warning: ") and "--allow-spacing" in warning
    assert error.startswith("error: ") and "a_0000.nii.gz: resampling to" in error and "GiB" in error
    assert _files(out) == []


def test_plan_and_preprocess_puts_a_single_problem_on_one_line(tmp_path, capsys):
    raw = tmp_path / "raw"
    image = write_raw_dataset(raw, 1, "Blob", n_train=2, shape=SHAPE) / "imagesTr" / f"{CASE}_0000.nii.gz"
    array, geometry = read_image(image)
    array[3] = np.nan
    write_image(image, array, geometry)
    preprocessed = tmp_path / "preprocessed"
    code = run_cli(plan_and_preprocess.main, ["-d", "1", "--raw", str(raw), "--preprocessed", str(preprocessed),
                                              "--preset", "cpu", "-np", "1"])
    message = _one_line(capsys.readouterr().err)
    assert code != 0 and f"imagesTr/{CASE}_0000.nii.gz: " in message and "NaN" in message
    assert message.endswith("(nothing written; see covtransfer_verify)") and not list(preprocessed.rglob("*.npz"))


def test_a_10_mm_slice_stack_is_a_valid_ct_and_is_predicted(tmp_path, results):
    images = tmp_path / "images"
    _write(images / "a_0000.nii.gz", ct_image((6, 24, 24)), spacing=(10.0, 0.8, 0.8))
    out = tmp_path / "out"
    assert run_cli(predict.main, ["-i", str(images), "-o", str(out), "-d", "1", "-t", "scratch", "-f", "0",
                                  "--results", str(results), "--quiet"]) == 0
    assert _files(out) == ["a.nii.gz"]


def _label(path: Path, shape=SHAPE, value: int = 1) -> None:
    label = np.zeros(shape, np.uint8)
    label[4:8, 8:16, 8:16] = value
    _write(path, label)


BAD_PREDICTIONS = [
    BadScan("truncated gzip", lambda p: (_label(p), p.write_bytes(p.read_bytes()[:-40])), "unreadable"),
    BadScan("symlink loop", _symlink_loop, "symlink loop"),
    BadScan("2-D label map", lambda p: sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.uint8)), str(p)),
            "2-D"),
    BadScan("shape differs from the reference", lambda p: _label(p, (12, 24, 20)), "shape"),
]


@pytest.mark.parametrize("row", BAD_PREDICTIONS, ids=[r.name for r in BAD_PREDICTIONS])
def test_evaluate_refuses_a_bad_prediction_and_writes_no_summary(tmp_path, capsys, row):
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    _label(reference / "a.nii.gz")
    prediction.mkdir()
    row.write(prediction / "a.nii.gz")
    code = run_cli(evaluate.main, ["-r", str(reference), "-p", str(prediction), "--labels", "1"])
    message = _one_line(capsys.readouterr().err)
    assert code != 0 and "a.nii.gz" in message and row.needle in message, message
    assert sorted(p.name for p in prediction.iterdir()) == ["a.nii.gz"] + (["loop_partner.nii.gz"]
                                                                           if row.name == "symlink loop" else [])
