"""Image I/O: round trips of array and geometry over endings and directions, dtype conversions, truncated and
multi-member gzip files, non-finite values, file endings and geometry tolerance."""

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from covtransfer.data.image_io import (Geometry, count_nonfinite_nifti, file_ending, read_geometry, read_image,
                                       write_image)
from covtransfer.errors import CovtransferError


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _rotation_z(degrees: float) -> tuple[float, ...]:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


DIRECTIONS = {
    "identity": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    "flipped": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0),
    "rotated": _rotation_z(30.0),
    "permuted": (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
}


def _ramp(dtype=np.int16) -> np.ndarray:
    return (np.arange(6 * 10 * 12).reshape(6, 10, 12) - 300).astype(dtype)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".mha", ".nrrd"])
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_image_round_trip_keeps_array_and_geometry(tmp_path, ending, direction):
    geometry = Geometry((2.5, 0.7, 0.8), (-10.5, 20.25, 3.0), DIRECTIONS[direction])
    path = tmp_path / f"img{ending}"
    write_image(path, _ramp(), geometry)
    array, read = read_image(path)
    assert array.dtype == np.int16 and array.shape == (6, 10, 12)
    np.testing.assert_array_equal(array, _ramp())
    for key in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(read, key), getattr(geometry, key), atol=1e-5)
    assert read.matches(geometry)
    shape, header = read_geometry(path)
    assert shape == (6, 10, 12) and header.matches(geometry)
    image = sitk.ReadImage(str(path))  # ITK's (x, y, z) order is the reverse of ours
    assert image.GetSize() == (12, 10, 6)
    np.testing.assert_allclose(image.GetSpacing(), (0.8, 0.7, 2.5), atol=1e-6)
    assert _names(tmp_path) == [path.name]


def test_write_image_converts_bool_and_float16(tmp_path):
    geometry = Geometry((1.0, 1.0, 1.0))
    write_image(tmp_path / "mask.nii.gz", _ramp() > 0, geometry)
    write_image(tmp_path / "half.nii.gz", _ramp(np.float16), geometry)
    mask, _ = read_image(tmp_path / "mask.nii.gz")
    half, _ = read_image(tmp_path / "half.nii.gz")
    assert mask.dtype == np.uint8 and mask.sum() == (_ramp() > 0).sum()
    assert half.dtype == np.float32 and np.array_equal(half, _ramp(np.float32))
    with pytest.raises(ValueError, match="3-D"):
        write_image(tmp_path / "flat.nii.gz", np.zeros((4, 5)), geometry)


def test_read_image_errors(tmp_path):
    with pytest.raises(CovtransferError, match="file not found"):
        read_image(tmp_path / "missing.nii.gz")
    (tmp_path / "garbage.nii.gz").write_bytes(b"garbage")
    with pytest.raises(CovtransferError, match="garbage.nii.gz: unreadable image"):
        read_image(tmp_path / "garbage.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.float32)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(CovtransferError, match="flat.nii.gz: is 2-D, expected a 3-D image"):
        read_image(tmp_path / "flat.nii.gz")
    with pytest.raises(CovtransferError, match="unreadable image header"):
        read_geometry(tmp_path / "garbage.nii.gz")


@pytest.mark.parametrize("ending, keep", [(".nii.gz", 0.5), (".nii.gz", 0.97), (".nii", 0.5), (".nii", 0.999),
                                          (".mha", 0.8), (".nrrd", 0.8)])
def test_truncated_images_are_errors(tmp_path, ending, keep):
    path = tmp_path / f"img{ending}"
    write_image(path, np.random.default_rng(0).normal(size=(6, 10, 12)).astype(np.float32), Geometry((1, 1, 1)))
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(CovtransferError, match=f"img{ending}: unreadable image"):
        read_image(path)


def test_multi_member_gzip_nifti_is_read(tmp_path):
    """A valid .nii.gz whose gzip trailer does not hold the total size (two members) is not taken for truncated."""
    single = tmp_path / "single.nii.gz"
    write_image(single, _ramp(), Geometry((1, 1, 1)))
    raw = gzip.decompress(single.read_bytes())
    (tmp_path / "multi.nii.gz").write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    array, _ = read_image(tmp_path / "multi.nii.gz")
    np.testing.assert_array_equal(array, _ramp())


def test_nonfinite_values_of_nifti(tmp_path):
    image = np.ones((6, 10, 12), np.float32)
    image[0, 0, 0], image[1, 2, 3], image[5, 9, 11] = np.nan, np.inf, -np.inf
    write_image(tmp_path / "f.nii.gz", image, Geometry((1, 1, 1)))
    write_image(tmp_path / "i.nii", _ramp(), Geometry((1, 1, 1)))
    assert count_nonfinite_nifti(tmp_path / "f.nii.gz") == (1, 2)
    assert count_nonfinite_nifti(tmp_path / "i.nii") == (0, 0)


def test_file_ending():
    assert file_ending("a/b/case_0000.nii.gz") == ".nii.gz"
    assert file_ending("CASE.NII.GZ") == ".nii.gz"
    assert file_ending("x.nii") == ".nii"
    assert file_ending("x.nrrd") == ".nrrd"
    assert file_ending("notes.txt") == ".txt"


def test_geometry_dict_and_tolerance():
    geometry = Geometry((2.5, 0.7, 0.8), (1.0, 2.0, 3.0), DIRECTIONS["flipped"])
    assert Geometry.from_dict(json.loads(json.dumps(geometry.to_dict()))) == geometry
    assert geometry.matches(Geometry((2.5 + 1e-5, 0.7, 0.8), (1.0, 2.0, 3.0 + 1e-4), DIRECTIONS["flipped"]))
    other = Geometry((2.6, 0.7, 0.8), (1.0, 2.0, 3.0), DIRECTIONS["identity"])
    assert not geometry.matches(other)
    assert geometry.mismatches(other) == ["spacing", "direction"]
