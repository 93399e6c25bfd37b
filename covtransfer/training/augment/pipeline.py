"""The training augmentation pipeline in nnU-Net's order, and the patch size the data loader must cut for it.

Order: spatial (rotation, scaling, centre crop), Gaussian noise, Gaussian blur, brightness, contrast, low resolution,
inverted gamma, gamma, mirror, then RemoveLabel (-1 -> 0). Deep-supervision targets are made separately
(:mod:`covtransfer.training.augment.deep_supervision`) because the trainer knows the network's strides.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from covtransfer.training.augment.base import SampledTransform
from covtransfer.training.augment.blur import GaussianBlur
from covtransfer.training.augment.brightness import MultiplicativeBrightness
from covtransfer.training.augment.contrast import Contrast
from covtransfer.training.augment.gamma import Gamma
from covtransfer.training.augment.lowres import SimulateLowResolution
from covtransfer.training.augment.mirror import Mirror
from covtransfer.training.augment.noise import GaussianNoise
from covtransfer.training.augment.remove_label import RemoveLabel
from covtransfer.training.augment.spatial import SpatialTransform, initial_patch_size, is_dummy_2d

ROTATION_DEGREES_3D = 30.0
ROTATION_DEGREES_DUMMY_2D = 180.0
SCALE_RANGE = (0.7, 1.4)
# nnU-Net sizes the input patch for zooms down to 0.85 only (its legacy scale range); stronger zoom-outs read past
# the input and fill with 0 / -1, which keeps input patches, and so loading, much smaller.
INITIAL_PATCH_SCALE_RANGE = (0.85, 1.25)

__all__ = ["TrainingAugmentation", "build_training_pipeline", "build_validation_pipeline", "initial_patch_size"]


class TrainingAugmentation:
    """Batched transforms in order; ``initial_patch_size`` is what the loader cuts, ``patch_size`` what comes out."""

    def __init__(self, transforms: Sequence[SampledTransform], patch_size: Sequence[int],
                 initial_patch_size: Sequence[int]) -> None:
        self.transforms = list(transforms)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.initial_patch_size = tuple(int(p) for p in initial_patch_size)

    def sample(self, batch: int, channels: int, generator: torch.Generator) -> list[Any]:
        """Every transform's parameters for a batch, in order; only batch size and channel count decide the draws."""
        return [transform.sample(batch, channels, generator) for transform in self.transforms]

    def apply(self, images: torch.Tensor, seg: torch.Tensor,
              params: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transforms with recorded ``params`` (from :meth:`sample`); replays a batch exactly."""
        for transform, drawn in zip(self.transforms, params, strict=True):
            images, seg = transform.apply(images, seg, drawn)
        return images, seg

    def __call__(self, images: torch.Tensor, seg: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply(images, seg, self.sample(images.shape[0], images.shape[1], generator))


def build_training_pipeline(patch_size: Sequence[int], mirror_axes: Sequence[int] | None = (0, 1, 2),
                            dummy_2d: bool | None = None,
                            rotation_degrees: float | Sequence[float] | None = None) -> TrainingAugmentation:
    """nnU-Net's default training augmentation for ``patch_size`` (z, y, x).

    ``dummy_2d`` None decides by the patch shape (:func:`is_dummy_2d`); dummy-2D patches rotate in-plane only, by up
    to ±180° unless ``rotation_degrees`` says otherwise (3D: ±30° per axis), and keep full z resolution in the
    low-resolution simulation. ``mirror_axes`` None or empty turns mirroring off.
    """
    flat = is_dummy_2d(patch_size) if dummy_2d is None else dummy_2d
    if rotation_degrees is None:
        rotation_degrees = ROTATION_DEGREES_DUMMY_2D if flat else ROTATION_DEGREES_3D
    transforms: list[SampledTransform] = [
        SpatialTransform(patch_size, rotation_degrees=rotation_degrees, p_rotation=0.2, scale_range=SCALE_RANGE,
                         p_scale=0.2, dummy_2d=flat),
        GaussianNoise(p=0.1, std_range=(0.0, 0.1)),
        GaussianBlur(p=0.2, sigma_range=(0.5, 1.0), p_per_channel=0.5),
        MultiplicativeBrightness(p=0.15, factor_range=(0.75, 1.25)),
        Contrast(p=0.15, factor_range=(0.75, 1.25), preserve_range=True),
        SimulateLowResolution(p=0.25, zoom_range=(0.5, 1.0), p_per_channel=0.5, ignore_axes=(0,) if flat else ()),
        Gamma(p=0.1, gamma_range=(0.7, 1.5), invert=True, retain_stats=True),
        Gamma(p=0.3, gamma_range=(0.7, 1.5), invert=False, retain_stats=True),
    ]
    if mirror_axes:
        transforms.append(Mirror(axes=mirror_axes))
    transforms.append(RemoveLabel())
    initial = initial_patch_size(patch_size, rotation_degrees, INITIAL_PATCH_SCALE_RANGE, dummy_2d=flat)
    return TrainingAugmentation(transforms, patch_size, initial)


def build_validation_pipeline(patch_size: Sequence[int]) -> TrainingAugmentation:
    """Validation patches are cut at the final size and only get RemoveLabel, as in nnU-Net."""
    return TrainingAugmentation([RemoveLabel()], patch_size, patch_size)
