"""What a study folder and the models it reuses were made with, so that a rerun never mixes configurations.

``study.json`` in the study folder records the study's spec. A rerun compares the fields that change a model or a
prediction (datasets, planning, training settings, test-time mirroring) and refuses a folder made with others;
strategies, folds, the pre-training mode, the device and the NSD tolerance may change, since they only add runs
or are recomputed. A finished or interrupted training that the study would reuse is checked the same way against
the settings and plans recorded in its checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from covtransfer.atomic import write_json
from covtransfer.errors import CovtransferError
from covtransfer.network.checkpoint_io import load_checkpoint
from covtransfer.training.trainer import TrainingSettings

RECORD_FILE = "study.json"
# settings that change how a run is executed or checkpointed, not the model it learns
EXECUTION_SETTINGS = frozenset({"device", "compile", "num_workers", "save_every", "final_validation",
                                "validation_tta"})
IDENTITY = ("target", "sources", "configuration", "preset", "gpu_memory_gb", "fingerprint_voxels", "tta", "settings",
            "pretrain_settings")


def settings_identity(settings: TrainingSettings | dict) -> dict:
    """The training settings that shape the learnt model (execution details such as the device left out)."""
    values = asdict(settings) if isinstance(settings, TrainingSettings) else dict(settings)
    return {key: value for key, value in values.items() if key not in EXECUTION_SETTINGS}


def differences(recorded: dict, current: dict, prefix: str = "") -> list[str]:
    """``key: recorded → current`` for every key both hold with different values (nested dicts compared by key)."""
    found = []
    for key in recorded.keys() & current.keys():
        old, new = recorded[key], current[key]
        if isinstance(old, dict) and isinstance(new, dict):
            found += differences(old, new, f"{prefix}{key}.")
        elif json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True):
            found.append(f"{prefix}{key} {json.dumps(old)} there, {json.dumps(new)} now")
    return sorted(found)


def check_study_folder(folder: Path, record: dict) -> None:
    """Refuse a study folder whose recorded spec differs from ``record`` in a field that changes results."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        if (Path(folder) / "results.csv").is_file() or (Path(folder) / "predictions").is_dir():
            raise CovtransferError(f"{folder}: holds study results but no {RECORD_FILE} to tell how they were made; "
                                   "choose another output folder (-o) or delete this one")
        return
    try:
        recorded = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CovtransferError(f"{path}: not valid JSON ({exc}); delete the study folder to start over") from None
    changed = differences({k: recorded[k] for k in IDENTITY if k in recorded}, {k: record[k] for k in IDENTITY})
    if changed:
        raise CovtransferError(f"{folder}: holds a study of another configuration ({'; '.join(changed[:3])}); "
                               "choose another output folder (-o) or delete this one")


def write_study_record(folder: Path, record: dict) -> None:
    """Write ``study.json`` (atomically)."""
    write_json(Path(folder) / RECORD_FILE, record)


def check_reusable(checkpoint_path: Path, settings: TrainingSettings, configuration: dict,
                   configuration_name: str, target: str) -> None:
    """Refuse to reuse a checkpoint trained with other settings, or with plans other than the target's."""
    checkpoint = load_checkpoint(checkpoint_path)
    folder = Path(checkpoint_path).parent
    hint = "delete that folder or use another results root (--results)"
    changed = differences(settings_identity(checkpoint.settings), settings_identity(settings))
    if changed:
        raise CovtransferError(f"{folder}: was trained with other settings ({'; '.join(changed[:3])}); {hint}")
    try:
        theirs = checkpoint.plans.configuration(configuration_name).to_dict()
    except CovtransferError:
        theirs = None
    if theirs != configuration:
        raise CovtransferError(f"{folder}: was trained with plans other than those of {target} (planned again "
                               f"since?); {hint}")


def checkpoint_identity(checkpoint_path: Path) -> dict:
    """What tells one trained model file from another: its size and modification time, which change whenever a
    training writes it again (a retrained or replaced model), so predictions keyed on it are never stale."""
    stat = Path(checkpoint_path).stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def read_record(path: Path) -> dict | None:
    """A JSON record written by the study, or None when it is missing or unreadable (then it is made again)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
