"""Writing a raw nnU-Net v2 dataset from paired source files: the part every public-dataset converter shares.

A converter's ``discover`` finds the image/label pairs of one public release and describes them as a
:class:`SourceDataset`; :func:`write_raw_dataset` reads every pair, checks that each label lies on its image's grid,
applies the source's intensity and label mappings, and writes ``imagesTr/<case>_0000.nii.gz``,
``labelsTr/<case>.nii.gz``, ``imagesTs/``, ``dataset.json`` and ``splits.json`` into a temporary folder that becomes
the dataset only when everything succeeded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from covtransfer.atomic import atomic_directory, write_json
from covtransfer.config import dataset_name, parse_dataset_id
from covtransfer.data.dataset_json import DatasetInfo
from covtransfer.data.image_io import Geometry, read_image, write_image
from covtransfer.errors import CovtransferError

ENDING = ".nii.gz"
IMAGE_ENDINGS = (".nii.gz", ".nii")

# (image array) -> (array to write, whether it was changed); (label arrays, their files) -> one label array
ImageTransform = Callable[[np.ndarray], tuple[np.ndarray, bool]]
LabelTransform = Callable[[list[np.ndarray], list[Path]], np.ndarray]


@dataclass
class SourceCase:
    """One case of a public release: its image file and label file(s); several label files are merged."""

    case_id: str
    image: Path
    labels: tuple[Path, ...] = ()


@dataclass
class SourceDataset:
    """What a converter found in a public release and how its files become a raw dataset."""

    default_name: str
    labels: dict[str, int]
    training: list[SourceCase]
    label_transform: LabelTransform
    test: list[SourceCase] = field(default_factory=list)
    unpaired: list[Path] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    image_transform: ImageTransform | None = None
    splits: list[dict] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ConversionReport:
    """The result of a conversion: where it went, which cases, which were remapped, which files were left out."""

    dataset_folder: Path
    cases: list[str]
    test_cases: list[str] = field(default_factory=list)
    windowed_cases: list[str] = field(default_factory=list)
    unpaired: list[Path] = field(default_factory=list)
    splits_written: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few human-readable lines for the command line."""
        lines = [f"wrote {self.dataset_folder}: {len(self.cases)} training case(s), "
                 f"{len(self.test_cases)} test case(s)"]
        if self.windowed_cases:
            lines.append(f"mapped {len(self.windowed_cases)} windowed case(s) back to HU (x / 255 * 1500 - 1250): "
                         + ", ".join(self.windowed_cases))
        if self.splits_written:
            lines.append("wrote splits.json")
        if self.unpaired:
            lines.append(f"{len(self.unpaired)} file(s) could not be paired and were left out:")
            lines.extend(f"  {path}" for path in self.unpaired)
        lines.extend(self.notes)
        return "\n".join(lines)


def strip_image_ending(name: str) -> str | None:
    """``name`` without its ``.nii.gz`` / ``.nii`` ending, or None when it is not a NIfTI file name."""
    lower = name.lower()
    for ending in IMAGE_ENDINGS:
        if lower.endswith(ending):
            return name[: -len(ending)]
    return None


def nifti_files(folder: Path) -> list[Path]:
    """NIfTI files directly in ``folder``, sorted; hidden files (macOS ``._*`` forks in the MSD archives) skipped."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and strip_image_ending(p.name) is not None)


def find_child(folder: Path, *names: str) -> Path | None:
    """The sub-folder of ``folder`` whose name matches one of ``names`` case-insensitively (first name wins)."""
    if not folder.is_dir():
        return None
    children = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    for name in names:
        if name.lower() in children:
            return children[name.lower()]
    return None


def require_folder(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a one-line error naming it and what was expected there."""
    path = Path(path)
    if not path.is_dir():
        raise CovtransferError(f"{path}: not a folder (expected {what})")
    return path


def integer_labels(array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` as integers; an error naming ``path`` when it holds non-integer values."""
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        return array.astype(np.int64, copy=False)
    rounded = np.rint(array)
    if not np.array_equal(rounded, array):
        raise CovtransferError(f"{path}: label file holds non-integer values")
    return rounded.astype(np.int64)


def checked_labels(array: np.ndarray, path: Path, allowed: set[int]) -> np.ndarray:
    """``array`` as uint8 after checking that every value is one of ``allowed``; the error names the file."""
    values = integer_labels(array, path)
    unexpected = sorted(set(np.unique(values).tolist()) - allowed)
    if unexpected:
        raise CovtransferError(f"{path}: unexpected label value(s) {unexpected[:10]} "
                               f"(expected only {sorted(allowed)})")
    return values.astype(np.uint8)


def single_label(allowed: set[int]) -> LabelTransform:
    """A label transform for one label file whose values must lie in ``allowed``."""
    def transform(arrays: list[np.ndarray], paths: list[Path]) -> np.ndarray:
        return checked_labels(arrays[0], paths[0], allowed)
    return transform


def merged_binary(arrays: list[np.ndarray], paths: list[Path]) -> np.ndarray:
    """Every non-zero voxel of any of the label files becomes 1 (merges per-side masks, binarises 0/255 masks)."""
    merged = np.zeros(arrays[0].shape, dtype=np.uint8)
    for array, path in zip(arrays, paths):
        merged[integer_labels(array, path) != 0] = 1
    return merged


def _check_on_grid(label_path: Path, label: np.ndarray, label_geometry: Geometry, image_path: Path,
                   image: np.ndarray, image_geometry: Geometry) -> None:
    if label.shape != image.shape:
        raise CovtransferError(f"{label_path}: label shape {tuple(label.shape)} (z, y, x) does not match its image "
                               f"{image_path.name} {tuple(image.shape)}")
    differing = label_geometry.mismatches(image_geometry)
    if differing:
        raise CovtransferError(f"{label_path}: label {' and '.join(differing)} do(es) not match its image "
                               f"{image_path.name}")


def _write_case(case: SourceCase, source: SourceDataset, images_dir: Path, labels_dir: Path | None) -> bool:
    """Convert one case; True when the image transform changed the intensities."""
    image, geometry = read_image(case.image)
    changed = False
    if source.image_transform is not None:
        image, changed = source.image_transform(image)
    if case.labels and labels_dir is not None:
        arrays = []
        for label_path in case.labels:
            label, label_geometry = read_image(label_path)
            _check_on_grid(label_path, label, label_geometry, case.image, image, geometry)
            arrays.append(label)
        write_image(labels_dir / f"{case.case_id}{ENDING}", source.label_transform(arrays, list(case.labels)),
                    geometry)
    write_image(images_dir / f"{case.case_id}_0000{ENDING}", image, geometry)
    return changed


def _check_case_ids(cases: list[SourceCase]) -> None:
    seen: dict[str, Path] = {}
    for case in cases:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", case.case_id):
            raise CovtransferError(f"{case.image}: case id {case.case_id!r} is not a valid file name stem")
        if case.case_id in seen:
            raise CovtransferError(f"{case.image}: case id {case.case_id} is also given by {seen[case.case_id]}; "
                                   "keep one of them")
        seen[case.case_id] = case.image


def target_folder(raw_root: Path, dataset_id: int, name: str, overwrite: bool) -> Path:
    """The dataset folder to write; refuses an existing one without ``overwrite`` and an id another dataset uses."""
    folder = Path(raw_root) / dataset_name(dataset_id, name)
    if Path(raw_root).is_dir():
        clashes = sorted(p.name for p in Path(raw_root).iterdir()
                         if p.is_dir() and p.name != folder.name and parse_dataset_id(p.name) == dataset_id)
        if clashes:
            raise CovtransferError(f"{raw_root}: dataset id {dataset_id} is already used by {', '.join(clashes)}; "
                                   "choose another id")
    if folder.exists() and not overwrite:
        raise CovtransferError(f"{folder}: dataset already exists (use --overwrite to replace it)")
    return folder


def write_raw_dataset(source: SourceDataset, folder: Path, overwrite: bool = False,
                      progress: bool = False) -> ConversionReport:
    """Write ``source`` as the raw dataset ``folder`` atomically; a failure leaves no partial dataset behind."""
    if not source.training:
        raise CovtransferError("no labelled cases to convert")
    _check_case_ids(source.training + source.test)
    cases = source.training + source.test
    iterator = cases
    if progress:
        from tqdm import tqdm
        iterator = tqdm(cases, desc=f"converting {folder.name}", unit="case")
    windowed: list[str] = []
    with atomic_directory(folder, overwrite=overwrite) as tmp:
        for dirname in ("imagesTr", "labelsTr") + (("imagesTs",) if source.test else ()):
            (tmp / dirname).mkdir()
        training_ids = {case.case_id for case in source.training}
        for case in iterator:
            is_training = case.case_id in training_ids
            images_dir = tmp / ("imagesTr" if is_training else "imagesTs")
            if _write_case(case, source, images_dir, tmp / "labelsTr" if is_training else None):
                windowed.append(case.case_id)
        extra = dict(source.metadata)
        if source.image_transform is not None:
            extra["windowed_cases_remapped_to_hu"] = sorted(windowed)
        info = DatasetInfo(folder.name.split("_", 1)[1], {0: "CT"}, dict(source.labels), len(source.training),
                           ENDING, extra)
        info.save(tmp)
        if source.splits is not None:
            write_json(tmp / "splits.json", source.splits)
    return ConversionReport(folder, sorted(c.case_id for c in source.training), sorted(c.case_id for c in source.test),
                            sorted(windowed), list(source.unpaired), source.splits is not None, list(source.notes))
