"""Models named by file or by name: a package ``.zip`` (unpacked, verified, into a temporary folder for the time it
is used) or an installed package (``<results>/models/<name>/``), for ``predict -m``, ``train --pretrained`` and
``plan_and_preprocess --plans-from``."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from covtransfer.errors import CovtransferError
from covtransfer.inference.model_loading import checkpoint_paths
from covtransfer.models.package_format import MANIFEST, MODELS_FOLDER, NAME, fold_member, read_verified, \
    unpack_package


def installed_folder(results: str | os.PathLike, name: str) -> Path:
    """Where an installed model of ``name`` lives."""
    return Path(results) / MODELS_FOLDER / name


def find_package(reference: str | int | os.PathLike, results: str | os.PathLike) -> Path | None:
    """The package ``reference`` names: a ``.zip`` file, a folder holding ``manifest.json`` (an installed model),
    or the name of an installed model; None when it names none of these (a checkpoint, a run folder, a dataset)."""
    path = Path(str(reference))
    if path.is_file() and path.suffix.lower() == ".zip":
        return path
    if path.is_dir() and (path / MANIFEST).is_file():
        return path
    if not path.exists() and NAME.fullmatch(str(reference)):
        folder = installed_folder(results, str(reference))
        if (folder / MANIFEST).is_file():
            return folder
    return None


def _installed_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CovtransferError(f"{folder / MANIFEST}: unreadable ({exc}); install the model again") from None


@contextlib.contextmanager
def opened_package(package: Path) -> Iterator[tuple[Path, dict]]:
    """The folder and manifest of a package: an installed one as it is, a zip unpacked (every sha256 checked) into
    a temporary folder that is removed on exit."""
    if package.is_dir():
        yield package, _installed_manifest(package)
        return
    with tempfile.TemporaryDirectory(prefix="covtransfer-model-") as tmp:
        yield Path(tmp), unpack_package(package, tmp)


def package_checkpoints(folder: Path, manifest: dict) -> list[Path]:
    """The weights of every fold of an opened package, in the manifest's order."""
    paths = [folder / fold_member(str(fold)) for fold in manifest["folds"]]
    for path in paths:
        if not path.is_file():
            raise CovtransferError(f"{path}: missing from the installed model; install it again")
    return paths


def package_plans(package: Path) -> tuple[dict, dict]:
    """A package's plans and manifest, read without unpacking its weights (the plans' sha256 checked)."""
    if package.is_dir():
        return json.loads((package / "plans.json").read_text()), _installed_manifest(package)
    data, manifest = read_verified(package, "plans.json")
    return json.loads(data), manifest


def _refuse_unknown_name(reference: str, results: str | os.PathLike) -> None:
    """A plain name that is neither a path nor an installed model: list the installed ones."""
    if Path(reference).exists() or not NAME.fullmatch(reference):
        return
    root = Path(results) / MODELS_FOLDER
    names = sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []
    raise CovtransferError(f"{reference}: no such file or folder, nor a model installed in {root} (installed: "
                           f"{', '.join(names) or 'none'}; see covtransfer_install_model)")


def model_checkpoints(references: Sequence[str], results: str | os.PathLike, which: str,
                      stack: contextlib.ExitStack) -> list[Path]:
    """The checkpoints of ``-m`` arguments: every fold of a package (by file or name; a zip stays unpacked until
    ``stack`` closes), or :func:`~covtransfer.inference.model_loading.checkpoint_paths` of anything else."""
    found: list[Path] = []
    for reference in references:
        package = find_package(reference, results)
        if package is None:
            _refuse_unknown_name(reference, results)
            found += checkpoint_paths([reference], which)
            continue
        if which != "final":
            raise CovtransferError(f"{package}: a model package holds final checkpoints only; drop --checkpoint")
        found += package_checkpoints(*stack.enter_context(opened_package(package)))
    return found
