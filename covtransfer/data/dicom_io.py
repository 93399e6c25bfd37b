"""DICOM CT series as input: finding series in folders, checking them slice by slice, reading them through GDCM.

Headers are read with pydicom; a series must be CT, one orientation, one slice size and evenly spaced along the
slice normal (a gap means a missing slice). Slices are sorted by their position along that normal, never by file
name, and the sorted files go to SimpleITK's series reader (GDCM), which gives the voxels and the geometry exactly as
the NIfTI route would see the same volume.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.misc import is_dicom

from covtransfer.data.geometry import Geometry
from covtransfer.errors import CovtransferError

# tolerances: direction cosines, and the relative deviation of one slice gap from the median gap
_ORIENTATION_TOLERANCE = 1e-4
_GAP_TOLERANCE = 0.01


@dataclass(frozen=True)
class DicomSeries:
    """One checked series: its folder, SeriesInstanceUID and files sorted along the slice normal."""

    folder: Path
    uid: str
    files: tuple[Path, ...]
    headers: tuple[pydicom.Dataset, ...]

    @property
    def name(self) -> str:
        return f"{self.folder} (series {self.uid})"


def _is_dicom_file(path: Path) -> bool:
    if not path.is_file() or path.name.startswith("."):
        return False
    return path.suffix.lower() == ".dcm" or (path.suffix == "" and is_dicom(str(path)))


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (``*.dcm``, or files without an ending that start like DICOM)."""
    return sorted(p for p in folder.iterdir() if _is_dicom_file(p))


def series_folders(folder: str | os.PathLike) -> list[Path]:
    """The folders holding one DICOM series each: ``folder`` itself, or its subfolders (empty if neither)."""
    folder = Path(folder)
    if dicom_files(folder):
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and dicom_files(p))


def _header(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for a damaged file
        raise CovtransferError(f"{path}: unreadable DICOM header ({str(exc).splitlines()[0][:120]})") from None


def _normal(orientation: np.ndarray) -> np.ndarray:
    return np.cross(orientation[:3], orientation[3:])


def _sorted_slices(folder: Path, uid: str, files: list[Path],
                   headers: list[pydicom.Dataset]) -> tuple[tuple[Path, ...], tuple[pydicom.Dataset, ...]]:
    """Check one series and sort it along the slice normal; refuse it (one line naming it) when it is not a CT
    volume with one orientation, one slice size and even spacing."""
    name = f"{folder} (series {uid})"
    modalities = sorted({str(h.get("Modality", "")) for h in headers})
    if modalities != ["CT"]:
        raise CovtransferError(f"{name}: modality {'/'.join(modalities) or 'missing'}, expected CT")
    sizes = sorted({(int(h.Rows), int(h.Columns)) for h in headers})
    if len(sizes) > 1:
        raise CovtransferError(f"{name}: slices of different sizes {', '.join(f'{r}x{c}' for r, c in sizes)}")
    try:
        orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
        positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    except AttributeError:
        raise CovtransferError(f"{name}: a slice lacks ImageOrientationPatient or ImagePositionPatient") from None
    if np.abs(orientations - orientations[0]).max() > _ORIENTATION_TOLERANCE:
        raise CovtransferError(f"{name}: mixed slice orientations")
    along = positions @ _normal(orientations[0])
    order = np.argsort(along, kind="stable")
    gaps = np.diff(along[order])
    if len(gaps):
        typical = float(np.median(gaps))
        worst = int(np.argmax(np.abs(gaps - typical)))
        if typical <= 0 or abs(gaps[worst] - typical) > _GAP_TOLERANCE * typical:
            raise CovtransferError(f"{name}: missing or duplicate slice: gap of {gaps[worst]:.3g} mm after "
                                   f"{files[order[worst]].name} where slices are {typical:.3g} mm apart")
    return tuple(files[i] for i in order), tuple(headers[i] for i in order)


def find_series(folder: str | os.PathLike) -> DicomSeries:
    """The one checked series in ``folder``; refuses a folder holding several series or none."""
    folder = Path(folder)
    files = dicom_files(folder)
    if not files:
        raise CovtransferError(f"{folder}: no DICOM files")
    headers = [_header(p) for p in files]
    uids = sorted({str(h.get("SeriesInstanceUID", "")) for h in headers})
    if len(uids) > 1:
        raise CovtransferError(f"{folder}: holds {len(uids)} DICOM series ({', '.join(uids)}); put each series in "
                               "its own subfolder")
    sorted_files, sorted_headers = _sorted_slices(folder, uids[0], files, headers)
    return DicomSeries(folder, uids[0], sorted_files, sorted_headers)


def series_geometry(series: DicomSeries) -> tuple[tuple[int, int, int], Geometry]:
    """The ``(z, y, x)`` shape and geometry of a checked series from its headers alone (pydicom's view)."""
    first = series.headers[0]
    orientation = np.array([float(v) for v in first.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    if len(series.headers) > 1:
        positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in series.headers])
        slice_spacing = float(np.linalg.norm(positions[-1] - positions[0]) / (len(positions) - 1))
    else:
        slice_spacing = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    direction = np.stack([orientation[:3], orientation[3:], _normal(orientation)], axis=1)
    shape = (len(series.headers), int(first.Rows), int(first.Columns))
    return shape, Geometry((slice_spacing, row_spacing, column_spacing),
                           tuple(float(v) for v in first.ImagePositionPatient),
                           tuple(float(v) for v in direction.ravel()))


def read_series(folder: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """The checked series in ``folder`` as a ``(z, y, x)`` array (rescaled to HU by GDCM) plus its geometry."""
    series = find_series(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in series.files])
    try:
        image = reader.Execute()
    except RuntimeError:
        raise CovtransferError(f"{series.name}: unreadable DICOM pixel data") from None
    geometry = Geometry(tuple(image.GetSpacing())[::-1], tuple(image.GetOrigin()), tuple(image.GetDirection()))
    return sitk.GetArrayFromImage(image), geometry
