"""Export a trained model as one package (``covtransfer_export_model``): every requested fold's final weights
(without optimizer state), the plans, the dataset description, the post-processing rules when the run has them, a
manifest of provenance, metrics and checksums, a LICENSE inherited from the training data and a CITATION; written
atomically."""

from __future__ import annotations

import io
import json
import os
import subprocess
import zipfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch

import covtransfer
from covtransfer.atomic import atomic_path, write_error
from covtransfer.config import Roots, find_dataset
from covtransfer.errors import CovtransferError
from covtransfer.evaluation.postprocessing import POSTPROCESSING_FILE, load_postprocessing
from covtransfer.inference.model_loading import fold_folders, run_name, strategy_folder
from covtransfer.models.package_format import (CHECKPOINT, FORMAT, FORMAT_VERSION, MANIFEST, check_name,
                                               fold_member, sha256_stream)
from covtransfer.models.provenance import UNKNOWN, dataset_record, inherited_licences
from covtransfer.models.texts import citation_text, licence_text
from covtransfer.network.checkpoint import Checkpoint
from covtransfer.network.checkpoint_io import load_checkpoint
from covtransfer.plans import TOPOLOGY_KEYS


def model_folder(roots: Roots, datasets: Sequence[str], strategy: str, tag: str | None = None) -> Path:
    """The strategy folder of a run: ``RESULTS/<dataset or Pretrain__...>/<strategy>[__<tag>]``."""
    if len(datasets) == 1:
        return strategy_folder(roots.results, datasets[0], strategy, tag)
    names = [find_dataset(roots.preprocessed, d).name for d in datasets]
    folder = roots.results / run_name(names) / (f"{strategy}__{tag}" if tag else strategy)
    if not folder.is_dir():
        raise CovtransferError(f"{folder}: no such results folder (train with -t {strategy} first)")
    return folder


def _fold_paths(folder: Path, folds: Sequence[str] | None) -> dict[str, Path]:
    trained = {f.name[len("fold_"):]: f for f in fold_folders(folder) if (f / CHECKPOINT).is_file()}
    if not trained:
        raise CovtransferError(f"{folder}: no fold_*/{CHECKPOINT} (a fold is exported once its training finished)")
    if folds is None:
        return trained
    absent = [str(f) for f in folds if str(f) not in trained]
    if absent:
        raise CovtransferError(f"{folder / f'fold_{absent[0]}' / CHECKPOINT}: not found; finished folds: "
                               f"{', '.join(trained)}")
    return {str(f): trained[str(f)] for f in folds}


def _weights_only(checkpoint: Checkpoint) -> bytes:
    """The checkpoint without optimizer, scaler, RNG state and epoch history: what prediction and transfer need."""
    buffer = io.BytesIO()
    torch.save(replace(checkpoint, optimizer=None, grad_scaler=None, rng=None, history=[]).to_dict(), buffer)
    return buffer.getvalue()


def _fold_metrics(fold: Path, checkpoint: Checkpoint) -> dict:
    """Epochs, the final pseudo-Dice moving average and the final validation's foreground means per head."""
    validation = {}
    for head in checkpoint.heads:
        for path in (fold / "validation" / head / "summary.json", fold / "validation" / "summary.json"):
            if path.is_file():
                summary = json.loads(path.read_text())
                validation[head] = {"cases": summary.get("num_cases"), "mean": summary.get("foreground_mean")}
                break
    return {"epochs": checkpoint.epoch, "pseudo_dice_ema": checkpoint.ema, "validation": validation}


def _origin(fold: Path) -> dict | None:
    path = fold / "load_report.json"
    return json.loads(path.read_text()).get("origin") if path.is_file() else None


def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(Path(covtransfer.__file__).parent), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (result.stdout.strip() or None) if result.returncode == 0 else None


def _licence(given: str | None, datasets: list[dict], origin: dict | None, folder: Path) -> str:
    """``--license`` when given, else the licences the training data (and pre-training) state; refused when any
    of them states none."""
    if given:
        return given
    licences = inherited_licences(datasets, origin)
    if not licences or None in licences:
        lacking = [d["name"] for d in datasets + (origin or {}).get("datasets", []) if not d.get("licence")]
        raise CovtransferError(f"{folder}: no licence stated for {', '.join(lacking) or 'the training data'} (no "
                               f"'licence' in its dataset.json); pass --license TEXT, or --license {UNKNOWN} to "
                               "export it without one on purpose")
    return "; ".join(licences)


def _postprocessing(given: str | os.PathLike | None, folder: Path, folds: dict[str, Path]) -> bytes | None:
    """The rules to package: ``given``, else the run's ``postprocessing.json`` (the strategy folder's, or the fold's
    when one fold is exported), as ``--postprocess`` finds them; checked before they are packaged."""
    candidates = [Path(given)] if given else \
        [folder / POSTPROCESSING_FILE] + [f / POSTPROCESSING_FILE for f in folds.values() if len(folds) == 1]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        if given:
            raise CovtransferError(f"{given}: no such post-processing rules file (--postprocessing)")
        return None
    load_postprocessing(path)
    return path.read_bytes()


def _citation(given: str | None) -> str | None:
    """``--citation``: the content of the file it names, else the text itself."""
    try:
        is_file = bool(given) and Path(given).is_file()
    except (OSError, ValueError):  # text too long for a file name
        is_file = False
    return Path(given).read_text() if is_file else given


def build_manifest(name: str, checkpoints: dict[str, Checkpoint], folds: dict[str, Path], roots: Roots,
                   licence: str | None, folder: Path) -> dict:
    """The manifest (less the checksums) of a package of ``checkpoints``, one per fold, which must agree."""
    first_fold, first = next(iter(checkpoints.items()))
    for fold, checkpoint in checkpoints.items():
        if checkpoint.network_spec != first.network_spec or checkpoint.labels != first.labels:
            raise CovtransferError(f"{folds[fold] / CHECKPOINT}: its network or labels differ from fold "
                                   f"{first_fold}'s; export the folds separately (-f)")
    configuration = first.configuration
    datasets = [dataset_record(roots, head) for head in first.heads]
    origins = [o for o in (_origin(f) for f in folds.values()) if o]
    origin = origins[0] if origins else None
    topology = {key: getattr(configuration, key) for key in TOPOLOGY_KEYS}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name,
        "covtransfer_version": covtransfer.__version__, "covtransfer_commit": _git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "strategy": first.strategy, "folds": list(checkpoints),
        "network": {"kind": first.kind, "configuration": first.configuration_name, "heads": first.heads,
                    "predict_head": first.predict_head, "n_stages": configuration.n_stages,
                    "patch_size": configuration.patch_size, **topology},
        "labels": first.labels[first.predict_head], "labels_per_head": first.labels,
        "channels": {index: {"name": channel, "normalization": vars(norm)} for (index, channel), norm
                     in zip(first.plans.channel_names.items(), configuration.normalization)},
        "target_spacing": configuration.spacing, "transpose_forward": first.plans.transpose_forward,
        "training_datasets": datasets, "pretrained_from": origin,
        "licence": _licence(licence, datasets, origin, folder),
        "metrics": {fold: _fold_metrics(folds[fold], c) for fold, c in checkpoints.items()},
    }


def _write_package(output: Path, manifest: dict, members: dict[str, bytes]) -> None:
    """Write the zip atomically: checkpoints stored as they are (already archives), text compressed."""
    manifest["files"] = {member: sha256_stream(io.BytesIO(data)) for member, data in members.items()}
    with atomic_path(output) as tmp:
        try:
            with zipfile.ZipFile(tmp, "w") as archive:
                for member, data in {**members, MANIFEST: json.dumps(manifest, indent=2).encode()}.items():
                    method = zipfile.ZIP_STORED if member.endswith(".pt") else zipfile.ZIP_DEFLATED
                    archive.writestr(member, data, compress_type=method)
        except (OSError, RuntimeError) as exc:
            raise write_error(output, exc) from None


def export_model(roots: Roots, datasets: Sequence[str], strategy: str, output: str | os.PathLike,
                 folds: Sequence[str] | None = None, tag: str | None = None, name: str | None = None,
                 licence: str | None = None, citation: str | None = None,
                 postprocessing: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """Package the finished folds of a run into ``output`` (a ``.zip``); returns its path and manifest.
    ``postprocessing``: a rules file to package instead of the run's own ``postprocessing.json``."""
    output = Path(output)
    if output.suffix.lower() != ".zip":
        raise CovtransferError(f"{output}: a model package is a .zip file; name it <something>.zip")
    folder = model_folder(roots, datasets, strategy, tag)
    name = check_name(name or f"{folder.parent.name}_{folder.name}")
    fold_paths = _fold_paths(folder, folds)
    checkpoints = {fold: load_checkpoint(path / CHECKPOINT) for fold, path in fold_paths.items()}
    manifest = build_manifest(name, checkpoints, fold_paths, roots, licence, folder)
    rules = _postprocessing(postprocessing, folder, fold_paths)
    first = next(iter(checkpoints.values()))
    dataset_json = folder / "dataset.json"
    if not dataset_json.is_file():
        dataset_json = find_dataset(roots.preprocessed, first.predict_head) / "dataset.json"
    members = {"plans.json": json.dumps(first.plans.to_dict(), indent=2).encode(),
               "dataset.json": dataset_json.read_bytes(),
               "LICENSE": licence_text(manifest).encode(),
               "CITATION": citation_text(manifest, _citation(citation)).encode()}
    members.update({fold_member(fold): _weights_only(c) for fold, c in checkpoints.items()})
    if rules is not None:
        members[POSTPROCESSING_FILE] = rules
    _write_package(output, manifest, members)
    return output, manifest
