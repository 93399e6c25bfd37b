"""covtransfer_predict names the problem and the way out: a misspelt strategy gets the closest name, a missing
strategy or fold gets the strategies and folds trained for the dataset; one line, exit 1, no output folder."""

import pytest

from covtransfer.cli import predict
from covtransfer.cli.common import run_cli


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


def _error(argv, capsys) -> str:
    capsys.readouterr()
    code = run_cli(predict.main, argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


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
    line = _error(["-i", str(results / "images"), "-o", str(output), "-d", "1", "--results",
                   str(results / "results"), *extra], capsys)
    assert expected in line, line
    assert not output.exists()
