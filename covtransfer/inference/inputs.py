"""Finding the cases to predict: a file, a folder of ``<case>_0000.*`` files, a folder of plain images, or a raw
dataset.

Channels of a case are the files ``<case>_0000<ending>``, ``<case>_0001<ending>`` ...; a folder in which every image
is named that way is read as such cases. Otherwise every image in the folder is one single-channel case, named
after the file without its ending. A raw dataset folder (one holding ``imagesTs/``) means its test images. Every
case's channel files are checked before anything is predicted, so a bad input stops the run before any output.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from covtransfer.data.dicom_io import series_folders
from covtransfer.data.image_io import SUPPORTED_ENDINGS, file_ending, read_geometry, refuse_dangling_link
from covtransfer.data.scan_checks import check_header
from covtransfer.errors import CovtransferError

_CHANNEL = re.compile(r"(.+)_(\d{4})")
# a DICOM series (a folder) is predicted into a NIfTI label map; --dicom-seg adds a DICOM SEG
DICOM_OUTPUT_ENDING = ".nii.gz"


@dataclass(frozen=True)
class InputCase:
    """One case to predict: its id, its channel files in channel order, and the file ending of its output."""

    case_id: str
    images: tuple[Path, ...]
    ending: str

    def output_name(self) -> str:
        return self.case_id + self.ending


def _stem(path: Path) -> str:
    return path.name[: -len(file_ending(path))]


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and file_ending(path) in SUPPORTED_ENDINGS


def _channel_of(path: Path) -> tuple[str, int] | None:
    match = _CHANNEL.fullmatch(_stem(path))
    return (match.group(1), int(match.group(2))) if match else None


def _group_channels(files: list[Path]) -> list[InputCase]:
    groups: dict[tuple[str, str], dict[int, Path]] = {}
    for path in files:
        case_id, channel = _channel_of(path)
        groups.setdefault((case_id, file_ending(path)), {})[channel] = path
    cases = []
    for (case_id, ending), channels in sorted(groups.items()):
        expected = list(range(len(channels)))
        if sorted(channels) != expected:
            first = channels[min(channels)]
            found = ", ".join(f"_{c:04d}" for c in sorted(channels))
            raise CovtransferError(f"{first}: case {case_id} has channel files {found}; channels must be numbered "
                                   f"_0000 to _{len(channels) - 1:04d} without gaps")
        cases.append(InputCase(case_id, tuple(channels[c] for c in expected), ending))
    ids = [c.case_id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise CovtransferError(f"{files[0].parent}: case {duplicates[0]} has images with different file endings")
    return cases


def _folder_cases(folder: Path) -> list[InputCase]:
    entries = sorted(folder.iterdir())
    for entry in entries:
        refuse_dangling_link(entry)
    files = [p for p in entries if _is_image(p)]
    if not files:
        endings = ", ".join(SUPPORTED_ENDINGS)
        raise CovtransferError(f"{folder}: no image files to predict (looked for {endings})")
    if all(_channel_of(p) for p in files):
        return _group_channels(files)
    cases = [InputCase(_stem(p), (p,), file_ending(p)) for p in files]
    ids = [c.case_id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise CovtransferError(f"{folder}: two images would both be case {duplicates[0]} (different endings)")
    return cases


def _file_case(path: Path) -> InputCase:
    if file_ending(path) not in SUPPORTED_ENDINGS:
        raise CovtransferError(f"{path}: not an image file this tool reads ({', '.join(SUPPORTED_ENDINGS)})")
    channel = _channel_of(path)
    if channel is None:
        return InputCase(_stem(path), (path,), file_ending(path))
    case_id, _ = channel
    siblings = [p for p in path.parent.iterdir()
                if _is_image(p) and file_ending(p) == file_ending(path) and (_channel_of(p) or ("", 0))[0] == case_id]
    return _group_channels(sorted(siblings))[0]


def discover_cases(path: str | os.PathLike) -> list[InputCase]:
    """The cases under ``path`` (file, folder of channel files or plain images, or raw dataset folder), sorted."""
    path = Path(path)
    if path.is_file():
        return [_file_case(path)]
    if not path.is_dir():
        raise CovtransferError(f"{path}: no such input file or folder")
    if (path / "imagesTs").is_dir():
        return _folder_cases(path / "imagesTs")
    dicom = series_folders(path)
    if dicom:
        return [InputCase(folder.name, (folder,), DICOM_OUTPUT_ENDING) for folder in dicom]
    return _folder_cases(path)


def check_cases(cases: list[InputCase], num_channels: int, allow_spacing: bool = False) -> None:
    """Refuse cases whose channel count differs from the model's, and any image whose header cannot be read.

    Reading only headers is cheap and catches unreadable files before the first output is written; channel files
    of one case must have the same shape.
    """
    for case in cases:
        if len(case.images) != num_channels:
            if len(case.images) == 1 and _channel_of(case.images[0]) is None:
                detail = "a plain image file is one channel"
            else:
                detail = f"case {case.case_id} has {len(case.images)} channel file(s)"
            raise CovtransferError(f"{case.images[0]}: {detail} but the model expects {num_channels} "
                                   f"(channel files <case>_0000{case.ending} ... _{num_channels - 1:04d})")
        geometries = [read_geometry(image) for image in case.images]
        for image, (shape, geometry) in zip(case.images, geometries):
            check_header(image, shape, geometry.spacing, geometry.direction, allow_spacing)
        shapes = [shape for shape, _ in geometries]
        for image, shape in zip(case.images[1:], shapes[1:]):
            if shape != shapes[0]:
                raise CovtransferError(f"{image}: shape {list(shape)} differs from {list(shapes[0])} of "
                                       f"{case.images[0].name}")


def input_folders(cases: list[InputCase]) -> set[Path]:
    """The resolved folders that hold input images (outputs may never be written there)."""
    return {(image if image.is_dir() else image.parent).resolve() for case in cases for image in case.images}
