"""Faults in long runs, at a tiny scale: a full disk while a checkpoint, a preprocessed case or a prediction is
written (the old file stays, the error names the path, a rerun resumes), the run lock of a fold folder, and a
damaged checkpoint_latest.pt at --continue (refused, offering checkpoint_previous.pt)."""

import contextlib
import errno
import io
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from covtransfer.data.image_io import Geometry, read_image
from covtransfer.errors import CovtransferError
from covtransfer.inference.export import save_segmentation
from covtransfer.preprocessing.storage import load_case, save_case
from covtransfer.training import run_lock
from covtransfer.training.checkpoint import LATEST, PREVIOUS, newest_checkpoint
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import Trainer, TrainingSettings, TrainingTask
from tiny_models import make_plans

TASK = "Dataset001_Test"
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def make_trainer(folder: Path) -> Trainer:
    """A trainer over tiny plans writing to ``folder``, never fitted."""
    task = TrainingTask(TASK, folder.parent / "data", make_plans(), ["a"], ["b"])
    return Trainer([task], "3d_fullres", make_strategy("scratch"), folder, TrainingSettings(epochs=9, device="cpu"))


@pytest.fixture
def trainer(tmp_path) -> Trainer:
    trainer = make_trainer(tmp_path / "fold_0")
    trainer.output_folder.mkdir()
    return trainer


def save_at(trainer: Trainer, epoch: int) -> None:
    trainer.state.epoch = epoch
    trainer._save(LATEST)


def names(folder: Path) -> list[str]:
    """Every file in ``folder``, temporary (dot) files included."""
    return sorted(p.name for p in folder.iterdir())


def one_line(error: pytest.ExceptionInfo, path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


@contextlib.contextmanager
def file_size_limit(size: int):
    """Writes past ``size`` bytes fail with EFBIG for the block, as on a full disk (SIGXFSZ ignored meanwhile)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


# ---------------------------------------------------------------------------------------------------- full disk
def test_a_full_disk_while_saving_a_checkpoint_keeps_the_old_one_and_a_rerun_resumes(trainer, monkeypatch):
    folder = trainer.output_folder
    save_at(trainer, 1)
    old = (folder / LATEST).read_bytes()
    real_save = torch.save

    def half_then_full(obj, path, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        Path(path).write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        raise ENOSPC

    monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(CovtransferError) as error:
        save_at(trainer, 2)
    assert "not written (No space left on device;" in one_line(error, folder / LATEST)
    monkeypatch.undo()
    assert names(folder) == [LATEST] and (folder / LATEST).read_bytes() == old  # nothing rotated, no temp file
    with file_size_limit(4096), pytest.raises(CovtransferError) as error:  # torch's own failed write(2)
        save_at(trainer, 2)
    assert "not written (" in one_line(error, folder / LATEST) and "free there" in str(error.value)
    assert names(folder) == [LATEST] and (folder / LATEST).read_bytes() == old
    resumed = make_trainer(folder)
    resumed.resume()
    assert resumed.state.epoch == 1


def test_a_full_disk_while_saving_a_preprocessed_case_keeps_the_old_case(tmp_path, monkeypatch):
    data, seg = np.ones((1, 4, 5, 6), np.float32), np.zeros((1, 4, 5, 6), np.int8)
    save_case(tmp_path, "case", data, seg, {"case_id": "case"})
    old = {name: (tmp_path / name).read_bytes() for name in ("case.npz", "case.json")}
    real_write = np.lib.format.write_array

    def full(handle, array, *args, **kwargs):
        handle.write(b"\0" * 64)
        raise ENOSPC

    monkeypatch.setattr(np.lib.format, "write_array", full)
    with pytest.raises(CovtransferError) as error:
        save_case(tmp_path, "case", data * 2, seg, {"case_id": "case", "new": True})
    assert "not written (No space left on device;" in one_line(error, tmp_path / "case.npz")
    assert names(tmp_path) == ["case.json", "case.npz"]
    assert {name: (tmp_path / name).read_bytes() for name in old} == old
    monkeypatch.setattr(np.lib.format, "write_array", real_write)
    save_case(tmp_path, "case", data * 2, seg, {"case_id": "case", "new": True})  # the rerun
    assert load_case(tmp_path, "case")[0].max() == 2 and load_case(tmp_path, "case")[2]["new"]


def test_a_full_disk_while_writing_a_prediction_keeps_the_old_one(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 2, (20, 40, 40), dtype=np.uint8) for _ in range(2)]
    properties = {"original_shape": [20, 40, 40], "geometry": Geometry((1.0, 1.0, 1.0)).to_dict()}
    path = tmp_path / "case.nii.gz"
    save_segmentation(path, labels[0], properties)
    old = path.read_bytes()
    with file_size_limit(1024), pytest.raises(CovtransferError) as error:  # ITK truncates a NIfTI silently
        save_segmentation(path, labels[1], properties)
    assert "not written (it does not read back: unreadable image (truncated" in one_line(error, path)
    assert names(tmp_path) == ["case.nii.gz"] and path.read_bytes() == old

    def failing(*args, **kwargs):
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: itkNrrdImageIO.cxx:1349:\n"
                           "ITK ERROR: could not write")

    monkeypatch.setattr(sitk, "WriteImage", failing)
    with pytest.raises(CovtransferError) as error:
        save_segmentation(path, labels[1], properties)
    assert "not written (Exception thrown in SimpleITK" in one_line(error, path)
    assert names(tmp_path) == ["case.nii.gz"] and path.read_bytes() == old
    monkeypatch.undo()
    save_segmentation(path, labels[1], properties)  # the rerun
    assert np.array_equal(read_image(path)[0], labels[1])


# ---------------------------------------------------------------------------------------------------- run lock
def write_lock(folder: Path, pid: int, host: str = socket.gethostname(), started: float | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / run_lock.LOCK_NAME
    path.write_text(f'{{"pid": {pid}, "host": "{host}", "started": {time.time() if started is None else started}}}')
    return path


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_lock_held_by_a_live_process_is_refused_naming_folder_pid_and_host(tmp_path):
    path = write_lock(tmp_path, os.getpid())
    with pytest.raises(CovtransferError) as error:
        run_lock.acquire(tmp_path)
    message = one_line(error, tmp_path)
    assert f"in use by another covtransfer_train run (pid {os.getpid()} on host {socket.gethostname()}" in message
    run_lock.release(path.with_name("other"))  # never removes a lock it does not hold
    assert path.is_file()


def test_a_lock_of_a_dead_or_reused_pid_is_taken_over_with_a_warning(tmp_path, capsys):
    for pid, started in ((dead_pid(), None), (os.getpid(), 0.0)):  # a lock of 1970: this process is not its owner
        write_lock(tmp_path, pid, started=started)
        with run_lock.run_lock(tmp_path) as path:
            assert f'"pid": {os.getpid()}' in path.read_text()
            assert f"taking over the lock of a run that is gone (pid {pid}" in capsys.readouterr().err
        assert not path.exists()


def test_a_lock_from_another_host_is_refused_with_the_hint_to_delete_it(tmp_path):
    path = write_lock(tmp_path, 1, host="elsewhere")
    with pytest.raises(CovtransferError) as error:
        run_lock.acquire(tmp_path)
    assert "run on another host (pid 1 on host elsewhere" in one_line(error, tmp_path)
    assert str(error.value).endswith(f"if it does not, delete {path}")


def test_the_lock_is_released_on_an_exception(tmp_path):
    with pytest.raises(RuntimeError), run_lock.run_lock(tmp_path / "fold_0"):
        assert (tmp_path / "fold_0" / run_lock.LOCK_NAME).is_file()
        raise RuntimeError
    assert names(tmp_path / "fold_0") == []


# ---------------------------------------------------------------------------------------------- bad checkpoint
def damaged(trainer: Trainer, damage) -> tuple[Path, Path]:
    """Latest (epoch 3) and previous (epoch 2) checkpoints, the latest then damaged by ``damage(bytes)``."""
    save_at(trainer, 2)
    save_at(trainer, 3)
    latest, previous = trainer.output_folder / LATEST, trainer.output_folder / PREVIOUS
    latest.write_bytes(damage(latest.read_bytes()))
    return latest, previous


def flip_a_weight_bit(content: bytes) -> bytes:
    flipped = bytearray(content)
    flipped[len(content) // 2] ^= 0x10  # inside the weights, which torch.load alone would read without noticing
    return bytes(flipped)


@pytest.mark.parametrize("damage", [lambda b: b[:len(b) // 2], flip_a_weight_bit], ids=["truncated", "bit_flip"])
def test_a_damaged_latest_checkpoint_is_refused_offering_the_previous_one(trainer, damage):
    latest, previous = damaged(trainer, damage)
    with pytest.raises(CovtransferError) as error:
        make_trainer(trainer.output_folder).resume()
    message = one_line(error, latest)
    assert message.startswith(f"{latest}: unreadable checkpoint, truncated or corrupt (")
    assert message.endswith(f"; {PREVIOUS} (epoch 2) is intact: pass --resume-from {previous}")

    resumed = make_trainer(trainer.output_folder)
    resumed.resume(previous)
    assert resumed.state.epoch == 2
    assert names(trainer.output_folder) == [LATEST + ".corrupt", PREVIOUS, "metrics.jsonl", "training_log.txt"]
    save_at(resumed, 3)  # the next latest checkpoint keeps the good previous one, never the damaged file
    assert newest_checkpoint(trainer.output_folder) == latest


def test_with_no_intact_checkpoint_the_run_is_refused_not_restarted(trainer):
    save_at(trainer, 2)
    latest = trainer.output_folder / LATEST
    latest.write_bytes(latest.read_bytes()[:100])
    with pytest.raises(CovtransferError) as error:
        make_trainer(trainer.output_folder).resume()
    assert one_line(error, latest).endswith(f"no intact checkpoint in {trainer.output_folder} to resume from: "
                                            "delete the folder to start the run again")
