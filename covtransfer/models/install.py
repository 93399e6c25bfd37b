"""Install a model package under ``<results>/models/<name>/`` (``covtransfer_install_model``) and list the installed
ones. A package is unpacked, every sha256 checked and every fold's weights read with ``weights_only``, inside a
temporary folder renamed into place at the end, so a model is installed completely or not at all."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from covtransfer.atomic import atomic_directory, write_json
from covtransfer.errors import CovtransferError
from covtransfer.models.package_format import MANIFEST, MODELS_FOLDER, check_name, read_manifest, sha256_file, \
    unpack_package
from covtransfer.models.sources import installed_folder, package_checkpoints
from covtransfer.network.checkpoint_io import load_checkpoint

INSTALLED = "installed.json"  # where the installed package came from


def _check_weights(package: Path, folder: Path, manifest: dict) -> None:
    for path in package_checkpoints(folder, manifest):
        try:
            load_checkpoint(path)
        except CovtransferError as exc:
            member = path.relative_to(folder).as_posix()
            raise CovtransferError(f"{package}: {member}: {str(exc).split(': ', 1)[-1]}") from None


def install_model(package: str | os.PathLike, results: str | os.PathLike, name: str | None = None,
                  overwrite: bool = False) -> tuple[Path, dict]:
    """Install ``package`` as ``name`` (default: the name in its manifest); returns the folder and the manifest."""
    package = Path(package)
    manifest = read_manifest(package)
    name = check_name(name or manifest.get("name", ""), package)
    target = installed_folder(results, name)
    if target.exists() and not overwrite:
        raise CovtransferError(f"{target}: a model named {name} is already installed; pass --overwrite to replace "
                               "it, or --name NAME to install this one beside it")
    new_folders = [f for f in (target.parent, *target.parent.parents) if not f.exists()]
    try:
        with atomic_directory(target, overwrite=True) as tmp:
            manifest = unpack_package(package, tmp)
            _check_weights(package, tmp, manifest)
            write_json(tmp / INSTALLED, {"package": str(package.resolve()), "sha256": sha256_file(package),
                                         "installed": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    except BaseException:
        for folder in new_folders:  # innermost first; a refused install leaves no trace
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return target, manifest


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def list_models(results: str | os.PathLike) -> list[dict]:
    """The installed models: name, folder, labels, licence, training datasets, pre-training and package."""
    root = Path(results) / MODELS_FOLDER
    models = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith(".") or not (folder / MANIFEST).is_file():
            continue
        manifest, installed = _read(folder / MANIFEST), _read(folder / INSTALLED)
        origin = manifest.get("pretrained_from") or {}
        models.append({"name": folder.name, "folder": folder, "labels": manifest.get("labels", {}),
                       "licence": manifest.get("licence"), "strategy": manifest.get("strategy", {}).get("name"),
                       "folds": manifest.get("folds", []),
                       "datasets": [d.get("name") for d in manifest.get("training_datasets", [])],
                       "pretrained_from": origin.get("name") or origin.get("source"),
                       "package": installed.get("package")})
    return models
