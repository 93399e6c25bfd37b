"""Test helper: write a volume as a DICOM CT series with pydicom (one file per slice, int16 + rescale to HU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from covtransfer.data.image_io import Geometry

INTERCEPT = -1024.0


def write_ct_series(folder: Path, volume: np.ndarray, geometry: Geometry, series_uid: str | None = None,
                    file_names: list[str] | None = None, instance_numbers: list[int] | None = None,
                    modality: str = "CT") -> list[Path]:
    """Write ``volume`` (z, y, x, integer HU) as one file per slice along ``geometry``'s third direction column.

    ``file_names`` and ``instance_numbers`` (per slice, in z order) let a test scramble both.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    direction = np.array(geometry.direction).reshape(3, 3)
    spacing_z, spacing_y, spacing_x = geometry.spacing
    paths = []
    for z, plane in enumerate(volume):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = file_names[z] if file_names else f"slice_{z:03d}.dcm"
        ds = FileDataset(str(folder / name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.PatientName, ds.PatientID = modality, "Phantom^Test", "PHANTOM"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName, ds.Manufacturer = "", "O", "", "covtransfer"
        ds.SeriesNumber, ds.InstanceNumber = 1, (instance_numbers[z] if instance_numbers else z + 1)
        ds.ImageOrientationPatient = [float(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.ImagePositionPatient = [float(v) for v in np.array(geometry.origin) + z * spacing_z * direction[:, 2]]
        ds.PixelSpacing = [float(spacing_y), float(spacing_x)]
        ds.SliceThickness = float(spacing_z)
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1.0, INTERCEPT, "HU"
        ds.PixelData = (plane.astype(np.int32) - int(INTERCEPT)).astype(np.int16).tobytes()
        ds.save_as(folder / name, enforce_file_format=True)
        paths.append(folder / name)
    return paths
