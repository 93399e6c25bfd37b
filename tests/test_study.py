"""The study driver on tiny data: two strategies, one fold, a few iterations, outputs, and resumption."""

import csv
import json
import os

import pytest

from covtransfer.config import Roots
from covtransfer.errors import CovtransferError
from covtransfer.experiments.aggregation import aggregate, convergence_epoch
from covtransfer.experiments.spec import StudySpec
from covtransfer.experiments.study import Study
from covtransfer.training.trainer import TrainingSettings
from tiny_data import FINGERPRINT_VOXELS, write_raw_dataset


def _settings() -> TrainingSettings:
    return TrainingSettings(epochs=2, iters_per_epoch=2, val_iters=1, device="cpu", save_every=1,
                            final_validation=False)


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("study")
    roots = Roots(base / "raw", base / "preprocessed", base / "results")
    write_raw_dataset(roots.raw, 11, "Target", n_train=4, n_test=2, seed=1)
    write_raw_dataset(roots.raw, 12, "SourceA", n_train=3, seed=2, intensity=400.0)
    write_raw_dataset(roots.raw, 13, "SourceB", n_train=3, seed=3, intensity=500.0)
    spec = StudySpec(target="11", sources=["12", "13"], strategies=["scratch", "finetune"], folds=["all"],
                     settings=_settings(), preset="cpu", num_processes=1, tta=False,
                     fingerprint_voxels=FINGERPRINT_VOXELS)
    output = base / "study"
    rows = Study(spec, roots, output).run()
    return roots, spec, output, rows


def test_study_writes_results_for_each_strategy(study_run):
    roots, _, output, rows = study_run
    assert [(r["pretraining"], r["strategy"]) for r in rows] == [("none", "scratch"), ("multi", "finetune")]
    for row in rows:
        assert row["num_cases"] == 2  # the two labelled imagesTs cases, one label each
        assert 0.0 <= row["dice_mean"] <= 1.0
    with open(output / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [t["strategy"] for t in table] == ["scratch", "finetune"]
    assert "| none | scratch | 2 |" in (output / "results.md").read_text()
    for name in ("convergence.png", "dice_boxplot.png", "commands.txt", "per_case.csv", "burden.csv"):
        assert (output / name).is_file()
    assert list(output.glob("overlay_*.png"))
    with open(output / "burden.csv") as handle:
        burden = list(csv.DictReader(handle))
    assert len(burden) == 2 and list(burden[0])[3:] == ["scratch", "finetune (multi)"]
    assert "## Disease burden" in (output / "results.md").read_text()
    assert "Disease burden" in (output / "report.html").read_text()
    commands = (output / "commands.txt").read_text()
    assert "covtransfer_train -d Dataset012_SourceA Dataset013_SourceB -t pretrain -f all" in commands
    assert "--plans-from Dataset011_Target" in commands
    finetune = roots.results / "Dataset011_Target" / "finetune__from_multi" / "fold_all"
    assert json.loads((finetune / "load_report.json").read_text())["loaded"]
    assert len(list((output / "predictions" / "scratch" / "fold_all").glob("*.nii.gz"))) == 2


def test_rerun_skips_finished_steps(study_run):
    roots, spec, output, rows = study_run
    checkpoint = roots.results / "Dataset011_Target" / "scratch" / "fold_all" / "checkpoint_final.pt"
    prediction = next((output / "predictions" / "scratch" / "fold_all").glob("*.nii.gz"))
    stamps = checkpoint.stat().st_mtime_ns, prediction.stat().st_mtime_ns
    again = Study(spec, roots, output).run()
    assert (checkpoint.stat().st_mtime_ns, prediction.stat().st_mtime_ns) == stamps
    assert [r["dice_mean"] for r in again] == [r["dice_mean"] for r in rows]


def test_predictions_are_redone_when_the_model_changes(study_run):
    roots, spec, output, rows = study_run
    checkpoint = roots.results / "Dataset011_Target" / "scratch" / "fold_all" / "checkpoint_final.pt"
    scratch = sorted((output / "predictions" / "scratch" / "fold_all").glob("*.nii.gz"))
    finetune = sorted((output / "predictions" / "finetune__from_multi" / "fold_all").glob("*.nii.gz"))
    stamps = [p.stat().st_mtime_ns for p in scratch + finetune]
    # the model retrained (or replaced) under the same name: a newer file than the predictions were made with
    os.utime(checkpoint, ns=(checkpoint.stat().st_atime_ns, checkpoint.stat().st_mtime_ns + 10**9))
    Study(spec, roots, output).run()
    assert all(p.stat().st_mtime_ns > stamp for p, stamp in zip(scratch, stamps))  # redone with the new model
    assert [p.stat().st_mtime_ns for p in finetune] == stamps[len(scratch):]  # its model unchanged: reused
    record = json.loads((output / "predictions" / "scratch" / "fold_all" / "model.json").read_text())
    assert record == {"size": checkpoint.stat().st_size, "mtime_ns": checkpoint.stat().st_mtime_ns}


def test_interrupted_training_is_resumed(study_run):
    roots, spec, output, rows = study_run
    fold = roots.results / "Dataset011_Target" / "scratch" / "fold_all"
    (fold / "checkpoint_final.pt").rename(fold / "checkpoint_latest.pt")
    history = [json.loads(line) for line in (fold / "metrics.jsonl").read_text().splitlines()]
    Study(spec, roots, output).run()
    assert (fold / "checkpoint_final.pt").is_file()
    assert [r["epoch"] for r in map(json.loads, (fold / "metrics.jsonl").read_text().splitlines())] == \
        [r["epoch"] for r in history]


def test_convergence_epoch_and_aggregate():
    history = [{"epoch": i, "ema_dice": v} for i, v in enumerate([0.1, 0.5, 0.75, 0.8])]
    assert convergence_epoch(history) == 2  # 0.75 >= 0.9 * 0.8 = 0.72
    assert convergence_epoch([{"epoch": i, "ema_dice": 0.0} for i in range(3)]) is None  # never learned
    per_case = [{"case": "a", "fold": "0", "label": 1, "dice": 0.5, "nsd": 0.6, "hd95": 1.0, "sensitivity": 0.5,
                 "precision": 0.5, "specificity": 1.0, "accuracy": 1.0, "mcc": 0.5, "n_ref": 4, "n_pred": 4},
                {"case": "b", "fold": "0", "label": 1, "dice": 0.7, "nsd": 0.8, "hd95": 1.0, "sensitivity": 0.7,
                 "precision": 0.7, "specificity": 1.0, "accuracy": 1.0, "mcc": 0.7, "n_ref": 4, "n_pred": 4}]
    row = aggregate("none", "scratch", per_case, [history], [120.0])
    assert row["dice_mean"] == pytest.approx(0.6)
    assert row["dice_std"] == pytest.approx(0.1)
    assert row["training_minutes"] == pytest.approx(2.0)
    assert row["convergence_epoch"] == 2


def test_bad_study_options_are_refused(tmp_path):
    roots = Roots(tmp_path / "raw", tmp_path / "pre", tmp_path / "res")
    with pytest.raises(CovtransferError, match="unknown strategy"):
        Study(StudySpec(target="1", sources=["2"], strategies=["magic"]), roots)
    with pytest.raises(CovtransferError, match="--pretrain"):
        Study(StudySpec(target="1", sources=["2"], pretrain="some"), roots)
