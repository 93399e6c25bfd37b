"""The typed experiment plans (``plans.json``): dataclasses that read and write human-readable JSON.

Every layer above the data layer reads these: preprocessing (spacing, transpose, normalisation, resampling), the
network builder (topology), the trainer (patch, batch) and the predictor. All per-axis lists are in ``(z, y, x)``
order *after* the transpose ``transpose_forward``; ``strides[0]`` is always ``[1, 1, 1]``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from covtransfer.atomic import write_json
from covtransfer.errors import CovtransferError

PLANS_VERSION = 1
# the configuration fields that decide a network's shape: two plans with equal values build the same network
TOPOLOGY_KEYS = ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage", "n_conv_per_stage_decoder")


@dataclass
class ChannelNormalization:
    """How one input channel is normalised.

    ``scheme`` is ``"CT"`` (clip to [lower, upper], then (x - mean) / std, with dataset-wide foreground statistics),
    ``"zscore"`` (per image: (x - mean) / std of that image) or ``"none"``.
    """

    scheme: str
    mean: float | None = None
    std: float | None = None
    lower: float | None = None
    upper: float | None = None


@dataclass
class ResamplingSettings:
    """Interpolation orders: images cubic, labels linear on one-hot, nearest along a coarse axis (``order_z``)."""

    order_data: int = 3
    order_seg: int = 1
    order_probabilities: int = 1
    order_z: int = 0
    anisotropy_threshold: float = 3.0


@dataclass
class Configuration:
    """One planned configuration (``3d_fullres``, ``3d_lowres``, ``cpu``): spacing, patch, batch and topology."""

    name: str
    spacing: list[float]
    patch_size: list[int]
    batch_size: int
    features_per_stage: list[int]
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    median_image_size: list[int]
    n_conv_per_stage: int = 2
    n_conv_per_stage_decoder: int = 2
    normalization: list[ChannelNormalization] = field(default_factory=list)
    resampling: ResamplingSettings = field(default_factory=ResamplingSettings)
    data_identifier: str = ""
    batch_dice: bool = False

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_stages"] = self.n_stages
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Configuration":
        d = {k: v for k, v in d.items() if k != "n_stages"}
        d["normalization"] = [ChannelNormalization(**n) for n in d.get("normalization", [])]
        d["resampling"] = ResamplingSettings(**d.get("resampling", {}))
        return cls(**d)


@dataclass
class Plans:
    """A dataset's plans: label and channel names, transpose, the configurations, and where they came from.

    ``plans_from`` names the dataset whose plans were copied (``--plans-from``), so that source datasets of a
    transfer study are preprocessed exactly like the target; it is None for a dataset's own plans.
    """

    dataset_name: str
    channel_names: dict[str, str]
    labels: dict[str, int]
    transpose_forward: list[int]
    transpose_backward: list[int]
    original_median_spacing: list[float]
    original_median_shape: list[int]
    configurations: dict[str, Configuration]
    foreground_intensity_properties_per_channel: dict[str, dict] = field(default_factory=dict)
    plans_from: str | None = None
    version: int = PLANS_VERSION

    @property
    def num_input_channels(self) -> int:
        return len(self.channel_names)

    def configuration(self, name: str) -> Configuration:
        """The named configuration; a clear error lists the planned ones."""
        if name not in self.configurations:
            raise CovtransferError(f"plans of {self.dataset_name} have no configuration {name!r} "
                                   f"(planned: {', '.join(self.configurations)})")
        return self.configurations[name]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["configurations"] = {k: c.to_dict() for k, c in self.configurations.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Plans":
        d = dict(d)
        d["configurations"] = {k: Configuration.from_dict(c) for k, c in d["configurations"].items()}
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plans":
        path = Path(path)
        if not path.is_file():
            raise CovtransferError(f"{path}: no plans (run covtransfer_plan_and_preprocess first)")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CovtransferError(f"{path}: not a valid plans file ({exc})") from None
