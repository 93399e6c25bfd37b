"""The model package: one zip holding ``manifest.json``, ``plans.json``, ``dataset.json``, a weights-only
``fold_<K>/checkpoint_final.pt`` per fold, ``LICENSE`` and ``CITATION``.

The manifest lists the sha256 of every other member, so a damaged or altered package is refused before anything
is used; members are read only after every name is checked to stay inside the package (no ``../``, no absolute
path, no symlink), so unpacking cannot write outside its folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from covtransfer.errors import CovtransferError

FORMAT = "covtransfer-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHECKPOINT = "checkpoint_final.pt"
MODELS_FOLDER = "models"  # installed packages live in <results>/models/<name>/
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_CHUNK = 1 << 20


def check_name(name: str, source: str | os.PathLike = "--name") -> str:
    """A model name usable as a folder name: letters, digits, '_', '-' and '.', starting with a letter or digit."""
    if not NAME.fullmatch(str(name)):
        raise CovtransferError(f"{source}: model name {name!r} may hold only letters, digits, '_', '-' and '.' "
                               "(starting with a letter or digit)")
    return str(name)


def sha256_stream(handle: BinaryIO, copy_to: BinaryIO | None = None) -> str:
    """The sha256 of a stream read to its end, optionally copying it on the way."""
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def fold_member(fold: str) -> str:
    """The package member holding a fold's weights."""
    return f"fold_{fold}/{CHECKPOINT}"


def _escapes(info: zipfile.ZipInfo) -> str | None:
    """Why a member's name or type would leave the package folder when unpacked, or None."""
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "has an absolute path"
    if "\\" in name or ".." in PurePosixPath(name).parts:
        return "leaves the package folder"
    return None


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise CovtransferError(f"{path}: no such model package")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CovtransferError(f"{path}: not a model package (not a complete zip archive: {exc})") from None


def _parse_manifest(path: Path, archive: zipfile.ZipFile) -> dict:
    names = [n for n in archive.namelist() if not n.endswith("/")]  # folder entries of a re-zipped package
    for info in archive.infolist():
        problem = _escapes(info)
        if problem:
            raise CovtransferError(f"{path}: member {info.filename!r} {problem}; refused, nothing unpacked")
    if MANIFEST not in names:
        raise CovtransferError(f"{path}: not a covtransfer model package (a zip without {MANIFEST})")
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile, ValueError) as exc:
        raise CovtransferError(f"{path}: {MANIFEST} is damaged ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CovtransferError(f"{path}: not a covtransfer model package ({MANIFEST} of another format)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CovtransferError(f"{path}: package format version {manifest.get('format_version')!r} is not readable "
                               f"by this covtransfer (it reads version {FORMAT_VERSION}); update covtransfer")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise CovtransferError(f"{path}: {MANIFEST} lacks the sha256 list of the package's files")
    if len(names) != len(set(names)):
        raise CovtransferError(f"{path}: a member name occurs twice; the package was altered")
    unlisted = sorted(set(names) - set(files) - {MANIFEST})
    absent = sorted(set(files) - set(names))
    if unlisted or absent:
        which = f"holds {unlisted[0]}, which its manifest does not list" if unlisted else f"lacks {absent[0]}"
        raise CovtransferError(f"{path}: the package {which}; it was altered or is incomplete")
    missing = [m for m in ("plans.json", "dataset.json", "LICENSE", "CITATION") if m not in files]
    folds = manifest.get("folds")
    if missing or not isinstance(folds, list) or not folds:
        raise CovtransferError(f"{path}: the package lacks {', '.join(missing) or 'folds'}")
    if any(fold_member(str(f)) not in files for f in folds):
        raise CovtransferError(f"{path}: the package lacks the weights of a fold its manifest names")
    return manifest


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a package, once its structure is checked (members listed, none leaving the folder)."""
    path = Path(path)
    with _open_zip(path) as archive:
        return _parse_manifest(path, archive)


def read_verified(path: str | os.PathLike, member: str) -> tuple[bytes, dict]:
    """One member of a package, checked against its sha256 in the manifest, and the manifest."""
    path = Path(path)
    with _open_zip(path) as archive:
        manifest = _parse_manifest(path, archive)
        try:
            data = archive.read(member)
        except (zipfile.BadZipFile, EOFError, ValueError) as exc:
            raise CovtransferError(f"{path}: {member} is damaged ({exc})") from None
    if hashlib.sha256(data).hexdigest() != manifest["files"][member]:
        raise CovtransferError(f"{path}: {member} does not match its sha256 in the manifest (damaged or altered)")
    return data, manifest


def unpack_package(path: str | os.PathLike, folder: str | os.PathLike) -> dict:
    """Unpack a package into the existing empty ``folder``, checking every member's sha256 on the way; returns the
    manifest. The caller removes ``folder`` when this raises."""
    path, folder = Path(path), Path(folder)
    with _open_zip(path) as archive:
        manifest = _parse_manifest(path, archive)
        for member, expected in manifest["files"].items():
            target = folder / member
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(member) as source, open(target, "wb") as copy:
                    digest = sha256_stream(source, copy)
            except (zipfile.BadZipFile, EOFError, ValueError) as exc:
                raise CovtransferError(f"{path}: {member} is damaged ({exc}); refused, nothing installed") from None
            if digest != expected:
                raise CovtransferError(f"{path}: {member} does not match its sha256 in the manifest (damaged or "
                                       "altered); refused, nothing installed")
        (folder / MANIFEST).write_bytes(archive.read(MANIFEST))
    return manifest
