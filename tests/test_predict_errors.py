"""covtransfer_predict names the problem and the way out: a misspelt strategy gets the closest name, a missing
strategy or fold gets the strategies and folds trained for the dataset (one line, exit 1, no output folder); on a CPU
it says once that mirroring is on, what it costs and which flags skip it."""

import pytest

from covtransfer.cli import predict
from covtransfer.cli.common import run_cli
from cli_checks import refusal
from tiny_models import make_plans, save_checkpoint, write_case


@pytest.fixture
def results(tmp_path):
    """A results root where hybrid has folds 0 and 2 and scratch fold 0 (files stand for checkpoints: the refusals
    come before any is read)."""
    dataset = tmp_path / "results" / "Dataset001_Blobs"
    for strategy, fold in (("hybrid", 0), ("hybrid", 2), ("scratch", 0)):
        (dataset / strategy / f"fold_{fold}").mkdir(parents=True)
        (dataset / strategy / f"fold_{fold}" / "checkpoint_final.pt").write_bytes(b"")
    (dataset / "finetune" / "fold_0").mkdir(parents=True)  # started, never finished
    images = tmp_path / "images"
    images.mkdir()
    return tmp_path


TRAINED = "trained for Dataset001_Blobs with --checkpoint final: hybrid (folds 0, 2); scratch (fold 0)"


@pytest.mark.parametrize("extra, expected", [
    (["-t", "hybird"], "-t hybird: no such strategy (did you mean hybrid? " + TRAINED),
    (["-t", "xyz"], "-t xyz: no such strategy (choose one of scratch, pretrain, continual, finetune, encoder, "
                    "hybrid; " + TRAINED),
    (["-t", "encoder"], "encoder: no such results folder (train with -t encoder first; " + TRAINED),
    (["-t", "hybrid", "-f", "1"], "fold_1/checkpoint_final.pt: checkpoint not found (" + TRAINED),
    (["-t", "finetune"], "no fold_*/checkpoint_final.pt (train a fold first, or pick another with --checkpoint; "
                         + TRAINED),
])
def test_wrong_strategy_or_fold_names_what_is_trained(results, capsys, extra, expected):
    output = results / "out"
    refusal(predict.main, ["-i", str(results / "images"), "-o", str(output), "-d", "1", "--results",
                           str(results / "results"), *extra], capsys, expected)
    assert not output.exists()


@pytest.mark.parametrize("flags, noted", [([], True), (["--no-tta"], False), (["--fast"], False),
                                          (["--quiet"], False)])
def test_mirroring_on_a_cpu_is_noted_once(tmp_path, capsys, flags, noted):
    model = save_checkpoint(tmp_path / "model" / "fold_0", make_plans())
    images = tmp_path / "images"
    for case in ("a", "b"):
        write_case(images, case)
    capsys.readouterr()
    assert run_cli(predict.main, ["-i", str(images), "-o", str(tmp_path / "out"), "-m", str(model),
                                  "--device", "cpu", *flags]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: mirroring")]
    assert notes == ([
        "note: mirroring (test-time augmentation) is on: the network sees every window 8 times, once per flip of "
        "the 3 axes: about 8x the network time on this CPU; --no-tta skips it, --fast skips it and takes 8x fewer "
        "windows"] if noted else [])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.nii.gz"]
