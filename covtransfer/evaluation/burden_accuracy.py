"""The HU lung extraction against the truth of synthetic phantoms: lung volume, PO and PHO errors per lung.

Given a phantom's true lesion mask, :func:`phantom_errors` measures the burden with lungs from HU and compares it with
the phantom's lung labels, split into right and left at the body's centre in patient x (the phantom's lungs stay
clear of the midline, so this truth does not depend on :func:`~covtransfer.evaluation.patient_sides.split_sides`).
"""

from __future__ import annotations

import numpy as np

from covtransfer.data.geometry import Geometry
from covtransfer.datasets.synthetic import case_rng, generate_case
from covtransfer.evaluation.burden import HIGH_OPACITY_HU, SIDES, case_statistics
from covtransfer.evaluation.patient_sides import patient_point


def true_sides(image: np.ndarray, label: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """The true right and left lungs of a phantom with lung labels (lung 1, lesion 2) on an axis-aligned grid."""
    body_x = float(np.nonzero(np.any(image > -500, axis=(0, 1)))[0].mean())
    x = patient_point(np.array([0.0, 0.0, 0.0]), geometry)[0] + \
        np.arange(image.shape[2]) * geometry.spacing[2] * geometry.direction[0]
    midline = patient_point(np.array([0.0, 0.0, body_x]), geometry)[0]
    lung = label >= 1
    return lung & (x < midline), lung & (x > midline)


def phantom_errors(kind: str, size: str, seed: int, index: int) -> dict:
    """Per lung: relative lung volume error (%), and PO and PHO errors (percentage points), HU lungs minus truth."""
    image, label, spacing = generate_case(kind, size, case_rng(seed, kind, index), with_lungs=True)
    geometry = Geometry(spacing)
    lesion = label == 2
    stats = case_statistics(image, lesion.astype(np.uint8), geometry, {"background": 0, "lesion": 1})
    high = lesion & (image >= HIGH_OPACITY_HU)
    errors = {"lung_source": stats["lung_source"]}
    for side, truth in zip(SIDES, true_sides(image, label, geometry)):
        n = np.count_nonzero(truth)
        errors[side] = {
            "volume_percent": 100 * (stats[side]["lung_ml"] / (n * np.prod(spacing) / 1000) - 1),
            "po": stats[side]["po"] - 100 * np.count_nonzero(lesion & truth) / n,
            "pho": stats[side]["pho"] - 100 * np.count_nonzero(high & truth) / n}
    return errors
