"""Largest-connected-component post-processing: decide it on validation predictions, save the rule, apply it.

The decision follows nnU-Net: first try keeping only the largest connected component of the union of all foreground
labels, accepted when the mean over labels of the per-label mean Dice improves and no label's mean Dice gets worse;
then, for each label in order, try keeping only that label's largest component, accepted when that label's mean Dice
improves. An accepted step is the baseline of the later ones. Removed voxels become background.

Components are 26-connected (faces, edges and corners touch), the full connectivity nnU-Net uses. When two components
are equally large the first one in array order is kept. Dice of a label absent from both reference and prediction
counts as 1 (see :mod:`covtransfer.evaluation.metrics`); such cases are equal before and after, so they never decide.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from covtransfer.atomic import write_json
from covtransfer.data.cropping import bounding_box, crop_to_box
from covtransfer.errors import CovtransferError
from covtransfer.evaluation.evaluate import (check_labels, dataset_labels, json_safe, map_cases, pair_files,
                                             present_labels, read_pair)
from covtransfer.evaluation.metrics import dice

POSTPROCESSING_FILE = "postprocessing.json"  # the rules' name in a run's strategy or fold folder and in a package

def largest_component(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest 26-connected component of ``mask`` (all False when ``mask`` is empty).

    Labels only the mask's bounding box. acvl-utils' ``remove_all_but_largest_component`` keeps every component tied
    for the largest (this keeps one) and took 2x (scikit-image) to 2.5x (cc3d, few components) as long here.
    """
    mask = mask.astype(bool, copy=False)
    keep = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return keep
    box = bounding_box(mask)
    components, _ = ndimage.label(crop_to_box(mask, box), structure=np.ones((3,) * mask.ndim, dtype=bool))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    crop_to_box(keep, box)[...] = components == int(np.argmax(sizes))
    return keep


def _keep_largest(seg: np.ndarray, mask: np.ndarray) -> None:
    """Set every voxel of ``mask`` outside its largest component to background, in place."""
    seg[mask & ~largest_component(mask)] = 0


def apply_postprocessing(seg: np.ndarray, rules: dict) -> np.ndarray:
    """``seg`` after the rules of :func:`determine_postprocessing` (a new array; ``seg`` is not modified)."""
    out = seg.copy()
    if rules.get("largest_component_foreground"):
        _keep_largest(out, out > 0)
    for label in rules.get("largest_component_labels", []):
        _keep_largest(out, out == label)
    return out


def _case_dice(case: str, ref_path: Path, pred_path: Path, labels: list[int] | None) -> tuple[dict, set[int]]:
    """Per label the Dice of: the prediction, after the foreground step, after the label step, after both."""
    ref, pred, _ = read_pair(ref_path, pred_path)
    chosen = labels if labels is not None else sorted(present_labels(ref) | present_labels(pred))
    foreground_step = pred.copy()
    _keep_largest(foreground_step, foreground_step > 0)
    variants = {}
    for label in chosen:
        target = ref == label
        variants[label] = (dice(target, pred == label), dice(target, foreground_step == label),
                           dice(target, largest_component(pred == label)),
                           dice(target, largest_component(foreground_step == label)))
    return variants, present_labels(ref)


def determine_postprocessing(ref_folder: str | os.PathLike, pred_folder: str | os.PathLike,
                             labels: Sequence[int] | None = None, output: str | os.PathLike | None = None,
                             num_processes: int = 1) -> dict:
    """Decide the largest-component rules on predictions vs references; saved to ``output`` (JSON) if given.

    Labels default as in :func:`covtransfer.evaluation.evaluate.evaluate_folders`.
    """
    pairs = pair_files(ref_folder, pred_folder)
    chosen = check_labels(labels) if labels is not None else dataset_labels(ref_folder)
    results = map_cases(_case_dice, [(c, r, p, chosen) for c, r, p in pairs], num_processes)
    if chosen is None:
        chosen = sorted(set().union(*(present for _, present in results)))
    if not chosen:
        raise CovtransferError(f"{ref_folder}: the references hold no foreground label to post-process")
    # mean over cases of each variant, per label; a label absent from a case (both empty) has Dice 1 everywhere
    means = {label: np.mean([variants.get(label, (1.0,) * 4) for variants, _ in results], axis=0)
             for label in chosen}
    before = {label: float(means[label][0]) for label in chosen}
    after_foreground = {label: float(means[label][1]) for label in chosen}
    use_foreground = bool(np.mean(list(after_foreground.values())) > np.mean(list(before.values())) and
                          all(after_foreground[label] >= before[label] for label in chosen))
    baseline = after_foreground if use_foreground else before
    after, accepted_labels = dict(baseline), []
    for label in chosen:
        candidate = float(means[label][3 if use_foreground else 2])
        if candidate > baseline[label]:
            accepted_labels.append(label)
            after[label] = candidate
    rules = {"largest_component_foreground": use_foreground, "largest_component_labels": accepted_labels,
             "connectivity": 26, "labels": chosen, "num_cases": len(pairs),
             "dice_before": float(np.mean(list(before.values()))), "dice_after": float(np.mean(list(after.values()))),
             "dice_per_label_before": {str(k): v for k, v in before.items()},
             "dice_per_label_after": {str(k): v for k, v in after.items()}}
    if output is not None:
        write_json(output, json_safe(rules))
    return rules


def load_postprocessing(path: str | os.PathLike) -> dict:
    """Read and check a ``postprocessing.json`` written by :func:`determine_postprocessing`."""
    path = Path(path)
    if not path.is_file():
        raise CovtransferError(f"{path}: file not found")
    try:
        rules = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CovtransferError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(rules, dict) or not isinstance(rules.get("largest_component_foreground"), bool):
        raise CovtransferError(f"{path}: 'largest_component_foreground' must be true or false")
    labels = rules.get("largest_component_labels")
    if not isinstance(labels, list) or not all(isinstance(v, int) and v > 0 for v in labels):
        raise CovtransferError(f"{path}: 'largest_component_labels' must be a list of positive integers")
    return rules
