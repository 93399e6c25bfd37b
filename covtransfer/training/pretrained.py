"""The pre-trained model of a transfer: found (a checkpoint file, a run folder, or a model package by file or
name), read, and checked against the strategy and the target's plans before anything is written."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from covtransfer.config import Roots
from covtransfer.errors import CovtransferError
from covtransfer.models.package_format import fold_member
from covtransfer.models.provenance import checkpoint_origin, package_origin
from covtransfer.models.sources import find_package, installed_folder, opened_package
from covtransfer.network.checkpoint import Checkpoint
from covtransfer.network.checkpoint_io import load_checkpoint
from covtransfer.plans import TOPOLOGY_KEYS, Configuration
from covtransfer.training.checkpoint import find_checkpoint
from covtransfer.training.strategies import PLANS_HINT

KIND_WORDS = {"hybrid": "a hybrid network (a dedicated and an adapted encoder joined by fusion units)"}


@dataclass
class Pretrained:
    """A pre-trained model ready to transfer from: its checkpoint, how to name it, where it comes from (recorded in
    ``load_report.json``) and the fix when its topology differs from the target's plans."""

    checkpoint: Checkpoint
    source: str
    origin: dict
    topology_fix: str


def _from_package(package: Path, reference: str, roots: Roots, target: str) -> Pretrained:
    with opened_package(package) as (folder, manifest):
        folds = [str(f) for f in manifest["folds"]]
        if len(folds) > 1:
            where = installed_folder(roots.results, manifest["name"])
            raise CovtransferError(f"{package}: holds {len(folds)} folds ({', '.join(folds)}); transfer starts from "
                                   f"one: pass --pretrained {where}/fold_K once installed, or export one fold (-f)")
        try:
            checkpoint = load_checkpoint(folder / fold_member(folds[0]))
        except CovtransferError as exc:
            raise CovtransferError(f"{package}: {str(exc).split(': ', 1)[-1]}") from None
    fix = (f"plan {target} with the package's plans (covtransfer_plan_and_preprocess -d {target} --plans-from "
           f"{reference}) and train again")
    return Pretrained(checkpoint, str(package), package_origin(manifest, str(package)), fix)


def load_pretrained(reference: str | os.PathLike, roots: Roots, target: str) -> Pretrained:
    """The pre-trained model ``--pretrained`` names: a model package (``.zip`` or installed name), a checkpoint
    file, or a run folder's ``checkpoint_final.pt``."""
    package = find_package(reference, roots.results)
    if package is not None:
        return _from_package(package, str(reference), roots, target)
    path = find_checkpoint(reference, "final")
    checkpoint = load_checkpoint(path)
    return Pretrained(checkpoint, str(path), checkpoint_origin(checkpoint, str(path), roots), PLANS_HINT)


def check_pretrained_kind(pretrained: Pretrained, strategy: str) -> None:
    """Refuse a finished model of another network kind (a hybrid): transfer starts from a U-Net's encoder."""
    checkpoint = pretrained.checkpoint
    if checkpoint.kind != "unet":
        made = checkpoint.strategy.get("name", checkpoint.kind)
        what = KIND_WORDS.get(checkpoint.kind, f"a {checkpoint.kind} network")
        raise CovtransferError(f"{pretrained.source}: a finished -t {made} model, {what}, not a pre-trained U-Net; "
                               f"-t {strategy} starts from a U-Net checkpoint such as the fold_all of a -t pretrain "
                               "run (or a package exported from one)")


def check_pretrained_topology(pretrained: Pretrained, configuration: Configuration, target: str) -> None:
    """Refuse a pre-trained model whose network topology differs from the target's plans.

    Tensor shapes alone miss some differences (strides), which would leave a network that loads but computes
    something else; the recorded configuration is compared instead.
    """
    theirs = pretrained.checkpoint.configuration.to_dict()
    ours = configuration.to_dict()
    differs = [k for k in TOPOLOGY_KEYS if theirs.get(k) != ours.get(k)]
    if differs:
        key = differs[0]
        raise CovtransferError(f"{pretrained.source}: {key} {theirs.get(key)} differs from {ours.get(key)} in the "
                               f"plans of {target}; {pretrained.topology_fix}")
