"""The dataset fingerprint (``dataset_fingerprint.json``): what planning needs to know about a raw dataset.

Per training case: the spacing and the shape after cropping to the non-zero region, and the fraction of the image
the crop keeps. Per channel: foreground (label > 0) intensity statistics pooled over a fixed budget of sampled
voxels (1e8 in total, ``budget // n_cases`` per case, drawn with replacement from a RandomState seeded 1234 per
case, as nnU-Net does), so that CT normalisation uses dataset-wide foreground percentiles, mean and std. Cases are
analysed in worker processes and only the sampled voxels travel back, which bounds the parent's memory to the
budget (4 bytes per sample and channel).

A case with fewer foreground voxels than its share of the budget (every case of a small dataset: 1e8 samples against
a few thousand voxels) does not materialise its samples: the same random indices are drawn, in chunks, and only
counted, so the case sends back each voxel's value once with how often it was drawn. The statistics weigh each value
by its count, which gives nnU-Net's figures without sorting or sending 1e8 floats.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from covtransfer.atomic import write_json
from covtransfer.data.cropping import crop_to_nonzero
from covtransfer.data.dataset_json import DatasetInfo, list_cases
from covtransfer.data.image_io import read_image
from covtransfer.errors import CovtransferError

FOREGROUND_VOXEL_BUDGET = 10 ** 8
COUNT_CHUNK = 1 << 22  # random indices drawn at a time when only their counts are kept
SAMPLING_SEED = 1234
REQUIRED_KEYS = ("spacings", "shapes_after_crop", "foreground_intensity_properties_per_channel",
                 "median_relative_size_after_cropping")


def draw_counts(rng: np.random.RandomState, n: int, k: int) -> np.ndarray:
    """How often each of ``n`` values is picked by ``rng.choice(values, k, replace=True)``: the same indices, drawn
    in chunks and counted instead of kept, leaving ``rng`` where ``choice`` leaves it."""
    counts = np.zeros(n, dtype=np.int64)
    for start in range(0, k, COUNT_CHUNK):
        counts += np.bincount(rng.randint(0, n, size=min(COUNT_CHUNK, k - start)), minlength=n)
    return counts


def analyse_case(image_paths: Sequence[str | os.PathLike], label_path: str | os.PathLike,
                 samples_per_channel: int) -> dict:
    """Spacing, cropped shape, relative crop size and ``samples_per_channel`` foreground intensities per channel:
    the samples themselves, or when they outnumber the voxels each voxel's value and how often it was drawn."""
    images = [read_image(path) for path in image_paths]
    shapes = {array.shape for array, _ in images}
    if len(shapes) != 1:
        raise CovtransferError(f"{Path(image_paths[0]).parent}: channels of one case differ in shape: {sorted(shapes)}")
    data = np.stack([array for array, _ in images])
    seg, _ = read_image(label_path)
    if seg.shape != data.shape[1:]:
        raise CovtransferError(f"{label_path}: label shape {seg.shape} differs from image shape {data.shape[1:]}")
    cropped, cropped_seg, _, _ = crop_to_nonzero(data, seg[None])
    foreground = cropped_seg[0] > 0
    rng = np.random.RandomState(SAMPLING_SEED)
    samples = []
    for channel in cropped:
        values = channel[foreground].astype(np.float32)
        if values.size == 0:
            samples.append(np.empty(0, dtype=np.float32))
        elif samples_per_channel < values.size:
            samples.append(rng.choice(values, samples_per_channel, replace=True))
        else:
            counts = draw_counts(rng, values.size, samples_per_channel)
            drawn = counts > 0
            samples.append((values[drawn], counts[drawn]))
    return {"spacing": [float(s) for s in images[0][1].spacing],
            "shape_after_crop": [int(s) for s in cropped.shape[1:]],
            "relative_size_after_cropping": float(np.prod(cropped.shape[1:]) / np.prod(data.shape[1:])),
            "samples": samples}


def _analyse_case_star(args: tuple) -> dict:
    return analyse_case(*args)


def intensity_statistics(values: np.ndarray) -> dict:
    """mean, median, std, min, max and the 0.5 / 99.5 percentiles of ``values`` (which may be reordered)."""
    stats = {"mean": float(np.mean(values, dtype=np.float64)), "std": float(np.std(values, dtype=np.float64)),
             "min": float(np.min(values)), "max": float(np.max(values))}
    low, median, high = np.percentile(values, (0.5, 50.0, 99.5), overwrite_input=True)
    stats.update({"median": float(median), "percentile_00_5": float(low), "percentile_99_5": float(high)})
    return stats


def weighted_intensity_statistics(values: np.ndarray, counts: np.ndarray) -> dict:
    """:func:`intensity_statistics` of the array holding each of ``values`` ``counts`` times (counts > 0), without
    building it; the percentiles interpolate linearly between its order statistics as NumPy's do."""
    order = np.argsort(values, kind="stable")
    values, counts = values[order].astype(np.float64), counts[order]
    total = int(counts.sum())
    mean = float(np.dot(values, counts) / total)
    stats = {"mean": mean, "std": float(np.sqrt(np.dot((values - mean) ** 2, counts) / total)),
             "min": float(values[0]), "max": float(values[-1])}
    ends = np.cumsum(counts)  # the k-th element (from 0) of the expanded sorted array is values[first end > k]
    for key, q in (("median", 50.0), ("percentile_00_5", 0.5), ("percentile_99_5", 99.5)):
        position = q / 100 * (total - 1)
        below = int(np.floor(position))
        low, high = values[np.searchsorted(ends, [below, min(below + 1, total - 1)], side="right")]
        stats[key] = float(low + (high - low) * (position - below))
    return stats


def compute_fingerprint(raw_folder: str | os.PathLike, info: DatasetInfo, num_processes: int = 2,
                        voxel_budget: int = FOREGROUND_VOXEL_BUDGET) -> dict:
    """Fingerprint the training cases of ``raw_folder`` (``imagesTr`` + ``labelsTr``) with ``num_processes`` workers.

    ``voxel_budget`` is the total number of foreground samples per channel (nnU-Net's 1e8 by default; lower it to
    save memory on small machines).
    """
    raw_folder = Path(raw_folder)
    cases = list_cases(raw_folder, info, "Tr")
    if not cases:
        raise CovtransferError(f"{raw_folder / 'imagesTr'}: no training cases found")
    for case in cases:
        if case.label is None:
            raise CovtransferError(f"{raw_folder / 'labelsTr'}: no label file for case {case.case_id}")
        if len(case.images) != info.num_channels:
            raise CovtransferError(f"{raw_folder / 'imagesTr'}: case {case.case_id} has {len(case.images)} channel "
                                   f"files, dataset.json declares {info.num_channels}")
    per_case = int(voxel_budget // len(cases))
    jobs = [([str(p) for p in case.images], str(case.label), per_case) for case in cases]
    pooled = [np.empty(per_case * len(cases), dtype=np.float32) for _ in range(info.num_channels)]
    filled = [0] * info.num_channels
    counted: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(info.num_channels)]
    results = []

    def collect(result: dict) -> None:
        for channel, samples in enumerate(result.pop("samples")):
            if isinstance(samples, tuple):
                counted[channel].append(samples)
                continue
            pooled[channel][filled[channel]:filled[channel] + samples.size] = samples
            filled[channel] += samples.size
        results.append(result)

    progress = dict(total=len(jobs), desc=f"fingerprinting {raw_folder.name}", unit="case")
    if num_processes <= 1 or len(jobs) == 1:
        for job in tqdm(jobs, **progress):
            collect(analyse_case(*job))
    else:
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(min(num_processes, len(jobs)), mp_context=context) as pool:
                for result in tqdm(pool.map(_analyse_case_star, jobs), **progress):
                    collect(result)
        except BrokenProcessPool:
            raise CovtransferError(f"{raw_folder}: a fingerprint worker process died (out of memory? try fewer "
                                   "processes; a calling script needs an `if __name__ == '__main__':` guard)") from None

    properties = {}
    for channel in range(info.num_channels):
        if filled[channel] == 0 and not counted[channel]:
            raise CovtransferError(f"{raw_folder / 'labelsTr'}: no foreground voxel (label > 0) in any case, "
                                   "so no intensity statistics can be computed")
        sampled = pooled[channel][:filled[channel]]
        if not counted[channel]:
            properties[str(channel)] = intensity_statistics(sampled)
            continue
        values = np.concatenate([sampled] + [v for v, _ in counted[channel]])
        counts = np.concatenate([np.ones(sampled.size, dtype=np.int64)] + [c for _, c in counted[channel]])
        properties[str(channel)] = weighted_intensity_statistics(values, counts)
    return {
        "case_ids": [case.case_id for case in cases],
        "spacings": [r["spacing"] for r in results],
        "shapes_after_crop": [r["shape_after_crop"] for r in results],
        "foreground_intensity_properties_per_channel": properties,
        "median_relative_size_after_cropping": float(np.median([r["relative_size_after_cropping"]
                                                                  for r in results])),
        "foreground_samples_per_case": per_case,
    }


def save_fingerprint(path: str | os.PathLike, fingerprint: dict) -> None:
    """Write ``fingerprint`` as indented JSON, atomically."""
    write_json(path, fingerprint)


def load_fingerprint(path: str | os.PathLike) -> dict:
    """Read a fingerprint written by :func:`save_fingerprint`; a one-line error if it is missing or incomplete."""
    path = Path(path)
    if not path.is_file():
        raise CovtransferError(f"{path}: no fingerprint (run covtransfer_plan_and_preprocess first)")
    try:
        fingerprint = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CovtransferError(f"{path}: not valid JSON ({exc})") from None
    missing = [key for key in REQUIRED_KEYS if key not in fingerprint]
    if missing:
        raise CovtransferError(f"{path}: fingerprint lacks {', '.join(missing)}")
    return fingerprint
