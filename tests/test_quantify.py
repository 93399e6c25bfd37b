"""``covtransfer_quantify`` and ``covtransfer_predict --statistics`` through their entry points: per-case JSON and
``statistics.csv`` with hand-checked numbers, model or HU lungs, and the refusals (grid, no lung, raw folder)."""

import csv
import json
import shutil
import subprocess
import sys

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from covtransfer.cli import quantify
from covtransfer.cli.common import run_cli
from covtransfer.cli.predict import main as predict_main
from covtransfer.data.image_io import Geometry, read_image, write_image
from covtransfer.datasets.synthetic import case_rng, generate_case, make_synthetic_dataset
from covtransfer.evaluation import quantify as quantify_module
from covtransfer.evaluation.quantify import STATISTICS_CSV
from covtransfer.data.dicom_io import find_series
from covtransfer.inference import overlays
from covtransfer.inference.dicom_seg import write_dicom_seg
from covtransfer.inference.dicom_sr import write_burden_sr
from cli_checks import refusal
from dicom_series import write_ct_series
from tiny_models import make_plans, save_checkpoint


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two tiny covid phantoms with lung labels (background 0, lung 1, lesion 2) and a dataset.json."""
    return make_synthetic_dataset("covid", 31, 2, raw_root=tmp_path_factory.mktemp("raw"), size="tiny",
                                  with_lungs=True)


def _rows(folder):
    with open(folder / STATISTICS_CSV, newline="") as handle:
        return list(csv.DictReader(handle))


def test_model_lungs_give_the_label_map_numbers(dataset, tmp_path):
    out = tmp_path / "stats"
    assert quantify.main(["-i", str(dataset / "imagesTr"), "-s", str(dataset / "labelsTr"), "-o", str(out)]) == 0
    rows = _rows(out)
    assert [row["case"] for row in rows] == ["covid_000", "covid_001"]
    for row in rows:
        label, geometry = read_image(dataset / "labelsTr" / f"{row['case']}.nii.gz")
        stats = json.loads((out / f"{row['case']}.statistics.json").read_text())
        voxel_ml = np.prod(geometry.spacing) / 1000
        assert stats["lung_source"] == row["lung_source"] == "model"
        assert stats["total"]["lung_ml"] == pytest.approx((label >= 1).sum() * voxel_ml)
        assert stats["total"]["po"] == pytest.approx(100 * (label == 2).sum() / (label >= 1).sum())
        assert stats["label_volumes_ml"] == {"lung": pytest.approx((label == 1).sum() * voxel_ml),
                                             "lesion": pytest.approx((label == 2).sum() * voxel_ml)}
        assert float(row["po_total"]) == pytest.approx(stats["total"]["po"], abs=1e-3)
        assert stats["right"]["lung_ml"] + stats["left"]["lung_ml"] == pytest.approx(stats["total"]["lung_ml"])
        assert row["error"] == ""


def test_without_lung_labels_the_lungs_come_from_hu(dataset, tmp_path):
    segs = tmp_path / "segs"
    segs.mkdir()
    for path in (dataset / "labelsTr").iterdir():
        label, geometry = read_image(path)
        write_image(segs / path.name, (label == 2).astype(np.uint8), geometry)
    out = tmp_path / "stats"
    assert quantify.main(["-i", str(dataset / "imagesTr"), "-s", str(segs), "-o", str(out)]) == 0
    for row in _rows(out):
        label, _ = read_image(dataset / "labelsTr" / f"{row['case']}.nii.gz")
        assert row["lung_source"] == "hu" and "volume_ml_label_1" in row
        assert float(row["po_total"]) == pytest.approx(100 * (label == 2).sum() / (label >= 1).sum(), abs=0.5)


def test_bad_cases_get_one_line_each_and_the_others_their_rows(dataset, tmp_path, capsys):
    images, segs = tmp_path / "images", tmp_path / "segs"
    shutil.copytree(dataset / "imagesTr", images)
    shutil.copytree(dataset / "labelsTr", segs)
    label, geometry = read_image(segs / "covid_001.nii.gz")
    write_image(segs / "covid_001.nii.gz", label[1:], geometry)  # one slice short
    write_image(images / "solid_0000.nii.gz", np.full((8, 20, 20), 30, np.int16), Geometry((5.0, 5.0, 5.0)))
    write_image(segs / "solid.nii.gz", np.ones((8, 20, 20), np.uint8) * 2, Geometry((5.0, 5.0, 5.0)))
    out = tmp_path / "stats"
    capsys.readouterr()
    assert run_cli(quantify.main, ["-i", str(images), "-s", str(segs), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert str(segs / "covid_001.nii.gz") in err[0] and str(images / "covid_001_0000.nii.gz") in err[0]
    assert str(segs / "solid.nii.gz") in err[1] and "no lung found" in err[1]
    rows = {row["case"]: row for row in _rows(out)}
    assert rows["covid_000"]["error"] == "" and rows["covid_000"]["po_total"]
    assert rows["covid_001"]["po_total"] == "" and "differ" in rows["covid_001"]["error"]
    assert "no lung found" in rows["solid"]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["covid_000.statistics.json", STATISTICS_CSV]


def test_raw_dataset_folders_are_refused_and_left_alone(dataset, capsys):
    before = sorted(p.name for p in (dataset / "labelsTr").iterdir())
    for target in (dataset / "labelsTr", dataset):
        refusal(quantify.main, ["-i", str(dataset / "imagesTr"), "-s", str(dataset / "labelsTr"), "-o", str(target)],
                capsys, "raw dataset folder")
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == before
    assert not (dataset / STATISTICS_CSV).exists()


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "covtransfer_quantify"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "covtransfer_quantify" in done.stdout and "--lung-labels" in done.stdout


def test_predict_statistics_equal_quantify_on_its_output(dataset, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "model" / "fold_0", make_plans(spacing=(6.0, 5.0, 5.0),
                                                                           patch=(16, 32, 32)))
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    shutil.copy(dataset / "imagesTr" / "covid_000_0000.nii.gz", images)
    assert predict_main(["-i", str(images), "-o", str(out), "-m", str(checkpoint), "--statistics", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["covid_000.nii.gz", "covid_000.statistics.json", STATISTICS_CSV]
    predicted = json.loads((out / "covid_000.statistics.json").read_text())
    assert set(predicted["label_volumes_ml"]) == {"lesion"}
    again = tmp_path / "again"
    assert quantify.main(["-i", str(images), "-s", str(out), "-o", str(again)]) == 0
    measured = json.loads((again / "covid_000.statistics.json").read_text())
    for key in ("right", "left", "total", "lesion_count", "lung_source"):
        assert measured[key] == predicted[key]


def test_statistics_with_continue_measure_the_skipped_cases_from_their_files(dataset, tmp_path, monkeypatch):
    checkpoint = save_checkpoint(tmp_path / "model" / "fold_0", make_plans(spacing=(6.0, 5.0, 5.0),
                                                                           patch=(16, 32, 32)))
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    shutil.copy(dataset / "imagesTr" / "covid_000_0000.nii.gz", images)
    assert predict_main(["-i", str(images), "-o", str(out), "-m", str(checkpoint), "--quiet"]) == 0
    shutil.copy(dataset / "imagesTr" / "covid_001_0000.nii.gz", images)
    reads = []
    monkeypatch.setattr(quantify_module, "read_image", lambda path: reads.append(Path(path).name) or read_image(path))
    assert predict_main(["-i", str(images), "-o", str(out), "-m", str(checkpoint), "--statistics", "--continue",
                         "--quiet"]) == 0
    assert reads == ["covid_000_0000.nii.gz", "covid_000.nii.gz"]  # only the skipped case is read back
    rows = _rows(out)
    assert [row["case"] for row in rows] == ["covid_000", "covid_001"] and all(row["po_total"] for row in rows)
    for case in ("covid_000", "covid_001"):
        again = tmp_path / f"again_{case}"
        single = tmp_path / f"single_{case}"
        single.mkdir()
        shutil.copy(out / f"{case}.nii.gz", single)
        assert quantify.main(["-i", str(images), "-s", str(single), "-o", str(again)]) == 0
        measured = json.loads((again / f"{case}.statistics.json").read_text())
        predicted = json.loads((out / f"{case}.statistics.json").read_text())
        assert measured["total"] == predicted["total"] and measured["lesions"] == predicted["lesions"]


def test_overlays_with_statistics_show_po_and_pho(dataset, tmp_path, monkeypatch):
    titles = []
    original = overlays.overlay_figure
    monkeypatch.setattr(overlays, "overlay_figure", lambda *args: titles.append(args[3]) or original(*args))
    checkpoint = save_checkpoint(tmp_path / "model" / "fold_0", make_plans(spacing=(6.0, 5.0, 5.0),
                                                                           patch=(16, 32, 32)))
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(dataset / "imagesTr" / "covid_001_0000.nii.gz", images)
    out = tmp_path / "out"
    assert predict_main(["-i", str(images), "-o", str(out), "-m", str(checkpoint), "--statistics", "--overlays",
                         "--quiet"]) == 0
    stats = json.loads((out / "covid_001.statistics.json").read_text())
    assert (out / "covid_001_overlay.png").stat().st_size > 1000
    assert len(titles) == 1 and titles[0].startswith("covid_001   PO ")
    assert f"PO {stats['total']['po']:.1f} %" in titles[0] and f"PHO {stats['total']['pho']:.1f} %" in titles[0]


def test_burden_title_gives_po_and_pho_per_lung():
    row = {"po_total": 12.345, "po_right": 20.0, "po_left": None, "pho_total": 1.0, "pho_right": 2.04,
           "pho_left": None}
    assert overlays.burden_title("c", row) == "c   PO 12.3 % (R 20.0, L n/a)   PHO 1.0 % (R 2.0, L n/a)"
    assert overlays.burden_title("c", {"case": "c", "error": "no lung found"}) == "c"


def test_dicom_input_with_seg_and_statistics_writes_a_structured_report(tmp_path):
    image, _, spacing = generate_case("covid", "tiny", case_rng(2, "covid", 0))
    write_ct_series(tmp_path / "dicom" / "chest", image, Geometry(spacing))
    checkpoint = save_checkpoint(tmp_path / "model" / "fold_0", make_plans(spacing=(6.0, 5.0, 5.0),
                                                                           patch=(16, 32, 32)))
    out = tmp_path / "out"
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(checkpoint), "--dicom-seg",
                         "--statistics", "--quiet"]) == 0
    stats = json.loads((out / "chest.statistics.json").read_text())
    seg = hd.seg.segread(out / "chest.dcm")
    report = hd.sr.srread(out / "chest_sr.dcm")
    groups = report.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["lesion, right lung", "lesion, left lung", "lesion, both lungs"]
    for group, side in zip(groups, ("right", "left", "total")):
        assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        measured = {m.name.meaning: m.value for m in group.get_measurements()}
        units = {m.name.meaning: m.unit.value for m in group.get_measurements()}
        assert measured == pytest.approx({"Volume": stats[side]["lesion_ml"], "Lung volume": stats[side]["lung_ml"],
                                          "Percentage of opacity": stats[side]["po"],
                                          "Percentage of high opacity": stats[side]["pho"]})
        assert units == {"Volume": "ml", "Lung volume": "ml", "Percentage of opacity": "%",
                         "Percentage of high opacity": "%"}
    assert stats["total"]["lung_ml"] > 500  # the phantom's lungs were found


def test_structured_report_carries_the_given_numbers_and_leaves_out_undefined_ones(tmp_path):
    image, label, spacing = generate_case("covid", "tiny", case_rng(2, "covid", 1))
    write_ct_series(tmp_path / "chest", image, Geometry(spacing))
    series = find_series(tmp_path / "chest")
    write_dicom_seg(tmp_path / "chest.dcm", label, series, {"background": 0, "lesion": 1}, "a/b/fold_0")
    part = {"lesion_ml": 12.5, "lung_ml": 1000.0, "po": 1.25, "pho": 0.5}
    stats = {"right": part, "left": {"lesion_ml": 0.0, "lung_ml": 0.0, "po": None, "pho": None}, "total": part}
    write_burden_sr(tmp_path / "sr.dcm", tmp_path / "chest.dcm", str(series.headers[0].SeriesInstanceUID), 1, stats)
    right, left, total = hd.sr.srread(tmp_path / "sr.dcm").content.get_volumetric_roi_measurement_groups()
    assert {m.name.meaning: m.value for m in right.get_measurements()} == {
        "Volume": 12.5, "Lung volume": 1000.0, "Percentage of opacity": 1.25, "Percentage of high opacity": 0.5}
    assert {m.name.meaning for m in left.get_measurements()} == {"Volume", "Lung volume"}
