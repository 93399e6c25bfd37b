"""The per-case preprocessor: transpose, crop to non-zero, normalise, resample, sample foreground locations.

Normalisation comes before resampling on purpose: the non-zero mask is defined on the original grid and a resampled
mask would no longer line up with the image. Voxels outside the mask are labelled -1 so training can tell padding
from background. The same preprocessor serves training (with a label map) and inference (without).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from covtransfer.data.cropping import crop_to_nonzero
from covtransfer.data.image_io import Geometry, file_ending, read_image
from covtransfer.data.scan_checks import check_ct_intensities, check_resampled_memory, check_voxels, check_volume
from covtransfer.errors import CovtransferError
from covtransfer.plans import Plans
from covtransfer.preprocessing.normalization import normalize
from covtransfer.preprocessing.resampling import compute_new_shape, resample_image, resample_labels

OUTSIDE_MASK = -1
LOCATIONS_PER_CLASS = 10_000
MIN_LOCATION_FRACTION = 0.01
LOCATION_SEED = 1234


def sample_class_locations(seg: np.ndarray, labels: Sequence[int], seed: int = LOCATION_SEED
                           ) -> dict[str, list[list[int]]]:
    """Per label, up to 10,000 voxel coordinates ``[z, y, x]`` of ``seg`` (Z, Y, X), never fewer than 1 % of them.

    Drawn without replacement from one generator seeded with ``seed``, labels in the given order; a label absent
    from ``seg`` gets an empty list.
    """
    rng = np.random.default_rng(seed)
    locations: dict[str, list[list[int]]] = {}
    for label in labels:
        flat = np.flatnonzero(seg == label)
        count = max(min(LOCATIONS_PER_CLASS, flat.size), math.ceil(flat.size * MIN_LOCATION_FRACTION))
        chosen = np.sort(rng.choice(flat, size=count, replace=False)) if count else flat
        locations[str(int(label))] = np.stack(np.unravel_index(chosen, seg.shape), axis=1).tolist()
    return locations


def case_id_from_image(path: str | os.PathLike) -> str:
    """``case`` from an image file named ``case_0000<ending>`` (or the bare name without its ending)."""
    name = Path(path).name
    stem = name[: -len(file_ending(name))] if file_ending(name) else name
    return re.sub(r"_\d{4}$", "", stem)


class CasePreprocessor:
    """Preprocesses one case for the configuration ``configuration_name`` of ``plans``."""

    def __init__(self, plans: Plans, configuration_name: str):
        self.plans = plans
        self.configuration = plans.configuration(configuration_name)
        self.foreground_labels = sorted(v for v in set(plans.labels.values()) if v > 0)

    def run(self, images: Sequence[np.ndarray], geometry: Geometry, seg: np.ndarray | None = None,
            case_id: str = "case", source: str | os.PathLike | None = None
            ) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Preprocess channel arrays (each Z, Y, X) and an optional label map; returns ``(data, seg, properties)``.
        ``source``, the first channel's file when known, is what a refusal names.

        ``data`` is float32 (C, Z, Y, X); ``seg`` is int8 (1, Z, Y, X) with -1 outside the non-zero mask, or None.
        The inputs are not modified.
        """
        if len(images) != self.plans.num_input_channels:
            raise CovtransferError(f"case {case_id}: {len(images)} channel(s) given, the plans expect "
                                   f"{self.plans.num_input_channels}")
        arrays = [np.asarray(image) for image in images]
        data = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)  # a view: the inputs are only read
        original_shape = list(data.shape[1:])
        forward = [int(a) for a in self.plans.transpose_forward]
        data = data.transpose([0] + [a + 1 for a in forward])
        spacing = [float(geometry.spacing[a]) for a in forward]
        seg_array = None
        if seg is not None:
            seg_array = _as_label_map(np.asarray(seg), case_id).transpose(forward)[None]
        shape_before_cropping = list(data.shape[1:])

        data, seg_array, box, mask = crop_to_nonzero(data, seg_array)
        if seg_array is not None:
            seg_array = seg_array.copy()
            seg_array[(seg_array == 0) & ~mask[None]] = OUTSIDE_MASK
        shape_after_cropping = list(data.shape[1:])

        data = normalize(data, self.configuration.normalization)

        target = [float(s) for s in self.configuration.spacing]
        new_shape = compute_new_shape(shape_after_cropping, spacing, target)
        check_resampled_memory(source or f"case {case_id}", new_shape, len(arrays))
        settings = self.configuration.resampling
        data = resample_image(data, spacing, target, new_shape, settings.order_data, settings.order_z,
                              settings.anisotropy_threshold)
        locations: dict[str, list[list[int]]] = {}
        if seg_array is not None:
            seg_array = resample_labels(seg_array[0], spacing, target, new_shape, settings.order_seg,
                                        settings.order_z, settings.anisotropy_threshold)[None]
            locations = sample_class_locations(seg_array[0], self.foreground_labels)

        properties = {
            "case_id": case_id,
            "geometry": geometry.to_dict(),
            "original_shape": original_shape,
            "shape_before_cropping": shape_before_cropping,
            "bbox": [[int(a), int(b)] for a, b in box],
            "shape_after_cropping": shape_after_cropping,
            "original_spacing": spacing,
            "target_spacing": target,
            "shape_after_resampling": list(data.shape[1:]),
            "class_locations": locations,
        }
        return data, seg_array, properties

    def check_scan(self, path: str | os.PathLike, array: np.ndarray, channel: int) -> None:
        """The voxel checks of one channel file before any work: a volume, finite voxels, and for a CT channel
        values that can be Hounsfield units."""
        check_volume(path, array.shape)
        check_voxels(path, array)
        normalization = self.configuration.normalization
        if channel < len(normalization) and normalization[channel].scheme == "CT":
            check_ct_intensities(path, array)

    def run_files(self, image_paths: Sequence[str | os.PathLike], label_path: str | os.PathLike | None = None,
                  case_id: str | None = None) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Read the channel files (and label file) of one case and preprocess them; shapes must agree."""
        image_paths = [Path(p) for p in image_paths]
        if not image_paths:
            raise CovtransferError("no image files given")
        case_id = case_id or case_id_from_image(image_paths[0])
        images, geometry = [], None
        for channel, path in enumerate(image_paths):
            array, this_geometry = read_image(path)
            self.check_scan(path, array, channel)
            if geometry is None:
                geometry = this_geometry
            elif array.shape != images[0].shape:
                raise CovtransferError(f"{path}: shape {list(array.shape)} differs from "
                                       f"{list(images[0].shape)} of {image_paths[0].name}")
            images.append(array)
        seg = None
        if label_path is not None:
            seg, _ = read_image(label_path)
            if seg.shape != images[0].shape:
                raise CovtransferError(f"{label_path}: label shape {list(seg.shape)} differs from image shape "
                                       f"{list(images[0].shape)} of {image_paths[0].name}")
        return self.run(images, geometry, seg, case_id, image_paths[0])


def _as_label_map(seg: np.ndarray, case_id: str) -> np.ndarray:
    """``seg`` as int8, refusing values that are not integers in 0..127."""
    if seg.size and (seg.min() < 0 or seg.max() > 127):
        raise CovtransferError(f"case {case_id}: label values must lie in 0..127, found {seg.min()}..{seg.max()}")
    if not np.issubdtype(seg.dtype, np.integer) and not np.array_equal(seg, np.round(seg)):
        raise CovtransferError(f"case {case_id}: label map holds non-integer values")
    return seg.astype(np.int8)
