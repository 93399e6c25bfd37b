"""Reading and writing medical images through SimpleITK, with geometry carried alongside the array.

Axis order convention (used everywhere in covtransfer): arrays are indexed ``(z, y, x)``, and so are ``spacing``
and every shape, patch size and stride. ``origin`` and ``direction`` are physical quantities and stay in ITK's own
``(x, y, z)`` order, exactly as SimpleITK reports them, so that writing them back reproduces the input header.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covtransfer.atomic import atomic_path
from covtransfer.errors import CovtransferError

SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


@dataclass
class Geometry:
    """Where an array lies in physical space: spacing (z, y, x) in mm, origin and direction in ITK (x, y, z) order."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = field(default=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))

    def to_dict(self) -> dict:
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(tuple(float(v) for v in d["spacing"]), tuple(float(v) for v in d["origin"]),
                   tuple(float(v) for v in d["direction"]))

    def matches(self, other: "Geometry", tolerance: float = 1e-3) -> bool:
        """True when spacing, origin and direction agree within a relative/absolute ``tolerance``."""
        return all(np.allclose(a, b, rtol=tolerance, atol=tolerance) for a, b in (
            (self.spacing, other.spacing), (self.origin, other.origin), (self.direction, other.direction)))

    def mismatches(self, other: "Geometry", tolerance: float = 1e-3) -> list[str]:
        """Names of the geometry fields that differ beyond ``tolerance`` (empty when they match)."""
        return [name for name in ("spacing", "origin", "direction")
                if not np.allclose(getattr(self, name), getattr(other, name), rtol=tolerance, atol=tolerance)]


def file_ending(path: str | os.PathLike) -> str:
    """The image file ending of ``path`` (``.nii.gz`` counts as one ending)."""
    name = Path(path).name.lower()
    for ending in SUPPORTED_ENDINGS:
        if name.endswith(ending):
            return ending
    return Path(path).suffix.lower()


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


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a 3-D image as a ``(z, y, x)`` array plus its geometry; a clear error if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CovtransferError(f"{path}: file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()
        detail = next((line.strip() for line in reason if "rror" in line or "nable" in line), "cannot be read")
        raise CovtransferError(f"{path}: unreadable image ({detail[:160]})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CovtransferError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel, "
                               "expected a scalar image")
    if image.GetDimension() != 3:
        raise CovtransferError(f"{path}: is {image.GetDimension()}-D, expected a 3-D image")
    try:
        array = sitk.GetArrayFromImage(image)
    except RuntimeError:
        raise CovtransferError(f"{path}: unreadable image (truncated or corrupt voxel data)") from None
    geometry = Geometry(tuple(image.GetSpacing())[::-1], tuple(image.GetOrigin()), tuple(image.GetDirection()))
    return array, geometry


def read_geometry(path: str | os.PathLike) -> tuple[tuple[int, int, int], Geometry]:
    """Read only the header: the ``(z, y, x)`` shape and the geometry, without loading voxel data."""
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise CovtransferError(f"{path}: unreadable image header") from None
    shape = tuple(int(s) for s in reader.GetSize()[::-1])
    return shape, Geometry(tuple(reader.GetSpacing())[::-1], tuple(reader.GetOrigin()), tuple(reader.GetDirection()))


def write_image(path: str | os.PathLike, array: np.ndarray, geometry: Geometry, compress: bool = True) -> None:
    """Write a ``(z, y, x)`` array with ``geometry`` to ``path`` atomically; the ending picks the format."""
    if array.ndim != 3:
        raise ValueError(f"write_image expects a 3-D array, got shape {array.shape}")
    with atomic_path(path) as tmp:
        sitk.WriteImage(_to_sitk(array, geometry), str(tmp), useCompression=compress)
