"""The shared scan checks: implausible spacing, extent, direction, non-finite voxels and resampled memory."""

import numpy as np
import pytest

from covtransfer.data.image_io import Geometry, write_image
from covtransfer.data.scan_checks import check_header, check_resampled_memory, check_voxels
from covtransfer.errors import CovtransferError
from covtransfer.inference.inputs import check_cases, discover_cases

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("shape, spacing, direction, needle", [
    ((48, 128, 128), (50.0, 50.0, 50.0), IDENTITY, "spacing 50.0 mm"),
    ((8, 8, 8), (0.001, 1.0, 1.0), IDENTITY, "spacing 0.001 mm"),
    ((4000, 8, 8), (1.0, 1.0, 1.0), IDENTITY, "physical extent"),
    ((8, 8, 8), (1.0, 1.0, 1.0), (1.0, 0, 0, 1.0, 0, 0, 0, 0, 1.0), "direction matrix"),
])
def test_header_checks_refuse_in_one_line_naming_the_file(shape, spacing, direction, needle):
    with pytest.raises(CovtransferError) as error:
        check_header("scan.nii.gz", shape, spacing, direction)
    message = str(error.value)
    assert message.startswith("scan.nii.gz: ") and needle in message and "\n" not in message


def test_plausible_headers_pass_including_a_10_mm_slice_stack():
    check_header("scan.nii.gz", (30, 256, 256), (10.0, 0.8, 0.8), IDENTITY)
    check_header("scan.nii.gz", (48, 128, 128), (50.0, 50.0, 50.0), IDENTITY, allow_spacing=True)


def test_non_finite_voxels_and_huge_resampling_are_refused():
    array = np.zeros((4, 4, 4), np.float32)
    check_voxels("a.mha", array)
    array[1] = np.nan
    with pytest.raises(CovtransferError, match="a.mha: 16 NaN"):
        check_voxels("a.mha", array)
    with pytest.raises(CovtransferError, match="GiB"):
        check_resampled_memory("a.nii.gz", (10**5, 10**5, 10**5))


def test_check_cases_refuses_a_scan_in_cm(tmp_path):
    write_image(tmp_path / "x.nii.gz", np.zeros((4, 8, 8), np.float32), Geometry((50.0, 50.0, 50.0), (0, 0, 0), IDENTITY))
    with pytest.raises(CovtransferError, match="x.nii.gz: spacing 50.0 mm is above 20.0 mm: the header may be in cm"):
        check_cases(discover_cases(tmp_path), 1)


def test_spacing_refusal_names_the_flag_and_the_flag_warns_instead(capsys):
    with pytest.raises(CovtransferError, match="pass --allow-spacing"):
        check_header("scan.nii.gz", (8, 8, 8), (50.0, 50.0, 50.0), IDENTITY)
    check_header("scan.nii.gz", (8, 8, 8), (50.0, 50.0, 50.0), IDENTITY, allow_spacing=True)
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("warning: scan.nii.gz: spacing 50.0 mm") and "\n" not in warning
    with pytest.raises(CovtransferError, match="direction matrix"):
        check_header("scan.nii.gz", (8, 8, 8), (1.0, 1.0, 1.0), (1.0, 0, 0, 1.0, 0, 0, 0, 0, 1.0), allow_spacing=True)
