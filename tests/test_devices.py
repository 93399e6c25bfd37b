"""``--device`` is resolved once, at each command's boundary: a torch.device, or one error line before any work."""

import pytest
import torch

from covtransfer.cli import demo, predict, study, train
from covtransfer.cli.common import run_cli
from covtransfer.devices import resolve_device
from covtransfer.errors import CovtransferError

COMMANDS = {
    "train": (train.main, ["-d", "1"]),
    "predict": (predict.main, ["-i", "in", "-o", "out", "-d", "1", "-t", "scratch"]),
    "study": (study.main, ["--target", "1", "--sources", "2"]),
    "demo": (demo.main, ["--scale", "smoke"]),
}


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_resolve_device_names(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("bogus", "cuda:x", "gpu", ""):
        with pytest.raises(CovtransferError, match="use cpu, cuda or auto"):
            resolve_device(bad)
    for absent in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(CovtransferError, match="no CUDA device is available"):
            resolve_device(absent)


def test_cuda_index_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(CovtransferError, match="only 1 CUDA device"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("device, message", [("bogus", "use cpu, cuda or auto"),
                                             ("cuda", "no CUDA device is available")])
def test_every_command_refuses_a_bad_device_with_one_line(command, device, message, no_cuda, capsys, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    main, argv = COMMANDS[command]
    assert run_cli(main, argv + ["--device", device]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --device") and message in err
    assert not any(tmp_path.iterdir())  # refused before any work
