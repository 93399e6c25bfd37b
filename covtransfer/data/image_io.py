"""Reading and writing medical images through SimpleITK, with geometry carried alongside the array.

Axis order convention (used everywhere in covtransfer): arrays are indexed ``(z, y, x)``, and so are ``spacing``
and every shape, patch size and stride. ``origin`` and ``direction`` are physical quantities and stay in ITK's own
``(x, y, z)`` order, exactly as SimpleITK reports them, so that writing them back reproduces the input header.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covtransfer.atomic import atomic_path
from covtransfer.data.dicom_io import find_series, read_series, series_geometry
from covtransfer.data.geometry import Geometry
from covtransfer.errors import CovtransferError

SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def file_ending(path: str | os.PathLike) -> str:
    """The image file ending of ``path`` (``.nii.gz`` counts as one ending)."""
    name = Path(path).name.lower()
    for ending in SUPPORTED_ENDINGS:
        if name.endswith(ending):
            return ending
    return Path(path).suffix.lower()


DANGLING_LINK = "a symlink loop or a link to a missing file"


def is_dangling_link(path: Path) -> bool:
    """Whether ``path`` is a symlink that leads nowhere (a loop or a missing target)."""
    return path.is_symlink() and not path.exists()


def refuse_dangling_link(path: Path) -> None:
    """Refuse a symlink that leads nowhere, which directory listings would otherwise skip without a word."""
    if is_dangling_link(path):
        raise CovtransferError(f"{path}: {DANGLING_LINK}")


def _to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in geometry.spacing[::-1]])
    image.SetOrigin([float(o) for o in geometry.origin])
    image.SetDirection([float(d) for d in geometry.direction])
    return image


@dataclass(frozen=True)
class _NiftiLayout:
    """Where a NIfTI file's voxel data lies and how it is stored (datatype code and bits per voxel)."""

    byte_order: str
    datatype: int
    bitpix: int
    offset: int
    voxels: int

    @property
    def data_end(self) -> int:
        return self.offset + self.voxels * self.bitpix // 8


def _nifti_layout(header: bytes) -> _NiftiLayout | None:
    """Byte order, datatype, voxel size, data offset and voxel count from a NIfTI-1/2 header; None if unparseable."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            ndim, *dims = struct.unpack(order + "8h", header[40:56])
            datatype, bitpix = struct.unpack(order + "2h", header[70:74])
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(order + "2h", header[12:16])
            ndim, *dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    voxels = int(np.prod([max(int(d), 1) for d in dims[:ndim]], dtype=np.int64))
    return _NiftiLayout(order, datatype, bitpix, offset, voxels)


def _open_nifti(path: Path):
    return gzip.open(path, "rb") if file_ending(path) == ".nii.gz" else open(path, "rb")


def count_nonfinite_nifti(path: str | os.PathLike) -> tuple[int, int]:
    """Numbers of NaN and Inf voxels in a float NIfTI file, read from its raw voxel data ((0, 0) if not float).

    ITK's NIfTI reader replaces non-finite values by 0, so :func:`read_image` cannot show them; this can.
    """
    path = Path(path)
    with _open_nifti(path) as stream:
        layout = _nifti_layout(stream.read(540))
        if layout is None or layout.datatype not in (16, 64):
            return 0, 0
        dtype = np.dtype(layout.byte_order + ("f4" if layout.datatype == 16 else "f8"))
        stream.seek(layout.offset)
        nan = inf = 0
        remaining = layout.voxels
        while remaining > 0:
            chunk = stream.read(min(remaining, 1 << 22) * dtype.itemsize)
            values = np.frombuffer(chunk, dtype, count=len(chunk) // dtype.itemsize)
            if not values.size:
                break
            nan, inf = nan + int(np.isnan(values).sum()), inf + int(np.isinf(values).sum())
            remaining -= values.size
    return nan, inf


def _gzip_length(path: Path) -> int | None:
    """Decompressed length of a gzip file, or None when the stream is truncated or corrupt."""
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 24):
                total += len(chunk)
    except (EOFError, OSError, zlib.error):
        return None
    return total


def _check_nifti_complete(path: Path) -> None:
    """Raise when a NIfTI file holds less voxel data than its header declares.

    ITK zero-fills a truncated NIfTI silently, so the size is checked here: the file size for ``.nii``, the gzip
    trailer (uncompressed size mod 2**32) for ``.nii.gz``, with a full decompression only when the trailer disagrees.
    """
    compressed = file_ending(path) == ".nii.gz"
    try:
        with _open_nifti(path) as stream:
            layout = _nifti_layout(stream.read(540))
        if layout is None:
            return
        expected = layout.data_end
        if compressed:
            with open(path, "rb") as raw:
                raw.seek(-4, os.SEEK_END)
                trailer = struct.unpack("<I", raw.read(4))[0]
            found = expected if trailer == expected % 2**32 else _gzip_length(path)
        else:
            found = path.stat().st_size
    except (EOFError, OSError, zlib.error):
        found = None
    if found is None or found < expected:
        detail = "truncated or corrupt compressed data" if found is None else f"truncated: {found} of {expected} bytes"
        raise CovtransferError(f"{path}: unreadable image ({detail})")


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a 3-D image as a ``(z, y, x)`` array plus its geometry; a clear error if it is missing or unreadable.

    NIfTI files are checked for truncation (ITK would zero-fill them); note that ITK reads NaN/Inf in NIfTI as 0.
    A folder is read as one DICOM CT series (:mod:`covtransfer.data.dicom_io`).
    """
    path = Path(path)
    if path.is_dir():
        return read_series(path)
    if not path.is_file():
        raise CovtransferError(f"{path}: file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()
        detail = next((line.strip() for line in reason if "rror" in line or "nable" in line), "cannot be read")
        raise CovtransferError(f"{path}: unreadable image ({detail[:160]})") from None
    if file_ending(path) in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CovtransferError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel, "
                               "expected a scalar image")
    _require_3d(path, image.GetDimension())
    try:
        array = sitk.GetArrayFromImage(image)
    except RuntimeError:
        raise CovtransferError(f"{path}: unreadable image (truncated or corrupt voxel data)") from None
    geometry = Geometry(tuple(image.GetSpacing())[::-1], tuple(image.GetOrigin()), tuple(image.GetDirection()))
    return array, geometry


def _require_3d(path: str | os.PathLike, dimension: int) -> None:
    if dimension != 3:
        raise CovtransferError(f"{path}: is {dimension}-D, expected a 3-D image")


def read_geometry(path: str | os.PathLike) -> tuple[tuple[int, int, int], Geometry]:
    """Read only the header: the ``(z, y, x)`` shape and the geometry, without loading voxel data (a folder: the
    headers of its DICOM series, checked)."""
    path = Path(path)
    if path.is_dir():
        return series_geometry(find_series(path))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise CovtransferError(f"{path}: unreadable image header") from None
    _require_3d(path, reader.GetDimension())
    shape = tuple(int(s) for s in reader.GetSize()[::-1])
    return shape, Geometry(tuple(reader.GetSpacing())[::-1], tuple(reader.GetOrigin()), tuple(reader.GetDirection()))


def write_image(path: str | os.PathLike, array: np.ndarray, geometry: Geometry, compress: bool = True) -> None:
    """Write a ``(z, y, x)`` array with ``geometry`` to ``path`` atomically; the ending picks the format."""
    if array.ndim != 3:
        raise ValueError(f"write_image expects a 3-D array, got shape {array.shape}")
    with atomic_path(path) as tmp:
        sitk.WriteImage(_to_sitk(array, geometry), str(tmp), useCompression=compress)
