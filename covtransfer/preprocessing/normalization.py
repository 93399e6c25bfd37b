"""Intensity normalisation per channel, as planned: CT (dataset-wide), z-score (per image) or none.

CT values are physical (Hounsfield units), so one clip window and one mean/std from the foreground of the whole
dataset serve every case; other modalities have arbitrary scales and are standardised image by image.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from covtransfer.errors import CovtransferError
from covtransfer.plans import ChannelNormalization

EPSILON = 1e-8


def _normalize_channel(channel: np.ndarray, scheme: ChannelNormalization, out: np.ndarray) -> None:
    """Write the normalised ``channel`` into ``out`` (float32), in as few passes over the voxels as possible."""
    if scheme.scheme == "CT":
        missing = [k for k in ("mean", "std", "lower", "upper") if getattr(scheme, k) is None]
        if missing:
            raise CovtransferError(f"CT normalisation needs {', '.join(missing)} in the plans")
        mean = float(scheme.mean)
        np.subtract(channel, np.float32(mean), out=out, dtype=np.float32, casting="unsafe")
        np.clip(out, np.float32(scheme.lower - mean), np.float32(scheme.upper - mean), out=out)
        out *= np.float32(1.0 / max(scheme.std, EPSILON))
    elif scheme.scheme == "zscore":
        mean, std = float(channel.mean(dtype=np.float64)), float(channel.std(dtype=np.float64))
        np.subtract(channel, np.float32(mean), out=out, dtype=np.float32, casting="unsafe")
        out *= np.float32(1.0 / max(std, EPSILON))
    elif scheme.scheme == "none":
        out[...] = channel
    else:
        raise CovtransferError(f"unknown normalisation scheme {scheme.scheme!r} (expected CT, zscore or none)")


def normalize(data: np.ndarray, schemes: Sequence[ChannelNormalization]) -> np.ndarray:
    """Normalise ``data`` (C, Z, Y, X) channel by channel with ``schemes`` (one per channel); a new float32 array."""
    if len(schemes) != data.shape[0]:
        raise CovtransferError(f"the plans normalise {len(schemes)} channel(s) but the image has {data.shape[0]}")
    out = np.empty(data.shape, dtype=np.float32)
    for index, scheme in enumerate(schemes):
        _normalize_channel(data[index], scheme, out[index])
    return out
