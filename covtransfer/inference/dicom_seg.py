"""DICOM Segmentation output (highdicom): a predicted label map as a SEG that a PACS can file beside its source CT.

One segment per foreground label of dataset.json, named after it; the SEG references the source series (its Frame
of Reference and every source image's UIDs) and names the algorithm (covtransfer, its version, the model).
"""

from __future__ import annotations

import os
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

import covtransfer
from covtransfer.atomic import atomic_path
from covtransfer.data.dicom_io import DicomSeries, find_series
from covtransfer.errors import CovtransferError
from covtransfer.inference.case_result import CaseResult
from covtransfer.inference.inputs import InputCase
from covtransfer.inference.model_loading import LoadedModel


def _segments(labels: dict[str, int], model_name: str) -> list[hd.seg.SegmentDescription]:
    algorithm = hd.AlgorithmIdentificationSequence(name="covtransfer", family=codes.cid7162.ArtificialIntelligence,
                                                   version=covtransfer.__version__, parameters={"model": model_name})
    return [hd.seg.SegmentDescription(segment_number=number, segment_label=name,
                                      segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                                      segmented_property_type=codes.SCT.Lesion,
                                      algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                      algorithm_identification=algorithm)
            for number, name in enumerate(foreground_names(labels), start=1)]


def foreground_names(labels: dict[str, int]) -> list[str]:
    """The foreground label names in value order: segment 1, 2 ... of the SEG."""
    return [name for name, value in sorted(labels.items(), key=lambda item: item[1]) if value != 0]


def write_dicom_seg(path: str | os.PathLike, segmentation: np.ndarray, series: DicomSeries, labels: dict[str, int],
                    model_name: str) -> None:
    """Write the ``(z, y, x)`` label map of ``series`` (z in the series' sorted order) as a DICOM SEG, atomically."""
    segment_of = np.zeros(max(labels.values()) + 1, dtype=np.uint8)
    for number, name in enumerate(foreground_names(labels), start=1):
        segment_of[labels[name]] = number
    seg = hd.seg.Segmentation(
        source_images=list(series.headers), pixel_array=segment_of[segmentation],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=_segments(labels, model_name),
        series_instance_uid=hd.UID(), series_number=int(series.headers[0].get("SeriesNumber") or 0) + 1000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="covtransfer",
        manufacturer_model_name=model_name[:64], software_versions=covtransfer.__version__,
        device_serial_number="none", omit_empty_frames=False)
    with atomic_path(Path(path)) as tmp:
        seg.save_as(tmp)


def check_dicom_input(cases: list[InputCase]) -> None:
    """Refuse ``--dicom-seg`` for any case that is not a DICOM series (a SEG must reference source DICOM images)."""
    for case in cases:
        if not case.images[0].is_dir():
            raise CovtransferError(f"{case.images[0]}: --dicom-seg needs DICOM series input (a folder of .dcm "
                                   "files); this is not one")


class DicomSegWriter:
    """The predictor's extra writer for ``--dicom-seg``: ``<case>.dcm`` beside the label map."""

    def __init__(self, model: LoadedModel):
        self.labels = dict(model.plans.labels)
        self.model_name = "/".join(model.run_folder.parts[-3:])

    def __call__(self, result: "CaseResult", output_folder: Path, case: InputCase) -> None:
        write_dicom_seg(output_folder / f"{case.case_id}.dcm", result.segmentation, find_series(case.images[0]),
                        self.labels, self.model_name)
