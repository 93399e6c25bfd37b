"""Disease burden of one case: label volumes, lung and lesion volumes per lung, the percentage of opacity (PO) and of
high opacity (PHO), lesion count and mean HU, and a per-lung severity grade.

PO = 100 x lesion volume inside the lung / lung volume; PHO = the same for lesion voxels at or above -200 HU
(Chaganti et al., Radiology: AI 2020). The lung is the model's own lung labels joined with the lesion when the
segmentation has any, else the HU extraction of :mod:`~covtransfer.evaluation.lung_mask`; either way it is split
into right and left by patient coordinates. The grade is per lung (not per lobe): 0 for PO 0, 1 below 25, 2 from
25 below 50, 3 from 50 to 75, 4 above 75.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy import ndimage

from covtransfer.data.cropping import box_slices
from covtransfer.data.geometry import Geometry
from covtransfer.errors import CovtransferError
from covtransfer.evaluation.lung_mask import hu_lung_mask
from covtransfer.evaluation.patient_sides import split_sides

HIGH_OPACITY_HU = -200.0
LISTED_LESIONS = 100  # the JSON lists this many of the largest lesions (a noisy mask can have 100 000s)
SIDES = ("right", "left")


def lung_label_values(labels: dict[str, int]) -> list[int]:
    """The values of labels whose name says lung (``lung``, ``left_lung``, ``Lung right`` ...)."""
    return sorted(value for name, value in labels.items() if value != 0 and "lung" in name.lower())


def severity_grade(po: float | None) -> int | None:
    """The per-lung grade 0-4 of a PO in percent (None stays None)."""
    if po is None:
        return None
    if po <= 0:
        return 0
    if po < 25:
        return 1
    if po < 50:
        return 2
    return 3 if po <= 75 else 4


def _percent(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def _burden(n_lung: int, n_lesion: int, n_high: int, voxel_ml: float) -> dict:
    """Lung, lesion and high-opacity volumes (mL), PO and PHO of one lung or both, from voxel counts."""
    return {"lung_ml": n_lung * voxel_ml, "lesion_ml": n_lesion * voxel_ml, "high_opacity_ml": n_high * voxel_ml,
            "po": _percent(n_lesion, n_lung), "pho": _percent(n_high, n_lung)}


def _lesions(image: np.ndarray, lesion: np.ndarray, voxel_ml: float) -> tuple[int, list[dict], float | None]:
    """The number of connected lesion components (26-connected), the largest :data:`LISTED_LESIONS` of them,
    largest first (volume in mL and mean HU), and the mean HU of all lesion voxels (None without lesion)."""
    if not lesion.any():
        return 0, [], None
    box = box_slices(lesion)
    components, count = ndimage.label(lesion[box], structure=np.ones((3, 3, 3), dtype=bool))
    inside = lesion[box]
    ids = components[inside]
    sizes = np.bincount(ids, minlength=count + 1)[1:]
    sums = np.bincount(ids, weights=image[box][inside].astype(np.float64), minlength=count + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    listed = [{"volume_ml": float(sizes[i]) * voxel_ml, "mean_hu": float(sums[i] / sizes[i])}
              for i in order[:LISTED_LESIONS]]
    return count, listed, float(sums.sum() / sizes.sum())


def _mask_of(segmentation: np.ndarray, values: list[int]) -> np.ndarray:
    """Where the segmentation holds any of ``values`` (one comparison per value, cheaper than np.isin)."""
    if not values:
        return np.zeros(segmentation.shape, dtype=bool)
    mask = segmentation == values[0]
    for value in values[1:]:
        mask |= segmentation == value
    return mask


def case_statistics(image: np.ndarray, segmentation: np.ndarray, geometry: Geometry, labels: dict[str, int],
                    lung_values: Iterable[int] = (), source: str = "the segmentation") -> dict:
    """The burden statistics of one case (see the module docstring); ``labels`` names the label values,
    ``lung_values`` are the lung labels among them. An error naming ``source`` when no lung is found."""
    lung_values = sorted(set(lung_values))
    lesion_values = sorted(v for v in labels.values() if v != 0 and v not in lung_values)
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
    counts = {value: np.count_nonzero(segmentation == value) for value in labels.values() if value != 0}
    lesion = _mask_of(segmentation, lesion_values)
    model_lungs = any(counts.get(v, 0) for v in lung_values)
    if model_lungs:
        lung = _mask_of(segmentation, lung_values) | lesion
    else:
        lung = hu_lung_mask(image, geometry, lesion)
    if not lung.any():
        raise CovtransferError(f"{source}: no lung found (no air inside the body and no lung label)")
    high = lesion & (image >= HIGH_OPACITY_HU)
    stats: dict = {"lung_source": "model" if model_lungs else "hu",
                   "voxel_volume_ml": voxel_ml,
                   "label_volumes_ml": {name: counts[v] * voxel_ml
                                        for name, v in sorted(labels.items(), key=lambda item: item[1]) if v != 0}}
    sides = [tuple(np.count_nonzero(m) for m in (mask, lesion & mask, high & mask))
             for mask in split_sides(lung, geometry)]
    for side, side_counts in zip(SIDES, sides):
        stats[side] = _burden(*side_counts, voxel_ml)
        stats[side]["grade"] = severity_grade(stats[side]["po"])
    stats["total"] = _burden(*(sum(side) for side in zip(*sides)), voxel_ml)  # the sides split the lung
    stats["lesion_count"], stats["lesions"], stats["lesion_mean_hu"] = _lesions(image, lesion, voxel_ml)
    return stats


CSV_COLUMNS = ("case", "lung_source", "lung_ml_right", "lung_ml_left", "lesion_ml_right", "lesion_ml_left",
               "po_right", "po_left", "po_total", "pho_right", "pho_left", "pho_total", "grade_right", "grade_left",
               "lesion_count", "lesion_mean_hu")


def csv_row(case: str, stats: dict) -> dict:
    """The flat ``statistics.csv`` row of one case's statistics (label volumes as ``volume_ml_<name>``)."""
    row = {"case": case, "lung_source": stats["lung_source"], "lesion_count": stats["lesion_count"],
           "lesion_mean_hu": stats["lesion_mean_hu"]}
    for side in SIDES + ("total",):
        part = stats[side]
        if side != "total":
            row[f"lung_ml_{side}"], row[f"lesion_ml_{side}"] = part["lung_ml"], part["lesion_ml"]
            row[f"grade_{side}"] = part["grade"]
        row[f"po_{side}"], row[f"pho_{side}"] = part["po"], part["pho"]
    row.update({f"volume_ml_{name}": volume for name, volume in stats["label_volumes_ml"].items()})
    return row
