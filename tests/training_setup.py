"""The tiny blob dataset the training tests share, preprocessed once per test module, with short run settings.

Import its fixtures (``roots``, ``no_plots``) into a test module to use them there."""

from pathlib import Path

import pytest

from covtransfer.config import Roots
from covtransfer.training.run_log import RunLog
from covtransfer.training.trainer import TrainingSettings
from tiny_data import preprocessed_roots

DATASET = "Dataset001_Blob"


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Six 16×32×32 blob cases, preprocessed once for the module (fold 0: 4 training, 2 validation cases)."""
    return preprocessed_roots(tmp_path_factory.mktemp("data"), {1: ("Blob", 6, 0)})


def results_in(roots: Roots, folder: Path) -> Roots:
    """The module's data with a results root of the test's own."""
    return Roots(roots.raw, roots.preprocessed, folder)


def settings(**changes) -> TrainingSettings:
    values = dict(epochs=2, iters_per_epoch=2, val_iters=1, save_every=1, device="cpu", final_validation=False)
    return TrainingSettings(**{**values, **changes})


@pytest.fixture
def no_plots(monkeypatch):
    """Skip drawing progress.png (about a second per epoch); one test checks the real plot."""
    monkeypatch.setattr(RunLog, "plot", lambda self, history: None)
