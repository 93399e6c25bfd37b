"""Saving and loading one preprocessed case: ``<case>.npz`` (arrays) and ``<case>.json`` (properties).

The ``.npz`` is an ordinary NumPy archive (``np.load`` reads it) holding ``data`` float32 (C, Z, Y, X) and ``seg``
int8 (1, Z, Y, X). Each member is deflated only when a quick probe shows that it at least halves: label maps and
padded images shrink many-fold, while resampled CT intensities have random low bits, so zlib would spend about
5 s on a clinical case to save some 20 %. The ``.json`` is written last, so a case counts as finished only when
both files exist.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from covtransfer.atomic import atomic_path, write_text
from covtransfer.errors import CovtransferError

_PROBE_BYTES = 1 << 18
_WORTH_COMPRESSING = 0.5


def case_files(folder: str | os.PathLike, case_id: str) -> tuple[Path, Path]:
    """The ``(.npz, .json)`` paths of ``case_id`` in ``folder``."""
    folder = Path(folder)
    return folder / f"{case_id}.npz", folder / f"{case_id}.json"


def is_finished(folder: str | os.PathLike, case_id: str) -> bool:
    """True when both files of ``case_id`` exist in ``folder``."""
    return all(path.is_file() for path in case_files(folder, case_id))


def _compression_for(array: np.ndarray) -> int:
    """ZIP_DEFLATED when deflating a few samples of the array at least halves them, else ZIP_STORED."""
    raw = memoryview(np.ascontiguousarray(array)).cast("B")
    if len(raw) <= 3 * _PROBE_BYTES:
        samples = [raw]
    else:
        middle = len(raw) // 2
        samples = [raw[:_PROBE_BYTES], raw[middle:middle + _PROBE_BYTES], raw[-_PROBE_BYTES:]]
    size = sum(len(s) for s in samples)
    packed = sum(len(zlib.compress(s, 1)) for s in samples)
    return zipfile.ZIP_DEFLATED if packed < _WORTH_COMPRESSING * size else zipfile.ZIP_STORED


def _format_json(obj: dict) -> str:
    """Indented JSON with lists of numbers (coordinates, spacings, shapes) kept on one line."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s+([-+\d.,eE\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_case(folder: str | os.PathLike, case_id: str, data: np.ndarray, seg: np.ndarray | None,
              properties: dict) -> None:
    """Write ``<case>.npz`` then ``<case>.json`` atomically; stale unpacked ``.npy`` copies of the case are removed.

    The old ``.json`` (and ``.npy`` copies) go only once the new ``.npz`` is complete, just before it is renamed into
    place: a failed write (a full disk) leaves the old case as it was, and a crash in between leaves no ``.json``,
    so the case counts as unfinished and is redone.
    """
    npz_path, json_path = case_files(folder, case_id)
    members = {"data": np.asarray(data, dtype=np.float32)}
    if seg is not None:
        members["seg"] = np.asarray(seg, dtype=np.int8)
    with atomic_path(npz_path) as tmp:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
            for key, array in members.items():
                archive.compression = _compression_for(array)
                archive.compresslevel = 1
                with archive.open(f"{key}.npy", "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)
        for stale in (json_path, Path(folder) / f"{case_id}.npy", Path(folder) / f"{case_id}_seg.npy"):
            stale.unlink(missing_ok=True)
    write_text(json_path, _format_json(_json_ready(properties)))


def load_properties(folder: str | os.PathLike, case_id: str) -> dict:
    """The properties (``<case>.json``) of a preprocessed case."""
    _, json_path = case_files(folder, case_id)
    try:
        return json.loads(json_path.read_text())
    except FileNotFoundError:
        raise CovtransferError(f"{json_path}: preprocessed case missing (run covtransfer_plan_and_preprocess)") \
            from None
    except json.JSONDecodeError as exc:
        raise CovtransferError(f"{json_path}: not valid JSON ({exc})") from None


def load_case(folder: str | os.PathLike, case_id: str) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """``(data, seg, properties)`` of a preprocessed case; ``seg`` is None when none was stored."""
    npz_path, _ = case_files(folder, case_id)
    properties = load_properties(folder, case_id)
    try:
        with np.load(npz_path, allow_pickle=False) as archive:
            data = archive["data"]
            seg = archive["seg"] if "seg" in archive.files else None
    except FileNotFoundError:
        raise CovtransferError(f"{npz_path}: preprocessed case missing (run covtransfer_plan_and_preprocess)") \
            from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CovtransferError(f"{npz_path}: unreadable preprocessed case ({exc})") from None
    return data, seg, properties
