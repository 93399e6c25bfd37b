"""Folder evaluation (pairing, geometry checks, summary JSON/CSV), largest-component post-processing and the CLIs."""

import csv
import json
import math

import numpy as np
import pytest

from covtransfer.cli import determine_postprocessing as pp_cli
from covtransfer.cli import evaluate as eval_cli
from covtransfer.cli.common import run_cli
from covtransfer.data.image_io import Geometry, write_image
from covtransfer.errors import CovtransferError
from covtransfer.evaluation.evaluate import evaluate_folders, format_table, json_safe, summarise
from covtransfer.evaluation.postprocessing import (apply_postprocessing, determine_postprocessing,
                                                   largest_component, load_postprocessing)

SHAPE = (8, 16, 16)
GEOMETRY = Geometry((2.0, 0.8, 0.8), (-10.0, 5.0, 3.0))


def strict_json(path):
    """Parse JSON refusing NaN / Infinity, which are not valid JSON."""
    def refuse(name):
        raise ValueError(f"invalid JSON constant {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def blob(z, y, x):
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = 1
    return seg


@pytest.fixture
def folders(tmp_path):
    """Two cases: "good" predicted exactly, "missed" with an empty prediction."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    lesion = blob((2, 6), (4, 10), (4, 12))
    write_image(ref / "good.nii.gz", lesion, GEOMETRY)
    write_image(pred / "good.nii.gz", lesion, GEOMETRY)
    write_image(ref / "missed.nii.gz", blob((1, 3), (2, 5), (2, 5)), GEOMETRY)
    write_image(pred / "missed.nii.gz", np.zeros(SHAPE, np.uint8), GEOMETRY)
    return ref, pred


def test_summary_json_and_csv(folders, tmp_path):
    ref, pred = folders
    output = tmp_path / "out" / "summary.json"
    summary = evaluate_folders(ref, pred, tolerance_mm=2.0, output=output)
    rows = {r["case"]: r for r in summary["per_case"]}
    assert rows["good"]["dice"] == 1.0 and rows["good"]["nsd"] == 1.0 and rows["good"]["hd95"] == 0.0
    assert rows["missed"]["dice"] == 0.0 and math.isnan(rows["missed"]["hd95"])
    assert summary["labels"] == [1] and summary["num_cases"] == 2 and summary["tolerance_mm"] == 2.0
    assert summary["mean"]["1"]["dice"] == 0.5 and summary["std"]["1"]["dice"] == 0.5
    assert summary["mean"]["1"]["hd95"] == 0.0  # NaN of the missed case left out
    assert summary["empty_prediction"] == {"1": 1} and summary["empty_reference"] == {"1": 0}

    written = strict_json(output)
    missed = next(r for r in written["per_case"] if r["case"] == "missed")
    assert missed["hd95"] is None and missed["precision"] is None and missed["n_ref"] == 2 * 3 * 3
    assert list(written["per_case"][0])[:3] == ["case", "label", "dice"]
    assert written["foreground_mean"]["dice"] == 0.5

    with open(output.with_suffix(".csv"), newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["case"] for r in table] == ["good", "missed"]
    assert table[1]["hd95"] == "" and float(table[1]["dice"]) == 0.0 and table[0]["n_ref"] == str(4 * 6 * 8)

    text = format_table(summary)
    assert "DSC %" in text and "NSD@2mm %" in text and "50.0 ± 50.0" in text


def test_labels_default_to_references_and_absent_labels_count_as_both_empty(folders):
    ref, pred = folders
    second = blob((5, 7), (11, 14), (11, 14)) * 2
    write_image(ref / "good.nii.gz", blob((2, 6), (4, 10), (4, 12)) + second, GEOMETRY)
    summary = evaluate_folders(ref, pred)
    assert summary["labels"] == [1, 2]
    label2 = {r["case"]: r for r in summary["per_case"] if r["label"] == 2}
    assert label2["good"]["dice"] == 0.0 and label2["good"]["n_ref"] == 18
    assert label2["missed"]["dice"] == 1.0 and label2["missed"]["n_ref"] == label2["missed"]["n_pred"] == 0
    assert summary["empty_reference"] == {"1": 0, "2": 1}


def test_labels_from_dataset_json_beside_the_references(folders):
    ref, pred = folders
    (ref.parent / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1, "effusion": 4},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    summary = evaluate_folders(ref, pred)
    assert summary["labels"] == [1, 4]
    assert summary["mean"]["4"]["dice"] == 1.0  # absent everywhere
    assert evaluate_folders(ref, pred, labels=[1])["labels"] == [1]


def test_parallel_evaluation_gives_the_same_numbers(folders):
    ref, pred = folders
    serial = evaluate_folders(ref, pred)
    parallel = evaluate_folders(ref, pred, num_processes=2)
    assert json_safe(parallel["per_case"]) == json_safe(serial["per_case"])


def test_geometry_mismatch_names_both_files_and_the_field(folders):
    ref, pred = folders
    moved = Geometry((2.0, 0.8, 0.8), (-10.0, 5.0, 9.0))
    write_image(pred / "good.nii.gz", blob((2, 6), (4, 10), (4, 12)), moved)
    with pytest.raises(CovtransferError, match=r"pred/good\.nii\.gz: origin.*ref/good\.nii\.gz"):
        evaluate_folders(ref, pred)
    write_image(pred / "good.nii.gz", np.zeros((8, 16, 15), np.uint8), GEOMETRY)
    with pytest.raises(CovtransferError, match=r"pred/good\.nii\.gz: shape .*ref/good\.nii\.gz"):
        evaluate_folders(ref, pred)


def test_unmatched_file_names_are_listed(folders):
    ref, pred = folders
    (pred / "missed.nii.gz").unlink()
    write_image(pred / "extra.nrrd", np.zeros(SHAPE, np.uint8), GEOMETRY)
    with pytest.raises(CovtransferError, match=r"unmatched file names: .*missed\.nii\.gz.*extra\.nrrd"):
        evaluate_folders(ref, pred)


def test_bad_arguments_are_user_errors(folders, tmp_path):
    ref, pred = folders
    with pytest.raises(CovtransferError, match="labels"):
        evaluate_folders(ref, pred, labels=[0, 1])
    with pytest.raises(CovtransferError, match="tolerance"):
        evaluate_folders(ref, pred, tolerance_mm=-1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CovtransferError, match="no reference images"):
        evaluate_folders(tmp_path / "empty", pred)
    for name in ("good", "missed"):
        write_image(ref / f"{name}.nii.gz", np.zeros(SHAPE, np.uint8), GEOMETRY)
    with pytest.raises(CovtransferError, match="no foreground label"):
        evaluate_folders(ref, pred)
    assert evaluate_folders(ref, pred, labels=[1])["empty_reference"] == {"1": 2}


def test_summarise_accepts_rows_read_back_from_json():
    rows = [{"case": "a", "label": 1, "dice": 0.2, "nsd": 0.4, "hd95": None, "sensitivity": 1.0,
             "precision": None, "specificity": 1.0, "accuracy": 1.0, "mcc": 0.0, "n_ref": 3, "n_pred": 0},
            {"case": "b", "label": 1, "dice": 0.6, "nsd": 0.8, "hd95": 4.0, "sensitivity": 0.5,
             "precision": 0.5, "specificity": 1.0, "accuracy": 1.0, "mcc": 0.5, "n_ref": 2, "n_pred": 2}]
    summary = summarise(rows)
    assert summary["mean"]["1"]["dice"] == pytest.approx(0.4)
    assert summary["median"]["1"]["nsd"] == pytest.approx(0.6)
    assert summary["mean"]["1"]["hd95"] == 4.0 and summary["std"]["1"]["hd95"] == 0.0
    assert summary["empty_prediction"] == {"1": 1} and summary["num_cases"] == 2


def test_largest_component_uses_full_connectivity():
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1, 1, 1] = mask[2, 2, 2] = mask[3, 3, 3] = True  # touching only at corners: one component
    mask[0, 4, 4] = True
    keep = largest_component(mask)
    assert keep.sum() == 3 and not keep[0, 4, 4]
    assert not largest_component(np.zeros((3, 3, 3), bool)).any()


def test_apply_postprocessing_keeps_the_largest_component_and_leaves_the_input_alone():
    seg = np.zeros((6, 10, 10), dtype=np.uint8)
    seg[1:4, 1:5, 1:5] = 1
    seg[1:3, 5:7, 1:3] = 2  # touches label 1: same foreground component
    seg[5, 8, 8] = 1
    seg[5, 0, 9] = 2
    original = seg.copy()
    out = apply_postprocessing(seg, {"largest_component_foreground": True, "largest_component_labels": []})
    np.testing.assert_array_equal(seg, original)
    assert out[5, 8, 8] == 0 and out[5, 0, 9] == 0 and (out == 2).sum() == 8 and (out == 1).sum() == 48
    only2 = apply_postprocessing(seg, {"largest_component_foreground": False, "largest_component_labels": [2]})
    assert only2[5, 0, 9] == 0 and only2[5, 8, 8] == 1


def write_case(ref_dir, pred_dir, name, ref, pred):
    write_image(ref_dir / f"{name}.nii.gz", ref, GEOMETRY)
    write_image(pred_dir / f"{name}.nii.gz", pred, GEOMETRY)


def test_spurious_blob_gets_the_foreground_rule(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    for i in range(2):
        ref = blob((2, 6), (3 + i, 10), (3, 11))
        pred = ref.copy()
        pred[0:2, 13:15, 13:15] = 1  # small false positive far away
        write_case(ref_dir, pred_dir, f"case{i}", ref, pred)
    rules = determine_postprocessing(ref_dir, pred_dir, output=tmp_path / "pp.json")
    assert rules["largest_component_foreground"] is True and rules["largest_component_labels"] == []
    assert rules["dice_after"] > rules["dice_before"] and rules["dice_after"] == pytest.approx(1.0)
    assert load_postprocessing(tmp_path / "pp.json")["largest_component_foreground"] is True


def test_foreground_rule_rejected_when_a_label_suffers_but_the_label_rule_accepted(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref = np.zeros(SHAPE, dtype=np.uint8)
    ref[1:7, 1:8, 1:8] = 1  # large label 1
    ref[2:4, 12:15, 12:15] = 2  # label 2, apart from label 1
    pred = ref.copy()
    pred[3, 8, 3] = 2  # spurious label-2 voxel touching label 1
    write_case(ref_dir, pred_dir, "a", ref, pred)
    rules = determine_postprocessing(ref_dir, pred_dir, labels=[1, 2])
    assert rules["largest_component_foreground"] is False  # it would delete the real label-2 lesion
    assert rules["largest_component_labels"] == [2]
    assert rules["dice_per_label_after"]["2"] == 1.0 > rules["dice_per_label_before"]["2"]


def test_bad_postprocessing_file(tmp_path):
    path = tmp_path / "pp.json"
    path.write_text(json.dumps({"largest_component_foreground": "yes", "largest_component_labels": []}))
    with pytest.raises(CovtransferError, match="pp.json: 'largest_component_foreground'"):
        load_postprocessing(path)


def test_evaluate_cli_writes_summary_into_the_prediction_folder(folders, capsys):
    ref, pred = folders
    assert eval_cli.main(["-r", str(ref), "-p", str(pred), "--tolerance-mm", "1"]) == 0
    out = capsys.readouterr().out
    assert "NSD@1mm %" in out and "summary written to" in out
    assert strict_json(pred / "summary.json")["tolerance_mm"] == 1.0
    assert (pred / "summary.csv").is_file()
    # the summary files do not disturb a second run
    assert eval_cli.main(["-r", str(ref), "-p", str(pred), "--labels", "1", "-np", "1"]) == 0


def test_cli_errors_become_one_line_and_exit_1(folders, capsys):
    ref, pred = folders
    (pred / "good.nii.gz").unlink()
    with pytest.raises(CovtransferError):
        eval_cli.main(["-r", str(ref), "-p", str(pred)])
    assert run_cli(eval_cli.main, ["-r", str(ref), "-p", str(pred)]) == 1
    assert capsys.readouterr().err.startswith("error: unmatched file names")


def test_determine_postprocessing_cli(folders, tmp_path, capsys):
    ref, pred = folders
    output = tmp_path / "rules.json"
    assert pp_cli.main(["-r", str(ref), "-p", str(pred), "-o", str(output)]) == 0
    rules = strict_json(output)
    assert rules["largest_component_foreground"] is False and rules["largest_component_labels"] == []
    assert "rules written to" in capsys.readouterr().out
