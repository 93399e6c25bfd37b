"""The predict command: labels on the input grid, probabilities, --continue after a kill, fold ensembles,
postprocessing and refusals that leave nothing behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from covtransfer.cli.common import run_cli
from covtransfer.cli.predict import main
from covtransfer.data.image_io import Geometry, read_image, write_image
from covtransfer.errors import CovtransferError
from covtransfer.inference.inputs import discover_cases
from covtransfer.inference.model_loading import load_model
from covtransfer.inference.predictor import Predictor
from covtransfer.network.checkpoint_io import save_checkpoint as write_checkpoint
from tiny_models import FLIPPED, make_checkpoint, make_plans, pointwise_model, save_checkpoint, write_case

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def results(tmp_path) -> Path:
    root = tmp_path / "results"
    plans = make_plans(spacing=(2.0, 1.0, 1.0), transpose=(0, 2, 1))
    for fold in range(2):
        save_checkpoint(root / "Dataset001_Test" / "scratch" / f"fold_{fold}", plans, seed=fold)
    return root


def test_predict_command_writes_labels_exactly_on_the_input_grid(tmp_path, results):
    images = tmp_path / "images"
    geometry = Geometry((3.0, 0.8, 0.9), (10.0, -20.0, 5.5), FLIPPED)
    write_case(images, "a", geometry=geometry)
    write_case(images, "b", ending=".mha", shape=(7, 16, 19), geometry=geometry)
    assert main(["-i", str(images), "-o", str(tmp_path / "out"), "-d", "1", "-t", "scratch",
                 "--results", str(results), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.mha"]
    for case, ending in (("a", ".nii.gz"), ("b", ".mha")):
        source = sitk.ReadImage(str(images / f"{case}_0000{ending}"))
        output = sitk.ReadImage(str(tmp_path / "out" / f"{case}{ending}"))
        assert output.GetSize() == source.GetSize()
        assert np.allclose(output.GetSpacing(), source.GetSpacing())
        assert np.allclose(output.GetOrigin(), source.GetOrigin())
        assert np.allclose(output.GetDirection(), source.GetDirection())
        assert output.GetPixelID() == sitk.sitkUInt8
        labels = sitk.GetArrayFromImage(output)
        assert set(np.unique(labels)) <= {0, 1}
        assert not labels[sitk.GetArrayFromImage(source) == 0].any()  # the zero border lies outside the crop box


def test_predict_save_probabilities_and_continue(tmp_path, results):
    images = tmp_path / "images"
    write_case(images, "a")
    out = tmp_path / "out"
    args = ["-i", str(images), "-o", str(out), "-d", "Dataset001_Test", "-t", "scratch", "-f", "0",
            "--results", str(results), "--save-probabilities", "--no-tta", "--quiet"]
    assert main(args) == 0
    probabilities = np.load(out / "a.npz")["probabilities"]
    labels, _ = read_image(out / "a.nii.gz")
    assert probabilities.dtype == np.float16 and probabilities.shape == (2, *labels.shape)
    assert np.allclose(probabilities.astype(np.float32).sum(0), 1, atol=2e-3)
    differ = probabilities.argmax(0) != labels  # only where float16 rounding made the classes tie
    assert differ.mean() < 0.01 and np.all(probabilities[0][differ] == probabilities[1][differ])
    (out / "a.nii.gz").write_bytes(b"sentinel")
    assert main(args + ["--continue"]) == 0
    assert (out / "a.nii.gz").read_bytes() == b"sentinel"
    assert main(args) == 0
    assert read_image(out / "a.nii.gz")[0].shape == labels.shape


# the predict command in a subprocess whose write of case "b" stops after the temporary file is complete, before
# its rename: the moment a SIGKILL can leave a temporary file behind
_STALLED_PREDICT = """
import sys, time
from covtransfer.inference import export
real = export.write_image
def stalled(path, *args, **kwargs):
    real(path, *args, **kwargs)
    if ".b.nii.gz." in str(path):
        time.sleep(120)
export.write_image = stalled
from covtransfer.cli.common import run_cli
from covtransfer.cli.predict import main
sys.exit(run_cli(main, sys.argv[1:]))
"""


def _kill_when(command: list[str], done, log: Path, timeout: float = 120) -> int:
    """Run ``command``, SIGKILL it once ``done()`` holds (or after ``timeout`` s); its exit status."""
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)))
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline and not done():
            time.sleep(0.02)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
    return process.returncode


def test_a_killed_prediction_leaves_complete_outputs_and_continue_predicts_only_the_rest(tmp_path, results, capsys):
    images, out = tmp_path / "images", tmp_path / "out"
    for case in ("a", "b", "c"):
        write_case(images, case)
    args = ["-i", str(images), "-o", str(out), "-d", "1", "-t", "scratch", "-f", "0", "--results", str(results),
            "--device", "cpu", "--no-tta", "--no-cpu-runtime", "--quiet"]

    def stalled_on_b() -> bool:
        return (out / "a.nii.gz").is_file() and any(p.name.startswith(".b.nii.gz.") for p in out.glob(".*"))

    status = _kill_when([sys.executable, "-c", _STALLED_PREDICT, *args], stalled_on_b, tmp_path / "killed.log")
    assert status == -signal.SIGKILL and stalled_on_b(), (tmp_path / "killed.log").read_text()[-2000:]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.nii.gz"]
    first = read_image(out / "a.nii.gz")[0]  # complete: NIfTI truncation is an error in read_image
    assert first.shape == (10, 20, 18)
    before = (out / "a.nii.gz").stat().st_mtime_ns

    capsys.readouterr()
    assert run_cli(main, args + ["--continue"]) == 0
    assert "2 case(s) predicted" in capsys.readouterr().out
    assert (out / "a.nii.gz").stat().st_mtime_ns == before and np.array_equal(read_image(out / "a.nii.gz")[0], first)
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]  # the leftover is gone
    assert all(read_image(out / f"{case}.nii.gz")[0].shape == (10, 20, 18) for case in "bc")


def test_fold_ensemble_through_the_command_averages_fold_logits(tmp_path, results):
    images = tmp_path / "images"
    write_case(images, "a")
    saved = []
    for folds in (["0"], ["1"], ["0", "1"]):
        out = tmp_path / ("out" + "".join(folds))
        main(["-i", str(images), "-o", str(out), "-d", "1", "-t", "scratch", "-f", *folds, "--results",
              str(results), "--save-probabilities", "--quiet"])
        saved.append(np.load(out / "a.npz")["probabilities"].astype(np.float32))
    assert np.abs(saved[0] - saved[1]).max() > 1e-3
    # the folds' logits are averaged (the softmax forgets a constant, so log-probabilities stand in for them)
    mean = sum(np.log(np.clip(p, 1e-6, None)) for p in saved[:2]) / 2
    assert np.allclose(saved[2], np.exp(mean) / np.exp(mean).sum(0), atol=2e-3)


def test_postprocess_applies_rules_and_requires_them(tmp_path, results):
    images = tmp_path / "images"
    image = np.zeros((10, 20, 18), dtype=np.float32)
    image[1:-1, 1:-1, 1:-1] = -1
    image[2:5, 3:8, 3:8] = 1
    image[7:9, 14:17, 12:16] = 1  # a second, smaller component
    images.mkdir()
    write_image(images / "a_0000.nii.gz", image, Geometry((2.0, 1.0, 1.0)))
    plans = make_plans()
    fold = tmp_path / "model" / "fold_0"
    fold.mkdir(parents=True)
    write_checkpoint(fold / "checkpoint_final.pt", make_checkpoint(plans))
    models = [pointwise_model(plans, fold / "checkpoint_final.pt")]
    (fold.parent / "postprocessing.json").write_text(json.dumps(
        {"largest_component_foreground": True, "largest_component_labels": []}))
    from covtransfer.inference.predictor import find_postprocessing
    result = Predictor(models, "cpu", postprocessing=find_postprocessing(models)).predict_case(
        discover_cases(images)[0])
    assert result.segmentation.sum() == 3 * 5 * 5 and result.segmentation[7:9, 14:17, 12:16].sum() == 0
    plain = Predictor(models, "cpu").predict_case(discover_cases(images)[0])
    assert plain.segmentation.sum() == 3 * 5 * 5 + 2 * 3 * 4
    (fold.parent / "postprocessing.json").unlink()
    with pytest.raises(CovtransferError, match="postprocessing.json: not found; run covtransfer_determine_post"):
        main(["-i", str(images), "-o", str(tmp_path / "out"), "-m", str(fold), "--postprocess", "--quiet"])


def test_refusals_leave_no_output_files(tmp_path, results, capsys):
    images = tmp_path / "images"
    write_case(images, "a")
    model = ["-d", "1", "-t", "scratch", "--results", str(results), "--quiet"]
    with pytest.raises(CovtransferError, match="the output folder is the input folder"):
        main(["-i", str(images), "-o", str(images), *model])
    assert sorted(p.name for p in images.iterdir()) == ["a_0000.nii.gz"]
    (tmp_path / "nomodel").mkdir()
    assert run_cli(main, ["-i", str(images), "-o", str(tmp_path / "o1"), "-m", str(tmp_path / "nomodel")]) == 1
    assert "nomodel: no checkpoint_final.pt" in capsys.readouterr().err
    two = tmp_path / "two"
    write_case(two, "a", channels=2)
    with pytest.raises(CovtransferError, match="a_0000.nii.gz: case a has 2 channel"):
        main(["-i", str(two), "-o", str(tmp_path / "o2"), *model])
    bad = tmp_path / "bad"
    write_case(bad, "a")
    (bad / "b_0000.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(CovtransferError, match="b_0000.nii.gz: unreadable image"):
        main(["-i", str(bad), "-o", str(tmp_path / "o3"), *model])
    with pytest.raises(CovtransferError, match="missing: no such input"):
        main(["-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o4"), *model])
    with pytest.raises(CovtransferError, match="no dataset with id 7"):
        main(["-i", str(images), "-o", str(tmp_path / "o5"), "-d", "7", "-t", "scratch", "--results", str(results)])
    for name in ("o1", "o2", "o3", "o4", "o5"):
        assert not (tmp_path / name).exists() or not any((tmp_path / name).iterdir())


def test_truncated_image_fails_with_its_name_and_leaves_no_partial_file(tmp_path, results):
    images = tmp_path / "images"
    [path] = write_case(images, "z", shape=(10, 40, 40))
    path.write_bytes(path.read_bytes()[:-200])
    out = tmp_path / "out"
    with pytest.raises(CovtransferError, match="z_0000.nii.gz: unreadable image"):
        main(["-i", str(images), "-o", str(out), "-d", "1", "-t", "scratch", "--results", str(results), "--quiet"])
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.gpu
def test_cuda_prediction_matches_the_cpu(tmp_path):
    plans = make_plans(spacing=(2.0, 1.0, 1.0), transpose=(0, 2, 1))
    checkpoint = save_checkpoint(tmp_path / "fold_0", plans)
    write_case(tmp_path / "images", "a", shape=(20, 40, 36))
    [case] = discover_cases(tmp_path / "images")
    results = {}
    for device in ("cpu", "cuda"):
        model = load_model(checkpoint, device)
        results[device] = Predictor([model], device, save_probabilities=True).predict_case(case)
    difference = np.abs(results["cpu"].probabilities.astype(np.float32) - results["cuda"].probabilities)
    assert results["cuda"].segmentation.shape == (20, 40, 36) and difference.max() < 0.05
    assert (results["cpu"].segmentation == results["cuda"].segmentation).mean() > 0.99


@pytest.mark.parametrize("spacing, nan_slab, needle", [
    ((50.0, 50.0, 50.0), False, "spacing 50.0 mm is above 20.0 mm: the header may be in cm"),
    ((3.0, 0.8, 0.9), True, "NaN"),
])
def test_predict_command_refuses_cm_spacing_and_nan_voxels_writing_nothing(tmp_path, results, capsys, spacing,
                                                                          nan_slab, needle):
    images = tmp_path / "images"
    write_case(images, "a", geometry=Geometry(spacing, (0.0, 0.0, 0.0), FLIPPED))
    if nan_slab:
        path = images / "a_0000.nii.gz"
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
        array = sitk.GetArrayFromImage(image)
        array[0] = np.nan
        nan_image = sitk.GetImageFromArray(array)
        nan_image.CopyInformation(image)
        sitk.WriteImage(nan_image, str(path))
    code = run_cli(main, ["-i", str(images), "-o", str(tmp_path / "out"), "-d", "1", "-t", "scratch",
                          "--results", str(results), "--quiet"])
    message = capsys.readouterr().err.strip()
    assert code != 0 and needle in message and "a_0000.nii.gz" in message and "\n" not in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
