"""Rotation and scaling with one affine resampling shared by image (trilinear) and label (trilinear on its one-hot
encoding, then argmax, as nnU-Net does), then centre crop.

Patches arrive at the larger *initial patch size* (:func:`initial_patch_size`, nnU-Net's rule) so that rotated or
zoomed content mostly fills the final patch; samples drawn with neither rotation nor scaling are centre-cropped
without resampling. Voxels sampled from outside the input become 0 in the image and the lowest label present (-1 if
the patch holds padding, else background) in the label; ``RemoveLabel`` later turns -1 into background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from covtransfer.training.augment.base import SampledTransform
from covtransfer.training.augment.sampling import coin, uniform


def is_dummy_2d(patch_size: Sequence[int]) -> bool:
    """nnU-Net's rule: a patch much thinner along z (``max / patch[0] > 3``) is augmented in-plane only."""
    return max(patch_size) / patch_size[0] > 3


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) rotations in (z, y, x) voxel space from (n, 3) angles in radians about the z, y and x axes."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    n = angles.shape[0]
    about_z = torch.zeros(n, 3, 3, dtype=angles.dtype)
    about_z[:, 0, 0] = 1
    about_z[:, 1, 1], about_z[:, 1, 2] = cos[:, 0], -sin[:, 0]
    about_z[:, 2, 1], about_z[:, 2, 2] = sin[:, 0], cos[:, 0]
    about_y = torch.zeros(n, 3, 3, dtype=angles.dtype)
    about_y[:, 1, 1] = 1
    about_y[:, 0, 0], about_y[:, 0, 2] = cos[:, 1], sin[:, 1]
    about_y[:, 2, 0], about_y[:, 2, 2] = -sin[:, 1], cos[:, 1]
    about_x = torch.zeros(n, 3, 3, dtype=angles.dtype)
    about_x[:, 2, 2] = 1
    about_x[:, 0, 0], about_x[:, 0, 1] = cos[:, 2], -sin[:, 2]
    about_x[:, 1, 0], about_x[:, 1, 1] = sin[:, 2], cos[:, 2]
    return about_z @ about_y @ about_x


def _max_radians(rotation_degrees: float | Sequence[float], dummy_2d: bool) -> torch.Tensor:
    """Per-axis maximum angle in radians; dummy 2D keeps only the in-plane angle (about z)."""
    degrees = [float(rotation_degrees)] * 3 if isinstance(rotation_degrees, (int, float)) else list(rotation_degrees)
    if len(degrees) != 3:
        raise ValueError(f"rotation_degrees needs one value or three (z, y, x), got {rotation_degrees}")
    if dummy_2d:
        degrees = [degrees[0], 0.0, 0.0]
    return torch.tensor([math.radians(abs(d)) for d in degrees], dtype=torch.float64)


def _scale_axes(factors: torch.Tensor, dummy_2d: bool) -> torch.Tensor:
    """(n, 3) per-axis zoom from (n,) factors: all axes, or y and x only for dummy 2D."""
    per_axis = factors[:, None].repeat(1, 3)
    if dummy_2d:
        per_axis[:, 0] = 1.0
    return per_axis


def initial_patch_size(patch_size: Sequence[int], rotation_degrees: float | Sequence[float],
                       scale_range: tuple[float, float], dummy_2d: bool = False) -> tuple[int, int, int]:
    """The patch the loader cuts before augmentation, by nnU-Net's rule.

    The patch's diagonal vector is rotated about each axis alone by the largest allowed angle (capped at 90°); the
    per-axis maximum of those rotated vectors' magnitudes and the patch itself is divided by the smallest zoom and
    floored. This does not bound every rotated patch (a full bound triples the z extent of flat patches), so strong
    rotations read a little padding at the corners; it keeps random patches mostly inside the image.
    """
    limits = _max_radians(rotation_degrees, dummy_2d).clamp(max=math.pi / 2)
    extents = torch.tensor([float(p) for p in patch_size], dtype=torch.float64)
    box = extents.clone()
    for axis, limit in enumerate(limits):
        if limit > 0:
            angles = torch.zeros(1, 3, dtype=torch.float64)
            angles[0, axis] = -limit
            box = torch.maximum(box, (rotation_matrices(angles)[0] @ extents).abs())
    box = box / _scale_axes(torch.tensor([min(scale_range)], dtype=torch.float64), dummy_2d)[0]
    return tuple(max(int(p), int(float(b) + 1e-9)) for p, b in zip(patch_size, box))


def affine_grid(theta: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``F.affine_grid(theta, (n, 1, *size), align_corners=True)`` built as a sum of three broadcast axis terms.

    The sampling positions are separable in the output axes, so only one full-size addition is needed; this is several
    times faster than the batched matrix product of ``F.affine_grid`` on CPU. A unit axis sits at coordinate 0.
    """
    n = theta.shape[0]
    axes = [torch.linspace(-1, 1, s, device=theta.device, dtype=theta.dtype) if s > 1
            else torch.zeros(1, device=theta.device, dtype=theta.dtype) for s in size]
    column = [theta[:, :, k].reshape(n, 1, 1, 1, 3) for k in range(4)]  # k = input x, y, z, translation
    along_x = axes[2].reshape(1, 1, 1, -1, 1) * column[0]
    along_y = axes[1].reshape(1, 1, -1, 1, 1) * column[1]
    along_z = axes[0].reshape(1, -1, 1, 1, 1) * column[2] + column[3]
    return (along_z + along_y) + along_x


def resample_labels(seg: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(n, 1, ...) integer labels sampled at ``grid``: each present label's mask trilinearly, then the argmax.

    Smoother than nearest neighbour for thin structures and small lesions; where no mask reaches (outside the input)
    the lowest present label wins, as every interpolated mask is 0 there.
    """
    values = torch.unique(seg)
    one_hot = (seg == values.reshape(1, -1, *([1] * (seg.dim() - 2)))).to(grid.dtype)
    weights = F.grid_sample(one_hot, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return values[weights.argmax(1, keepdim=True)].to(seg.dtype)


@dataclass(frozen=True)
class SpatialParams:
    """Per sample: whether it is rotated, its (z, y, x) angles in radians (0 unless rotated), whether it is zoomed,
    and its zoom factor (1 unless zoomed). A sample is resampled when rotated or zoomed, even at angle 0, factor 1."""

    rotate: torch.Tensor
    angles: torch.Tensor
    zoom: torch.Tensor
    factors: torch.Tensor


class SpatialTransform(SampledTransform):
    """Random rotation (p=0.2; ±30° about each axis, or in-plane only for dummy 2D) and isotropic scaling (p=0.2,
    factor in (0.7, 1.4) applied to the sampling grid as in nnU-Net: above 1 zooms out, below 1 magnifies), resampled
    once per sample, cropped to ``patch_size`` about the centre."""

    def __init__(self, patch_size: Sequence[int], rotation_degrees: float | Sequence[float] = 30.0,
                 p_rotation: float = 0.2, scale_range: tuple[float, float] = (0.7, 1.4), p_scale: float = 0.2,
                 dummy_2d: bool = False) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        self.max_radians = _max_radians(rotation_degrees, dummy_2d)
        self.p_rotation = p_rotation
        self.scale_range = scale_range
        self.p_scale = p_scale
        self.dummy_2d = dummy_2d

    def sample(self, batch: int, channels: int, generator: torch.Generator) -> SpatialParams:
        """Rotation and zoom of each sample."""
        rotate = coin(generator, (batch,), self.p_rotation)
        angles = uniform(generator, (batch, 3), -1.0, 1.0) * self.max_radians * rotate[:, None]
        zoom = coin(generator, (batch,), self.p_scale)
        factors = uniform(generator, (batch,), *self.scale_range)
        return SpatialParams(rotate, angles, zoom, torch.where(zoom, factors, torch.ones_like(factors)))

    def apply(self, images: torch.Tensor, seg: torch.Tensor,
              params: SpatialParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Resample the rotated or zoomed samples about the crop centre; centre-crop the others."""
        batch, in_shape = images.shape[0], tuple(images.shape[2:])
        if any(i < p for i, p in zip(in_shape, self.patch_size)):
            raise ValueError(f"input patch {in_shape} is smaller than the final patch {self.patch_size}")
        starts = [(i - p) // 2 for i, p in zip(in_shape, self.patch_size)]
        crop = (Ellipsis,) + tuple(slice(s, s + p) for s, p in zip(starts, self.patch_size))
        out_images, out_seg = images[crop], seg[crop]
        resample = params.rotate | params.zoom
        if not resample.any():
            return out_images.contiguous(), out_seg.contiguous()
        index = resample.nonzero().squeeze(1)
        theta = self._theta(params.angles[index], params.factors[index], in_shape, starts)
        theta = theta.to(images.device, images.dtype)
        grid = affine_grid(theta, self.patch_size)
        device_index = index.to(images.device)
        everyone = len(index) == batch
        source_images = images if everyone else images.index_select(0, device_index)
        source_seg = seg if everyone else seg.index_select(0, device_index)
        moved = F.grid_sample(source_images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        labels = resample_labels(source_seg, grid)
        if everyone:
            return moved, labels
        return out_images.index_copy(0, device_index, moved), out_seg.index_copy(0, device_index, labels)

    def _theta(self, angles: torch.Tensor, factors: torch.Tensor, in_shape: tuple[int, ...],
               starts: list[int]) -> torch.Tensor:
        """(n, 3, 4) ``affine_grid`` matrices (x, y, z order) mapping normalised output to normalised input positions.

        In voxels, an output offset ``o`` from the output centre samples input ``c + R diag(s) o`` where ``c`` is the
        centre of the centre crop, so unrotated unzoomed samples reproduce the crop exactly.
        """
        matrix = rotation_matrices(angles) * _scale_axes(factors, self.dummy_2d)[:, None, :]
        half_out = torch.tensor([(p - 1) / 2 for p in self.patch_size], dtype=torch.float64)
        half_in = torch.tensor([max((i - 1) / 2, 0.5) for i in in_shape], dtype=torch.float64)
        centre = torch.tensor([s + (p - 1) / 2 for s, p in zip(starts, self.patch_size)], dtype=torch.float64)
        linear = matrix * half_out[None, None, :] / half_in[None, :, None]
        offset = (centre / half_in - 1).expand(len(angles), 3)
        return torch.cat([linear.flip(1, 2), offset.flip(1)[:, :, None]], dim=2)
