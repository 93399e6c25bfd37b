"""DICOM Structured Report of the disease burden (highdicom): a TID 1500 measurement report beside the SEG.

With DICOM input, ``--dicom-seg`` and ``--statistics``, ``<case>_sr.dcm`` holds three volumetric measurement groups
(right lung, left lung, both lungs), each referencing the SEG's lesion segment and its source series, with the lesion
and lung volumes (mL), PO and PHO (%). Volume is SNOMED's; the lung volume, PO and PHO have no standard code and
use the private scheme ``99COVTRANSFER``. A value that is undefined (a side without lung) is left out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import highdicom as hd
from pydicom.sr.codedict import codes

import covtransfer
from covtransfer.atomic import atomic_path
from covtransfer.data.dicom_io import find_series
from covtransfer.evaluation.burden import lung_label_values
from covtransfer.evaluation.quantify import STATISTICS_SUFFIX
from covtransfer.inference.dicom_seg import foreground_names
from covtransfer.inference.inputs import InputCase

ML = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
PERCENT = hd.sr.CodedConcept("%", "UCUM", "percent")
LUNG_VOLUME = hd.sr.CodedConcept("LUNGVOL", "99COVTRANSFER", "Lung volume")
PO = hd.sr.CodedConcept("PO", "99COVTRANSFER", "Percentage of opacity")
PHO = hd.sr.CodedConcept("PHO", "99COVTRANSFER", "Percentage of high opacity")
REGIONS = {"right": "right lung", "left": "left lung", "total": "both lungs"}


def _measurements(part: dict) -> list[hd.sr.Measurement]:
    values = [(codes.SCT.Volume, part["lesion_ml"], ML), (LUNG_VOLUME, part["lung_ml"], ML),
              (PO, part["po"], PERCENT), (PHO, part["pho"], PERCENT)]
    return [hd.sr.Measurement(name=name, value=float(value), unit=unit) for name, value, unit in values
            if value is not None]


def write_burden_sr(path: str | os.PathLike, seg_path: Path, source_series_uid: str, segment_number: int,
                    stats: dict) -> None:
    """Write the measurement report of one case's statistics, referencing ``segment_number`` of the SEG."""
    seg = hd.seg.segread(seg_path)
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name="covtransfer")
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    segment = hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                                      segment_number=segment_number,
                                      source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid))
    groups = [hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"lesion, {region}"),
        referenced_segment=segment, measurements=_measurements(stats[side])) for side, region in REGIONS.items()]
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
                                     imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(evidence=[seg], content=report, series_number=int(seg.SeriesNumber) + 1,
                                 series_instance_uid=hd.UID(), sop_instance_uid=hd.UID(), instance_number=1,
                                 manufacturer="covtransfer", series_description="covtransfer disease burden",
                                 software_versions=covtransfer.__version__)
    with atomic_path(Path(path)) as tmp:
        sr.save_as(tmp)


def write_burden_srs(cases: list[InputCase], output_folder: Path, rows: list[dict], labels: dict[str, int]) -> None:
    """``<case>_sr.dcm`` for every measured case (a row without ``error``), from its ``<case>.statistics.json`` and
    ``<case>.dcm``; the referenced segment is the first lesion label's (none without a lesion label)."""
    lungs = set(lung_label_values(labels))
    names = foreground_names(labels)
    lesions = [number for number, name in enumerate(names, start=1) if labels[name] not in lungs]
    if not lesions:
        return
    measured = {row["case"] for row in rows if not row.get("error")}
    for case in cases:
        if case.case_id in measured:
            stats = json.loads((output_folder / f"{case.case_id}{STATISTICS_SUFFIX}").read_text())
            series_uid = str(find_series(case.images[0]).headers[0].SeriesInstanceUID)
            write_burden_sr(output_folder / f"{case.case_id}_sr.dcm", output_folder / f"{case.case_id}.dcm",
                            series_uid, lesions[0], stats)
