"""Atomic writes: every artifact is written under a temporary name in its final folder, then renamed.

A crash or a Ctrl-C therefore leaves either the old file or the complete new one, never a half-written file. A full
or read-only disk becomes a one-line :class:`CovtransferError` naming the final path (the old file stays); a SIGKILL
can leave a temporary file, which :func:`remove_leftovers` clears on the next run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from covtransfer.errors import CovtransferError

_UMASK = os.umask(0)
os.umask(_UMASK)
# errors that say the disk refuses the write (full, over quota, file too large, read-only), not that an input is bad
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def _size_text(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    exponent = min(3, int(math.log(size, 1024)))
    return f"{size / 1024 ** exponent:.1f} {('KiB', 'MiB', 'GiB')[exponent - 1]}"


def _free_space(folder: Path) -> str:
    """The free space of the disk holding ``folder`` (or its nearest existing parent), for an error message."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return _size_text(shutil.disk_usage(folder).free)
    except OSError:
        return "unknown"


def write_error(path: str | os.PathLike, exc: BaseException) -> CovtransferError:
    """The one-line error for a failed write of ``path``: the reason and the free space there (a full disk shows)."""
    path = Path(path)
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    else:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return CovtransferError(f"{path}: not written ({reason}; {_free_space(path.parent)} free there); an existing "
                            f"file of that name is unchanged")


def _temporary_prefix_suffix(path: Path) -> tuple[str, str]:
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    return f".{path.name}.", ".tmp" + suffix


def leftover_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporary files that :func:`atomic_path` (or a writer nested in it) made for ``path`` and a killed process
    left behind."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(r"\.+" + re.escape(path.name) + r"\..*\.tmp")
    return sorted(p for p in path.parent.iterdir() if pattern.match(p.name) and p.is_file())


def remove_leftovers(path: str | os.PathLike) -> None:
    """Delete the temporary files a killed writer of ``path`` left; only call it while nothing else writes ``path``."""
    for leftover in leftover_temporaries(path):
        leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.npz``) so writers that choose a format by the
    file ending behave as they would for the final name. An OSError of a full or read-only disk becomes
    :func:`write_error`.
    """
    path = Path(path)
    prefix, suffix = _temporary_prefix_suffix(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise write_error(path, exc) from None
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes files private; artifacts get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.errno in DISK_ERRNOS:
            raise write_error(path, exc) from None
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path``, on error it is deleted.

    With ``overwrite`` an existing ``path`` is replaced only once the new folder is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} already exists")
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
