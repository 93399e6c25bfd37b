"""Converters from the four public lung-lesion datasets to raw nnU-Net v2 datasets: :func:`convert` picks one.

Sources: ``covid19ctseg`` (COVID-19-CT-Seg), ``msd-lung`` (MSD Task06_Lung), ``structseg-gtv`` (StructSeg 2019
Lung_GTV) and ``nsclc-pe`` (NSCLC-Radiomics with PleThora pleural effusion masks).
"""

from __future__ import annotations

import os
from pathlib import Path

from covtransfer.config import resolve_roots
from covtransfer.datasets.converters import covid19ctseg, msd_lung, nsclc_pe, structseg_gtv
from covtransfer.datasets.converters.common import ConversionReport, target_folder, write_raw_dataset
from covtransfer.errors import CovtransferError

SOURCES = {
    "covid19ctseg": covid19ctseg,
    "msd-lung": msd_lung,
    "structseg-gtv": structseg_gtv,
    "nsclc-pe": nsclc_pe,
}
LABEL_SETS = tuple(covid19ctseg.MASK_FOLDERS)

__all__ = ["SOURCES", "LABEL_SETS", "ConversionReport", "convert"]


def _source_module(source: str):
    key = source.lower().replace("_", "-")
    if key not in SOURCES:
        raise CovtransferError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    return key, SOURCES[key]


def convert(source: str, input_folder: str | os.PathLike, dataset_id: int, name: str | None = None,
            raw_root: str | os.PathLike | None = None, labels: str = "infection", overwrite: bool = False,
            progress: bool = False) -> ConversionReport:
    """Convert the public dataset ``source`` found in ``input_folder`` into ``RAW/DatasetNNN_Name``.

    ``labels`` picks COVID-19-CT-Seg's mask set (``infection`` or ``lung-infection``); the other sources have one
    label set. The input is only read; a failure leaves no partial dataset.
    """
    key, module = _source_module(source)
    if labels not in LABEL_SETS:
        raise CovtransferError(f"unknown label set {labels!r}: use one of {', '.join(LABEL_SETS)}")
    if key != "covid19ctseg" and labels != "infection":
        raise CovtransferError(f"--labels {labels} applies only to covid19ctseg; {key} has a single label set")
    found = module.discover(Path(input_folder).expanduser(), labels)
    if not found.training:
        raise CovtransferError(f"{input_folder}: no image/label pairs found for {key} "
                               f"(expected {module.EXPECTED_LAYOUT})")
    raw = resolve_roots(raw=raw_root).raw.expanduser()
    folder = target_folder(raw, int(dataset_id), name or found.default_name, overwrite)
    return write_raw_dataset(found, folder, overwrite=overwrite, progress=progress)
