"""The raw dataset description (``dataset.json``) and the listing of its cases.

Two forms are read: nnU-Net v2 (``channel_names``, ``labels`` name -> int, ``numTraining``, ``file_ending``) and the
Medical Segmentation Decathlon form (``modality``, ``labels`` int -> name, ``training`` list), converted on read.
A case ``<case>`` has channel files ``imagesTr/<case>_0000<ending>``, ``_0001`` ... and ``labelsTr/<case><ending>``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from covtransfer.atomic import write_json
from covtransfer.errors import CovtransferError


@dataclass
class DatasetInfo:
    """A validated ``dataset.json``: channel names by index, labels by name, training count and file ending."""

    name: str
    channel_names: dict[int, str]
    labels: dict[str, int]
    num_training: int
    file_ending: str = ".nii.gz"
    extra: dict = field(default_factory=dict)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def ct_channels(self) -> frozenset[int]:
        """The channels named ``CT`` (any case, surrounding blanks ignored): CT-normalised, in Hounsfield units."""
        return frozenset(c for c, name in self.channel_names.items() if name.strip().lower() == "ct")

    @property
    def label_values(self) -> list[int]:
        """All declared label values, sorted (background 0 included)."""
        return sorted(set(self.labels.values()))

    @property
    def foreground_labels(self) -> list[int]:
        return [v for v in self.label_values if v != 0]

    def to_dict(self) -> dict:
        d = dict(self.extra)
        d.update({"name": self.name, "channel_names": {str(k): v for k, v in self.channel_names.items()},
                  "labels": dict(self.labels), "numTraining": self.num_training, "file_ending": self.file_ending})
        return d

    def save(self, folder: str | os.PathLike) -> None:
        write_json(Path(folder) / "dataset.json", self.to_dict())


@dataclass
class Case:
    """One case of a raw dataset: its id, one image file per channel, and its label file (None when unlabelled)."""

    case_id: str
    images: list[Path]
    label: Path | None = None


def _parse_channels(raw: dict, path: Path) -> dict[int, str]:
    channels = raw.get("channel_names", raw.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise CovtransferError(f"{path}: 'channel_names' (or MSD 'modality') must be a non-empty mapping")
    try:
        parsed = {int(k): str(v) for k, v in channels.items()}
    except ValueError:
        raise CovtransferError(f"{path}: channel indices must be integers, got {list(channels)}") from None
    if sorted(parsed) != list(range(len(parsed))):
        raise CovtransferError(f"{path}: channel indices must be 0..{len(parsed) - 1}, got {sorted(parsed)}")
    return parsed


def _parse_labels(raw: dict, path: Path) -> dict[str, int]:
    labels = raw.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise CovtransferError(f"{path}: 'labels' must be a non-empty mapping")
    parsed: dict[str, int] = {}
    for key, value in labels.items():
        if str(key).lstrip("-").isdigit() and not str(value).lstrip("-").isdigit():
            name, number = str(value), key  # MSD form: "0": "background"
        else:
            name, number = str(key), value
        if isinstance(number, (list, tuple)):
            raise CovtransferError(f"{path}: region labels ({name}: {number}) are not supported")
        try:
            parsed[name] = int(number)
        except (TypeError, ValueError):
            raise CovtransferError(f"{path}: label {name!r} has a non-integer value {number!r}") from None
    if 0 not in parsed.values():
        raise CovtransferError(f"{path}: 'labels' must declare background as 0")
    if len(set(parsed.values())) != len(parsed):
        raise CovtransferError(f"{path}: two labels share one value: {parsed}")
    if any(v < 0 for v in parsed.values()):
        raise CovtransferError(f"{path}: label values must be non-negative: {parsed}")
    return parsed


def load_dataset_json(folder: str | os.PathLike) -> DatasetInfo:
    """Read and validate ``folder/dataset.json`` in either form; a one-line error names the problem."""
    path = Path(folder) / "dataset.json"
    if not path.is_file():
        raise CovtransferError(f"{path}: file not found")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CovtransferError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise CovtransferError(f"{path}: must hold a JSON object")
    channels = _parse_channels(raw, path)
    labels = _parse_labels(raw, path)
    num_training = raw.get("numTraining")
    if num_training is None and isinstance(raw.get("training"), list):
        num_training = len(raw["training"])
    if not isinstance(num_training, int) or num_training < 0:
        raise CovtransferError(f"{path}: 'numTraining' must be a non-negative integer, got {num_training!r}")
    ending = raw.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise CovtransferError(f"{path}: 'file_ending' must look like '.nii.gz', got {ending!r}")
    known = {"name", "channel_names", "modality", "labels", "numTraining", "file_ending"}
    extra = {k: v for k, v in raw.items() if k not in known}
    return DatasetInfo(str(raw.get("name", Path(folder).name)), channels, labels, num_training, ending, extra)


def _case_id_of(name: str, ending: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"(.+)_(\d{4})" + re.escape(ending), name)
    return (match.group(1), int(match.group(2))) if match else None


def list_cases(folder: str | os.PathLike, info: DatasetInfo, subset: str = "Tr") -> list[Case]:
    """Cases in ``images<subset>`` sorted by id, each with its channel files and, if present, its label file.

    Missing channel files are not filled in here (``verify`` reports them); the list holds what exists.
    """
    folder = Path(folder)
    images_dir, labels_dir = folder / f"images{subset}", folder / f"labels{subset}"
    by_case: dict[str, dict[int, Path]] = {}
    if images_dir.is_dir():
        for path in images_dir.iterdir():
            parsed = _case_id_of(path.name, info.file_ending)
            if parsed:
                by_case.setdefault(parsed[0], {})[parsed[1]] = path
    cases = []
    for case_id in sorted(by_case):
        channels = by_case[case_id]
        label = labels_dir / f"{case_id}{info.file_ending}"
        cases.append(Case(case_id, [channels[i] for i in sorted(channels)], label if label.is_file() else None))
    return cases
