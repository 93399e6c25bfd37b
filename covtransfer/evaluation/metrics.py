"""Segmentation metrics on boolean ``(z, y, x)`` masks with voxel spacing in mm (z, y, x): plain functions, numbers out.

Overlap metrics come from the confusion counts (Python ints, so nothing overflows on large volumes):
DSC = 2TP / (2TP + FP + FN), sensitivity = TP / (TP + FN), precision = TP / (TP + FP), specificity = TN / (TN + FP),
accuracy = (TP + TN) / N, MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).

Surface metrics use area-weighted surface elements (see :mod:`covtransfer.evaluation.surface`) with the definitions
of DeepMind's surface-distance package: NSD and HD95 of two non-empty masks equal its
``compute_surface_dice_at_tolerance`` and ``compute_robust_hausdorff(..., 95)`` up to rounding.
- NSD at tolerance τ mm = (|∂G ∩ B(∂S, τ)| + |∂S ∩ B(∂G, τ)|) / (|∂G| + |∂S|), areas in mm², distances ≤ τ count.
- HD95 = max over the two directions of the area-weighted 95th percentile of the distances from one surface to the
  other (each surface element counts in proportion to its area, as in DeepMind's robust Hausdorff distance). The
  percentile is the smallest distance d such that elements at distance ≤ d hold at least 95 % of the surface area.

Conventions for empty masks (G = reference, S = prediction):
- both empty: DSC = NSD = 1, HD95 = 0 (a correct "nothing here"); one empty: DSC = NSD = 0, HD95 = NaN.
- sensitivity with an empty reference and precision with an empty prediction are NaN (0 / 0: undefined);
  specificity with no reference background is NaN for the same reason.
- MCC is 0 when its denominator is 0 (a whole row or column of the confusion matrix is empty).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from covtransfer.data.cropping import bounding_box, crop_to_box
from covtransfer.evaluation.surface import SurfaceDistances, surface_distances

METRIC_NAMES = ("dice", "nsd", "hd95", "sensitivity", "precision", "specificity", "accuracy", "mcc")
NAN = float("nan")


class Counts(NamedTuple):
    """Voxel confusion counts of one label."""

    tp: int
    fp: int
    fn: int
    tn: int


def _masks(ref: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if ref.shape != pred.shape:
        raise ValueError(f"reference and prediction differ in shape: {ref.shape} vs {pred.shape}")
    return ref.astype(bool, copy=False), pred.astype(bool, copy=False)


def confusion_counts(ref: np.ndarray, pred: np.ndarray) -> Counts:
    """``(tp, fp, fn, tn)`` of a predicted mask against a reference mask, as Python ints."""
    ref, pred = _masks(ref, pred)
    n_ref, n_pred = int(np.count_nonzero(ref)), int(np.count_nonzero(pred))
    tp = int(np.count_nonzero(ref & pred))
    return Counts(tp, n_pred - tp, n_ref - tp, ref.size - n_ref - n_pred + tp)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else NAN


def dice_from_counts(c: Counts) -> float:
    return 2 * c.tp / (2 * c.tp + c.fp + c.fn) if c.tp + c.fp + c.fn else 1.0


def sensitivity_from_counts(c: Counts) -> float:
    return _ratio(c.tp, c.tp + c.fn)


def precision_from_counts(c: Counts) -> float:
    return _ratio(c.tp, c.tp + c.fp)


def specificity_from_counts(c: Counts) -> float:
    return _ratio(c.tn, c.tn + c.fp)


def accuracy_from_counts(c: Counts) -> float:
    return _ratio(c.tp + c.tn, c.tp + c.fp + c.fn + c.tn)


def mcc_from_counts(c: Counts) -> float:
    denominator = (c.tp + c.fp) * (c.tp + c.fn) * (c.tn + c.fp) * (c.tn + c.fn)
    return (c.tp * c.tn - c.fp * c.fn) / math.sqrt(denominator) if denominator else 0.0


def dice(ref: np.ndarray, pred: np.ndarray) -> float:
    """Dice similarity coefficient; 1 when both masks are empty."""
    return dice_from_counts(confusion_counts(ref, pred))


def sensitivity(ref: np.ndarray, pred: np.ndarray) -> float:
    """TP / (TP + FN), the recall; NaN for an empty reference."""
    return sensitivity_from_counts(confusion_counts(ref, pred))


def precision(ref: np.ndarray, pred: np.ndarray) -> float:
    """TP / (TP + FP); NaN for an empty prediction."""
    return precision_from_counts(confusion_counts(ref, pred))


def specificity(ref: np.ndarray, pred: np.ndarray) -> float:
    """TN / (TN + FP); NaN when the reference has no background."""
    return specificity_from_counts(confusion_counts(ref, pred))


def accuracy(ref: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of voxels classified correctly."""
    return accuracy_from_counts(confusion_counts(ref, pred))


def mcc(ref: np.ndarray, pred: np.ndarray) -> float:
    """Matthews correlation coefficient; 0 when its denominator is 0."""
    return mcc_from_counts(confusion_counts(ref, pred))


def nsd_from_distances(sd: SurfaceDistances, tolerance_mm: float) -> float:
    """Normalised surface Dice of two non-empty surfaces at ``tolerance_mm``."""
    close = sd.areas_ref[sd.distances_ref_to_pred <= tolerance_mm].sum() + \
        sd.areas_pred[sd.distances_pred_to_ref <= tolerance_mm].sum()
    return float(close / (sd.areas_ref.sum() + sd.areas_pred.sum()))


def _weighted_percentile(distances: np.ndarray, areas: np.ndarray, percentile: float) -> float:
    # elements in (distance, area) order and the cumulative share as cumsum / sum, as surface-distance computes it, so
    # that even a share landing exactly on the percentile rounds the same way
    order = np.lexsort((areas, distances))
    sorted_areas = areas[order]
    share = np.cumsum(sorted_areas) / np.sum(sorted_areas)
    index = int(np.searchsorted(share, percentile / 100.0, side="left"))
    return float(distances[order][min(index, len(order) - 1)])


def hausdorff_from_distances(sd: SurfaceDistances, percentile: float = 95.0) -> float:
    """Symmetric area-weighted percentile Hausdorff distance (mm) of two non-empty surfaces."""
    return max(_weighted_percentile(sd.distances_ref_to_pred, sd.areas_ref, percentile),
               _weighted_percentile(sd.distances_pred_to_ref, sd.areas_pred, percentile))


def normalized_surface_dice(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                            tolerance_mm: float) -> float:
    """NSD at ``tolerance_mm``: the share of both surfaces' area lying within the tolerance of the other surface."""
    ref, pred = _masks(ref, pred)
    has_ref, has_pred = bool(ref.any()), bool(pred.any())
    if not (has_ref and has_pred):
        return 1.0 if has_ref == has_pred else 0.0
    return nsd_from_distances(surface_distances(ref, pred, spacing), tolerance_mm)


def hd95(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance in mm (area-weighted, symmetric); 0 if both empty, NaN if one is."""
    ref, pred = _masks(ref, pred)
    has_ref, has_pred = bool(ref.any()), bool(pred.any())
    if not (has_ref and has_pred):
        return 0.0 if has_ref == has_pred else NAN
    return hausdorff_from_distances(surface_distances(ref, pred, spacing))


def _row(label: int, counts: Counts, nsd: float, hd: float) -> dict:
    return {"label": int(label), "dice": dice_from_counts(counts), "nsd": nsd, "hd95": hd,
            "sensitivity": sensitivity_from_counts(counts), "precision": precision_from_counts(counts),
            "specificity": specificity_from_counts(counts), "accuracy": accuracy_from_counts(counts),
            "mcc": mcc_from_counts(counts), "n_ref": counts.tp + counts.fn, "n_pred": counts.tp + counts.fp}


def empty_label_row(label: int, num_voxels: int) -> dict:
    """The metrics of a label absent from both reference and prediction of a volume of ``num_voxels``."""
    return _row(label, Counts(0, 0, 0, int(num_voxels)), 1.0, 0.0)


def label_metrics(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance_mm: float,
                  label: int = 1, num_voxels: int | None = None) -> dict:
    """All metrics of one label's masks; ``num_voxels`` (default ``ref.size``) counts voxels cropped away as TN."""
    ref, pred = _masks(ref, pred)
    counts = confusion_counts(ref, pred)
    if num_voxels is not None:
        counts = counts._replace(tn=counts.tn + int(num_voxels) - ref.size)
    n_ref, n_pred = counts.tp + counts.fn, counts.tp + counts.fp
    if n_ref and n_pred:
        sd = surface_distances(ref, pred, spacing)
        return _row(label, counts, nsd_from_distances(sd, tolerance_mm), hausdorff_from_distances(sd))
    if n_ref or n_pred:
        return _row(label, counts, 0.0, NAN)
    return _row(label, counts, 1.0, 0.0)


def case_metrics(ref_labels: np.ndarray, pred_labels: np.ndarray, spacing: Sequence[float], labels: list[int],
                 tolerance_mm: float = 3.0) -> list[dict]:
    """One dict per label (``label``, the :data:`METRIC_NAMES`, ``n_ref``, ``n_pred``) for two label maps.

    Both maps are cropped to their joint foreground first; voxels outside are background in both (true negatives).
    """
    if ref_labels.shape != pred_labels.shape:
        raise ValueError(f"reference and prediction differ in shape: {ref_labels.shape} vs {pred_labels.shape}")
    foreground = (ref_labels != 0) | (pred_labels != 0)
    if not foreground.any():
        return [empty_label_row(label, ref_labels.size) for label in labels]
    box = bounding_box(foreground)
    ref_crop, pred_crop = crop_to_box(ref_labels, box), crop_to_box(pred_labels, box)
    return [label_metrics(ref_crop == label, pred_crop == label, spacing, tolerance_mm, label, ref_labels.size)
            for label in labels]
