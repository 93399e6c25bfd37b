"""Check a raw dataset before anything is computed from it, and list every problem at once.

Each file is read once. A problem is one line that starts with the file it concerns (relative to the dataset
folder): missing or extra files, unreadable or truncated files, geometry disagreements between a case's channels and
its label, undeclared or non-integer label values, NaN/Inf voxels, and a ``numTraining`` that does not match.
Hidden files (names starting with ``.``) are ignored. Nothing is written. Float NIfTI images are read a second
time, raw, to find NaN/Inf, because ITK reads those as 0.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from covtransfer.data.dataset_json import DatasetInfo, load_dataset_json
from covtransfer.data.image_io import (DANGLING_LINK, Geometry, count_nonfinite_nifti, file_ending, is_dangling_link,
                                       read_image)
from covtransfer.data.scan_checks import (check_ct_intensities, check_direction, check_extent, check_spacing,
                                          check_volume)
from covtransfer.errors import CovtransferError


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_dataset`: one line per problem, and a one-line summary of what was found."""

    problems: list[str]
    summary: str

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _CaseTask:
    """The files of one case to read: channel index -> image path, and the label path (None when absent)."""

    case_id: str
    images: dict[int, Path]
    label: Path | None
    ct_channels: frozenset[int] = frozenset()


@dataclass
class _CaseResult:
    """What one case contributes to the report: its problems, its spacing and the label values it holds."""

    problems: list[str] = field(default_factory=list)
    spacing: tuple[float, float, float] | None = None
    labels: set[int] = field(default_factory=set)


def _fmt(values) -> str:
    return "[" + ", ".join(f"{float(v):.6g}" for v in values) + "]"


def _rel(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def _read(path: Path, folder: Path, problems: list[str]) -> tuple[np.ndarray, Geometry] | None:
    """``read_image``, with its error recorded as a problem (the file named relative to the dataset), not raised."""
    try:
        return read_image(path)
    except CovtransferError as exc:
        problems.append(str(exc).replace(str(path), _rel(path, folder)))
        return None


def _geometry_problems(name: str, shape: tuple, geometry: Geometry, ref_name: str, ref_shape: tuple,
                       ref_geometry: Geometry) -> list[str]:
    """One line per field (size, spacing, origin, direction) in which a file differs from its reference file."""
    problems = []
    if tuple(shape) != tuple(ref_shape):
        problems.append(f"{name}: size (z, y, x) {list(shape)} differs from {ref_name} {list(ref_shape)}")
    axes = {"spacing": " (z, y, x)", "origin": " (x, y, z)", "direction": ""}
    for key in geometry.mismatches(ref_geometry):
        problems.append(f"{name}: {key}{axes[key]} {_fmt(getattr(geometry, key))} differs from {ref_name} "
                        f"{_fmt(getattr(ref_geometry, key))}")
    return problems


def _integer_values(array: np.ndarray) -> set[int]:
    """The distinct values of an integer array; a chunked bincount when the range is small (faster than unique)."""
    if array.size == 0:
        return set()
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= 1 << 16:
        return {int(v) for v in np.unique(array)}
    seen = np.zeros(high + 1, dtype=bool)
    flat = array.reshape(-1)
    for start in range(0, flat.size, 1 << 22):
        seen |= np.bincount(flat[start:start + (1 << 22)], minlength=high + 1) > 0
    return {int(v) for v in np.flatnonzero(seen)}


def _nonfinite(path: Path, array: np.ndarray) -> tuple[int, int]:
    """NaN and Inf counts of an image; NIfTI files are scanned raw, since ITK reads their NaN/Inf as 0."""
    if file_ending(path) in (".nii", ".nii.gz"):
        return count_nonfinite_nifti(path)
    if array.dtype.kind != "f" or np.isfinite(array).all():
        return 0, 0
    return int(np.isnan(array).sum()), int(np.isinf(array).sum())


def _problems(name: str, checks: list[tuple]) -> list[str]:
    """Run shared scan checks ``(check, arguments)`` on one image; their refusals, collected as problems."""
    problems = []
    for check, arguments in checks:
        try:
            check(name, *arguments)
        except CovtransferError as exc:
            problems.append(str(exc))
    return problems


def _header_problems(name: str, shape: tuple, geometry: Geometry, allow_spacing: bool) -> list[str]:
    """The header checks (spacing and extent unless ``allow_spacing``, direction) of one image, as problems."""
    checks = [(check_direction, (geometry.direction,))]
    if not allow_spacing:
        checks = [(check_spacing, (geometry.spacing,)), (check_extent, (shape, geometry.spacing))] + checks
    return _problems(name, checks)


def _voxel_problems(name: str, array: np.ndarray, is_ct: bool) -> list[str]:
    """The voxel checks (a volume; Hounsfield-unit values for a CT channel) of one image, as problems."""
    return _problems(name, [(check_volume, (array.shape,))] + ([(check_ct_intensities, (array,))] if is_ct else []))


def _check_images(folder: Path, task: _CaseTask, result: _CaseResult,
                  allow_spacing: bool) -> tuple[str, tuple, Geometry] | None:
    """Read each channel of a case; check NaN/Inf and that all channels share the first one's grid.

    Returns the reference (name, shape, geometry) of the first readable channel, or None when none could be read.
    """
    reference = None
    for channel in sorted(task.images):
        path = task.images[channel]
        loaded = _read(path, folder, result.problems)
        if loaded is None:
            continue
        array, geometry = loaded
        name = _rel(path, folder)
        nan, inf = _nonfinite(path, array)
        if nan or inf:
            result.problems.append(f"{name}: {nan} NaN and {inf} Inf voxels")
        result.problems += _header_problems(name, array.shape, geometry, allow_spacing)
        result.problems += _voxel_problems(name, array, channel in task.ct_channels)
        if reference is None:
            reference = (name, array.shape, geometry)
            result.spacing = tuple(float(s) for s in geometry.spacing)
        else:
            result.problems += _geometry_problems(name, array.shape, geometry, *reference)
        del array
    return reference


def _check_label(folder: Path, path: Path, reference: tuple | None, declared: tuple[int, ...],
                 result: _CaseResult) -> None:
    """Read a label; check its grid against the images and that its values are declared integers."""
    loaded = _read(path, folder, result.problems)
    if loaded is None:
        return
    label, geometry = loaded
    name = _rel(path, folder)
    if reference is not None:
        result.problems += _geometry_problems(name, label.shape, geometry, *reference)
    if label.dtype.kind == "f":
        fractional = label != np.round(label)
        if fractional.any():
            examples = ", ".join(f"{v:g}" for v in np.unique(label[fractional])[:5])
            result.problems.append(f"{name}: non-integer label values ({label.dtype} file with {examples})")
            return
        label = label.astype(np.int64)
    elif label.dtype.kind not in "iu":
        result.problems.append(f"{name}: label voxels of type {label.dtype}, expected integers")
        return
    result.labels = _integer_values(label)
    undeclared = sorted(result.labels - set(declared))
    if undeclared:
        result.problems.append(f"{name}: label values {', '.join(map(str, undeclared))} are not declared in "
                               f"dataset.json (declared: {', '.join(map(str, declared))})")


def _check_case(folder: Path, task: _CaseTask, declared: tuple[int, ...], allow_spacing: bool = False) -> _CaseResult:
    """Read every file of one case once and check values and geometry (runs in a worker process when parallel)."""
    result = _CaseResult()
    reference = _check_images(folder, task, result, allow_spacing)
    if task.label is not None:
        _check_label(folder, task.label, reference, declared, result)
    return result


def _not_a_file(path: Path, folder: Path) -> str:
    """The problem of a directory entry that is no regular file: a dangling symlink, or a folder or device."""
    return f"{_rel(path, folder)}: {DANGLING_LINK if is_dangling_link(path) else 'not a file'}"


def _visible_entries(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


def _scan_images(folder: Path, subset: str, info: DatasetInfo, problems: list[str]) -> dict[str, dict[int, Path]]:
    """Channel files of ``images<subset>`` by case id and channel index; naming and channel-count problems recorded."""
    directory, ending = folder / f"images{subset}", info.file_ending
    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(ending))
    by_case: dict[str, dict[int, Path]] = {}
    extra: dict[str, list[Path]] = {}
    for path in _visible_entries(directory):
        match = pattern.fullmatch(path.name)
        if not path.is_file():
            problems.append(_not_a_file(path, folder))
        elif match is None:
            problems.append(f"{_rel(path, folder)}: name does not match <case>_<XXXX>{ending} "
                            f"(4-digit channel index, ending from dataset.json)")
        elif int(match.group(2)) >= info.num_channels:
            extra.setdefault(match.group(1), []).append(path)
        else:
            by_case.setdefault(match.group(1), {})[int(match.group(2))] = path
    declared = ", ".join(f"{k} {v}" for k, v in sorted(info.channel_names.items()))
    for case_id in sorted(set(by_case) | set(extra)):
        present = by_case.setdefault(case_id, {})
        count = len(present) + len(extra.get(case_id, []))
        for channel in range(info.num_channels):
            if channel not in present:
                problems.append(f"images{subset}/{case_id}_{channel:04d}{ending}: missing (case {case_id} has "
                                f"{count} channel file(s); dataset.json declares {info.num_channels}: {declared})")
        for path in extra.get(case_id, []):
            problems.append(f"{_rel(path, folder)}: channel not declared (case {case_id} has {count} channel "
                            f"files; dataset.json declares {info.num_channels}: {declared})")
    return by_case


def _scan_labels(folder: Path, subset: str, ending: str, problems: list[str]) -> dict[str, Path]:
    """Label files of ``labels<subset>`` by case id; names that do not end in ``ending`` are recorded."""
    labels = {}
    for path in _visible_entries(folder / f"labels{subset}"):
        if not path.is_file():
            problems.append(_not_a_file(path, folder))
        elif not path.name.endswith(ending) or path.name == ending:
            problems.append(f"{_rel(path, folder)}: name does not match <case>{ending} (ending from dataset.json)")
        else:
            labels[path.name[:-len(ending)]] = path
    return labels


def _plan_subset(folder: Path, subset: str, info: DatasetInfo, problems: list[str]) -> list[_CaseTask]:
    """Scan one subset (Tr or Ts) and pair images with labels; the read tasks, one per case."""
    by_case = _scan_images(folder, subset, info, problems) if (folder / f"images{subset}").is_dir() else {}
    labels_dir = folder / f"labels{subset}"
    labels = _scan_labels(folder, subset, info.file_ending, problems) if labels_dir.is_dir() else {}
    for case_id in sorted(set(labels) - set(by_case)):
        problems.append(f"{_rel(labels[case_id], folder)}: label without images (no images{subset}/"
                        f"{case_id}_0000{info.file_ending})")
    if subset == "Tr" or labels_dir.is_dir():
        for case_id in sorted(set(by_case) - set(labels)):
            problems.append(f"labels{subset}/{case_id}{info.file_ending}: missing (case {case_id} has images in "
                            f"images{subset})")
    return [_CaseTask(case_id, by_case[case_id], labels.get(case_id), info.ct_channels) for case_id in sorted(by_case)]


def _summary(folder: Path, info: DatasetInfo, n_train: int, n_test: int, results: list[_CaseResult]) -> str:
    spacings = np.array([r.spacing for r in results if r.spacing is not None])
    ranges = ", ".join(f"{lo:.4g}..{hi:.4g}" for lo, hi in zip(spacings.min(0), spacings.max(0))) \
        if len(spacings) else "none"
    names = {v: k for k, v in info.labels.items()}
    found = sorted(set().union(*(r.labels for r in results)))
    labels = ", ".join(f"{v} ({names[v]})" if v in names else str(v) for v in found) or "none"
    return (f"{folder.name}: {n_train} training case(s), {n_test} test case(s), {info.num_channels} channel(s); "
            f"spacing (z, y, x) {ranges} mm; labels found: {labels}")


def verify_dataset(folder: str | os.PathLike, num_processes: int = 1, allow_spacing: bool = False) -> VerifyReport:
    """Check the raw dataset in ``folder`` (dataset.json, imagesTr/labelsTr, imagesTs/labelsTs) and report problems.

    An unreadable ``dataset.json`` is the only problem reported, since nothing else can be checked without it.
    ``num_processes`` > 1 reads cases in parallel; the report is the same.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return VerifyReport([f"{folder}: no such dataset folder"], "")
    try:
        info = load_dataset_json(folder)
    except CovtransferError as exc:
        return VerifyReport([str(exc)], "")
    problems: list[str] = []
    if not (folder / "imagesTr").is_dir():
        problems.append("imagesTr: folder missing")
    train = _plan_subset(folder, "Tr", info, problems)
    test = _plan_subset(folder, "Ts", info, problems)
    if not train:
        problems.append(f"imagesTr: no training cases (expected files <case>_0000{info.file_ending})")
    if info.num_training != len(train):
        problems.append(f"dataset.json: numTraining is {info.num_training} but imagesTr holds {len(train)} case(s)")
    tasks = train + test
    declared = tuple(info.label_values)
    progress = dict(total=len(tasks), desc=f"checking {folder.name}", unit="case", disable=None)  # terminal only
    if num_processes > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(min(num_processes, len(tasks))) as pool:
            results = list(tqdm(pool.map(_check_case, [folder] * len(tasks), tasks, [declared] * len(tasks),
                                         [allow_spacing] * len(tasks)), **progress))
    else:
        results = [_check_case(folder, task, declared, allow_spacing) for task in tqdm(tasks, **progress)]
    for result in results:
        problems += result.problems
    return VerifyReport(problems, _summary(folder, info, len(train), len(test), results))
