"""Random training patches with forced foreground oversampling, padded at the borders.

Per batch, the last ``round(batch × oversample)`` samples are centred on a stored foreground voxel of a random
class present in the case; the others are uniform boxes. As in nnU-Net, a box may reach past each border by half of
``max(margin, patch - image)``: the margin is what augmentation crops away, so that the final patch reaches the image
edges but hardly ever past them, and an image smaller than the patch is padded evenly around it. Outside the image,
data is padded with 0 and labels with -1 (ignored, later set to background).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

from covtransfer.training.case_store import CaseStore


def crop_padded(array: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float) -> np.ndarray:
    """The box ``start .. start + size`` of the spatial axes of ``array`` (c, z, y, x), ``fill`` outside it.

    acvl-utils' ``crop_and_pad_nd`` returns a view where the box lies inside, which saves a copy before the batch is
    stacked; a box wholly outside is answered here, as acvl-utils would fill it with 0 instead of ``fill``.
    """
    box = [[int(s), int(s) + int(n)] for s, n in zip(start, size)]
    if any(hi <= 0 or lo >= dim for (lo, hi), dim in zip(box, array.shape[1:])):
        return np.full((array.shape[0], *size), fill, dtype=array.dtype)
    return crop_and_pad_nd(array, box, fill)


class PatchSampler:
    """Draws batches of ``(images, seg)`` patches of ``patch_size`` from the cases of a :class:`CaseStore`."""

    def __init__(self, store: CaseStore, case_ids: list[str], patch_size: Sequence[int],
                 final_patch_size: Sequence[int], batch_size: int, oversample_foreground: float = 0.33):
        self.store = store
        self.case_ids = list(case_ids)
        self.patch_size = np.asarray(patch_size, dtype=np.int64)
        self.margin = self.patch_size - np.asarray(final_patch_size, dtype=np.int64)
        self.batch_size = batch_size
        self.first_forced = int(round(batch_size * (1 - oversample_foreground)))

    def bounds(self, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest patch start per axis for an image of ``shape`` (both inclusive)."""
        shape = np.asarray(shape, dtype=np.int64)
        pad = np.maximum(self.margin, self.patch_size - shape)
        lower = (-pad) // 2  # -ceil(pad / 2): an odd padding reaches one voxel further below than above
        upper = shape - self.patch_size + (pad + 1) // 2
        return lower, upper

    def _start(self, case_id: str, shape: np.ndarray, forced: bool, rng: np.random.Generator) -> np.ndarray:
        lower, upper = self.bounds(shape)
        locations = self.store.class_locations(case_id) if forced else {}
        if locations:
            label = list(locations)[rng.integers(len(locations))]
            voxel = locations[label][rng.integers(len(locations[label]))]
            # centred on the voxel (never clipped from above, so the voxel stays inside the final centre crop)
            return np.maximum(voxel - self.patch_size // 2, lower)
        return np.array([rng.integers(lo, hi + 1) for lo, hi in zip(lower, upper)])

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One batch: images ``(B, C, *patch)`` float32 and seg ``(B, 1, *patch)`` int8."""
        images, segs = [], []
        for i in range(self.batch_size):
            case_id = self.case_ids[rng.integers(len(self.case_ids))]
            data, seg = self.store.arrays(case_id)
            start = self._start(case_id, np.asarray(data.shape[1:]), i >= self.first_forced, rng)
            images.append(crop_padded(data, start, self.patch_size, 0.0))
            segs.append(crop_padded(seg, start, self.patch_size, -1))
        return np.stack(images), np.stack(segs)
