"""The run lock: ``.covtransfer.lock`` in a training run's fold folder, so two runs never write one folder.

The file is created with ``O_CREAT | O_EXCL`` (atomic: of two runs starting together exactly one gets it) and holds
the owner's pid, host and start time as JSON. A lock whose owner is gone (same host, pid no longer alive, or reused
by a process started later) is taken over with a warning; a lock from another host is refused, since its owner's
liveness cannot be checked from here. The lock is removed when the run ends, also on an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil

from covtransfer.errors import CovtransferError

LOCK_NAME = ".covtransfer.lock"
_READ_TRIES = 20  # a lock just created may not hold its content yet: re-read for up to a second
_READ_PAUSE_S = 0.05
_CLOCK_SLACK_S = 1.0  # a process started this long after the lock was written cannot be its owner


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock: process id, host name and start time (seconds since the epoch)."""

    pid: int
    host: str
    started: float

    @classmethod
    def me(cls) -> "LockOwner":
        return cls(os.getpid(), socket.gethostname(), time.time())

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on host {self.host}, started {started}"

    def is_alive(self) -> bool:
        """Whether the owner (on this host) still runs: its pid exists and was not reused by a later process."""
        if not psutil.pid_exists(self.pid):
            return False
        try:
            return psutil.Process(self.pid).create_time() <= self.started + _CLOCK_SLACK_S
        except psutil.NoSuchProcess:  # ended meanwhile, or a zombie
            return False
        except psutil.AccessDenied:  # cannot look closer: count it as alive
            return True


def _read_owner(path: Path) -> LockOwner | None:
    """The owner recorded in ``path``, or None when the file is gone; re-read while it is being written."""
    for _ in range(_READ_TRIES):
        try:
            content = json.loads(path.read_text())
            return LockOwner(int(content["pid"]), str(content["host"]), float(content["started"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            time.sleep(_READ_PAUSE_S)
    raise CovtransferError(f"{path}: unreadable run lock; if no covtransfer_train run uses {path.parent}, delete it")


def _create(path: Path, owner: LockOwner) -> bool:
    """Create the lock file holding ``owner``; False when it already exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump({"pid": owner.pid, "host": owner.host, "started": owner.started}, handle)
    return True


def acquire(folder: str | os.PathLike) -> Path:
    """Take the lock of ``folder`` (created if needed), taking over one left by a dead process; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = LockOwner.me()
    while not _create(path, me):
        owner = _read_owner(path)
        if owner is None:
            continue
        if owner.host != me.host:
            raise CovtransferError(f"{folder}: in use by a run on another host ({owner.describe()}); whether it still "
                                   f"runs cannot be checked from here: if it does not, delete {path}")
        if owner.is_alive():
            raise CovtransferError(f"{folder}: in use by another covtransfer_train run ({owner.describe()}); wait for "
                                   f"it to end or stop it")
        print(f"warning: {path}: taking over the lock of a run that is gone ({owner.describe()})", file=sys.stderr)
        path.unlink(missing_ok=True)
    return path


def release(path: Path) -> None:
    """Remove the lock at ``path`` if this process holds it (never another run's)."""
    try:
        owner = _read_owner(path)
    except CovtransferError:
        return
    if owner is not None and owner.pid == os.getpid() and owner.host == socket.gethostname():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``folder`` for the ``with`` block; released however the block ends."""
    path = acquire(folder)
    try:
        yield path
    finally:
        release(path)
