"""Verify, fingerprint, plan and preprocess datasets: the API behind ``covtransfer_plan_and_preprocess``.

Every dataset is verified before anything is written for any of them, so a broken dataset is refused with its
problems listed and leaves no trace. With ``plans_from`` the source datasets get the target's plans (spacing,
patch, topology, normalisation), so one network fits all of them. It sits above planning and preprocessing, which
know nothing of each other: preprocessing takes plans, whoever made them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

import torch

from covtransfer.config import Roots, find_dataset
from covtransfer.data.dataset_json import list_cases, load_dataset_json
from covtransfer.data.raw_guard import refuse_raw_dataset
from covtransfer.data.verify import verify_dataset
from covtransfer.errors import CovtransferError
from covtransfer.models.sources import find_package, package_plans
from covtransfer.planning.fingerprint import (FOREGROUND_VOXEL_BUDGET, compute_fingerprint, load_fingerprint,
                                              save_fingerprint)
from covtransfer.planning.planner import plan_experiment, plans_from as copy_plans
from covtransfer.plans import Plans
from covtransfer.preprocessing.run import preprocess_dataset


def _refuse_if_broken(raw_folder: Path, num_processes: int, allow_spacing: bool) -> None:
    report = verify_dataset(raw_folder, num_processes, allow_spacing)
    if report.ok:
        return
    if len(report.problems) == 1:
        raise CovtransferError(f"{raw_folder}/{report.problems[0]} (nothing written; see covtransfer_verify)")
    lines = "\n".join(f"  {problem}" for problem in report.problems)
    raise CovtransferError(f"{raw_folder}: {len(report.problems)} problems found, nothing written "
                           f"(fix them or see covtransfer_verify):\n{lines}")


GPU_PRESET_NOTE = ("note: no GPU here, and the default preset sizes the network for a GPU (several seconds per "
                   "training iteration on a CPU); for a network sized for a few CPU cores plan with --preset cpu")


def _target_plans_path(roots: Roots, target: str | int) -> Path:
    try:
        folder = find_dataset(roots.preprocessed, target)
    except CovtransferError:
        raise CovtransferError(f"{roots.preprocessed}: --plans-from target {target} is not planned; plan the target "
                               f"first (covtransfer_plan_and_preprocess -d {target})") from None
    path = folder / "plans.json"
    if not path.is_file():
        raise CovtransferError(f"{path}: --plans-from target {target} is not planned; plan the target first "
                               f"(covtransfer_plan_and_preprocess -d {target})")
    return path


def _package_plans(package: Path) -> Plans:
    """A model package's plans, named after the model (the ``plans_from`` of the datasets planned with them)."""
    data, manifest = package_plans(package)
    try:
        plans = Plans.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise CovtransferError(f"{package}: plans.json is not valid plans ({exc})") from None
    plans.dataset_name = f"model {manifest.get('name')}"
    return plans


def _raw_name(roots: Roots, key: str | int) -> str | None:
    try:
        return find_dataset(roots.raw, key).name
    except CovtransferError:
        return None


def _fingerprint(raw_folder: Path, out_folder: Path, info, num_processes: int, overwrite: bool,
                 voxel_budget: int) -> dict:
    """The saved fingerprint when it covers exactly the current training cases, else a fresh one (saved)."""
    path = out_folder / "dataset_fingerprint.json"
    case_ids = [case.case_id for case in list_cases(raw_folder, info, "Tr")]
    if path.is_file() and not overwrite:
        try:
            saved = load_fingerprint(path)
        except CovtransferError:
            saved = {}
        if saved.get("case_ids") == case_ids:
            return saved
    fingerprint = compute_fingerprint(raw_folder, info, num_processes, voxel_budget)
    save_fingerprint(path, fingerprint)
    return fingerprint


def _preprocessing_inputs(plans: Plans, name: str) -> str:
    """What the stored cases of configuration ``name`` depend on, as canonical JSON (patch and batch do not count)."""
    configuration = plans.configurations[name].to_dict()
    relevant = {key: configuration[key] for key in ("spacing", "normalization", "resampling")}
    relevant.update(transpose=plans.transpose_forward, labels=plans.labels, channels=plans.channel_names)
    return json.dumps(relevant, sort_keys=True)


def _stale_configurations(old_path: Path, new: Plans) -> set[str]:
    """Configurations whose stored cases were made with a different spacing, normalisation, transpose or labels."""
    if not old_path.is_file():
        return set()
    try:
        old = Plans.load(old_path)
    except CovtransferError:
        return set(new.configurations)
    return {name for name in new.configurations
            if name not in old.configurations or _preprocessing_inputs(old, name) != _preprocessing_inputs(new, name)}


def _refuse_replacing_shared_plans(plans_path: Path, plans_from: str | int | None) -> None:
    """Planning a dataset on its own must not silently replace the plans it shares with a target (``--plans-from``):
    every model pre-trained on it would no longer fit that target."""
    if not plans_path.is_file():
        return
    try:
        shared_with = Plans.load(plans_path).plans_from
    except CovtransferError:
        return
    if shared_with:
        how = "without --plans-from" if plans_from is None else "as the --plans-from target"
        raise CovtransferError(f"{plans_path}: these plans came from {shared_with} (--plans-from); planning the "
                               f"dataset {how} would replace them: pass --plans-from {shared_with} to keep them, or "
                               "--overwrite to replace them; nothing written")


def plan_and_preprocess(dataset_ids: Sequence[str | int], roots: Roots, plans_from: str | int | None = None,
                        gpu_memory_gb: float = 8.0, preset: str | None = None,
                        configurations: Sequence[str] | None = None, num_processes: int | None = None,
                        overwrite: bool = False, verify: bool = True, plan_only: bool = False,
                        fingerprint_voxels: int = FOREGROUND_VOXEL_BUDGET, allow_spacing: bool = False) -> list[Path]:
    """Fingerprint, plan and preprocess each dataset; returns the preprocessed dataset folders.

    ``plans_from`` names a target dataset whose plans the others reuse; it must be planned already or be one of
    ``dataset_ids`` (then it is planned first and listed first), or it names a model package (a ``.zip`` or an
    installed model's name), whose plans every dataset gets. ``configurations`` defaults to every planned one.
    Finished cases are kept unless ``overwrite`` (or unless the plans changed since they were written).
    """
    num_processes = int(num_processes or os.cpu_count() or 1)
    raw_folders = list(dict.fromkeys(find_dataset(roots.raw, d) for d in dataset_ids))
    for folder in raw_folders:
        refuse_raw_dataset(roots.preprocessed / folder.name, "--preprocessed", roots.raw)
    target_name, target_plans = None, None
    package = find_package(plans_from, roots.results) if plans_from is not None else None
    if package is not None:
        target_plans = _package_plans(package)
        target_name = target_plans.dataset_name
    elif plans_from is not None:
        target_name = _raw_name(roots, plans_from)
        if target_name in {f.name for f in raw_folders}:
            raw_folders.sort(key=lambda f: f.name != target_name)
        else:
            target_plans = Plans.load(_target_plans_path(roots, plans_from))
            target_name = target_plans.dataset_name
    if verify:
        for folder in raw_folders:
            _refuse_if_broken(folder, num_processes, allow_spacing)
    infos = {folder: load_dataset_json(folder) for folder in raw_folders}
    if not overwrite:
        for folder in raw_folders:
            if plans_from is None or folder.name == target_name:
                _refuse_replacing_shared_plans(roots.preprocessed / folder.name / "plans.json", plans_from)
    if plans_from is not None:
        channels = target_plans.num_input_channels if target_plans else infos[raw_folders[0]].num_channels
        for folder, info in infos.items():
            if info.num_channels != channels:
                raise CovtransferError(f"dataset {folder.name} has {info.num_channels} input channel(s) but the plans "
                                       f"of {target_name} expect {channels}; --plans-from needs datasets with the "
                                       "same channels")

    outputs = []
    gpu_sized_on_cpu = preset in (None, "default") and not torch.cuda.is_available()
    for folder in raw_folders:
        info = infos[folder]
        out = roots.preprocessed / folder.name
        fingerprint = _fingerprint(folder, out, info, num_processes, overwrite, fingerprint_voxels)
        if plans_from is None or folder.name == target_name:
            plans = plan_experiment(fingerprint, info, folder.name, gpu_memory_gb, preset)
            if gpu_sized_on_cpu:
                print(GPU_PRESET_NOTE, file=sys.stderr)
                gpu_sized_on_cpu = False
            if folder.name == target_name:
                target_plans = plans
        else:
            plans = copy_plans(target_plans, folder.name, info)
        names = list(configurations or plans.configurations)
        for name in names:
            plans.configuration(name)
        stale = _stale_configurations(out / "plans.json", plans)
        plans.save(out / "plans.json")
        if plan_only:
            for name in stale:  # cases made with the old plans would otherwise count as finished later
                folder_of_cases = out / (plans.configurations[name].data_identifier or name)
                for properties in folder_of_cases.glob("*.json"):
                    properties.unlink()
        else:
            fresh = [n for n in names if n not in stale]
            if fresh:
                preprocess_dataset(folder, out, plans, fresh, num_processes, overwrite)
            if stale & set(names):
                preprocess_dataset(folder, out, plans, [n for n in names if n in stale], num_processes, True)
        outputs.append(out)
    return outputs
