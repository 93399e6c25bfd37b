"""Rendering for the synthetic phantoms: the voxel grid in mm, the render grid smooth structures are drawn on,
tube and ellipsoid primitives with partial-volume edges, linear upsampling to the output grid, and CT noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


def uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


@dataclass
class Grid:
    """A voxel grid centred on the volume centre; coordinates in mm, (z, y, x)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @property
    def extent(self) -> np.ndarray:
        return np.array(self.shape) * np.array(self.spacing)

    @property
    def voxel_mm(self) -> float:
        return float(np.mean(self.spacing))

    def axis(self, a: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.shape[a] if stop is None else stop
        return ((np.arange(start, stop) + 0.5) * self.spacing[a] - self.extent[a] / 2).astype(np.float32)

    def coords(self, box: tuple[slice, slice, slice] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable Z (n,1,1), Y (1,n,1), X (1,1,n) coordinates of the whole grid or of ``box``."""
        box = box or tuple(slice(0, n) for n in self.shape)
        z, y, x = (self.axis(a, box[a].start, box[a].stop) for a in range(3))
        return z[:, None, None], y[None, :, None], x[None, None, :]

    def box(self, low_mm, high_mm) -> tuple[slice, slice, slice] | None:
        """The index box covering the physical box [low, high] (clipped to the grid), or None when empty."""
        half = self.extent / 2
        spacing = np.array(self.spacing)
        lo = np.ceil((np.asarray(low_mm) + half) / spacing - 0.5).astype(int)
        hi = np.floor((np.asarray(high_mm) + half) / spacing - 0.5).astype(int) + 1
        lo, hi = np.maximum(lo, 0), np.minimum(hi, self.shape)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))

    def index(self, point_mm) -> tuple[int, int, int]:
        """The voxel holding ``point_mm`` (clipped into the grid)."""
        idx = np.floor((np.asarray(point_mm) + self.extent / 2) / np.array(self.spacing)).astype(int)
        return tuple(int(v) for v in np.clip(idx, 0, np.array(self.shape) - 1))

    def point(self, flat_index: int) -> np.ndarray:
        """The physical centre of the voxel with a flat (C-order) index."""
        idx = np.array(np.unravel_index(flat_index, self.shape))
        return ((idx + 0.5) * np.array(self.spacing) - self.extent / 2).astype(np.float64)


def upsample(array: np.ndarray, shape, box=None) -> np.ndarray:
    """Linear interpolation onto ``shape`` voxels spanning the same extent (voxel centres aligned); ``box`` limits
    the output to an index box of that shape."""
    out = array.astype(np.float32, copy=False)
    for axis in range(3):
        n_in, n_out = array.shape[axis], shape[axis]
        start, stop = (0, n_out) if box is None else (box[axis].start, box[axis].stop)
        if n_in == n_out:
            if (start, stop) != (0, n_out):
                out = out[tuple(slice(start, stop) if a == axis else slice(None) for a in range(3))]
            continue
        pos = np.clip((np.arange(start, stop) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, n_in - 1)
        weight = (pos - lo).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        low = np.take(out, lo, axis=axis)
        high = np.take(out, hi, axis=axis)
        high -= low
        high *= weight
        high += low
        out = high
    return out


def upsample_mask(weight: np.ndarray, shape) -> np.ndarray:
    """Threshold at 0.5 the linear upsampling of a soft mask, computed only around its support."""
    mask = np.zeros(shape, dtype=bool)
    support = np.nonzero(weight.any(axis=(1, 2)))[0], np.nonzero(weight.any(axis=(0, 2)))[0], \
        np.nonzero(weight.any(axis=(0, 1)))[0]
    if any(len(s) == 0 for s in support):
        return mask
    box = []
    for s, n_in, n_out in zip(support, weight.shape, shape):
        ratio = n_out / n_in
        box.append(slice(max(0, int((s[0] - 1) * ratio) - 1), min(n_out, int((s[-1] + 2) * ratio) + 2)))
    box = tuple(box)
    mask[box] = upsample(weight, shape, box) >= 0.5
    return mask


def smooth_field(rng: np.random.Generator, grid: Grid, box, correlation_mm: float) -> np.ndarray:
    """A zero-mean, roughly unit-variance random field on ``box`` that varies over about ``correlation_mm``."""
    shape = tuple(s.stop - s.start for s in box)
    cells = tuple(int(min(n, max(2, math.ceil(n * sp / correlation_mm) + 1)))
                  for n, sp in zip(shape, grid.spacing))
    coarse = ndimage.gaussian_filter(rng.standard_normal(cells).astype(np.float32), 0.7, mode="wrap")
    coarse = (coarse - coarse.mean()) / (coarse.std() + 1e-6)
    return upsample(coarse, shape)


def segment_weight(grid: Grid, p0, p1, radius: float):
    """The box around a tube from ``p0`` to ``p1`` (mm, zyx) and its partial-volume occupancy there (or None)."""
    p0, p1 = np.asarray(p0, dtype=np.float32), np.asarray(p1, dtype=np.float32)
    h = grid.voxel_mm
    pad = radius + 1.5 * h
    box = grid.box(np.minimum(p0, p1) - pad, np.maximum(p0, p1) + pad)
    if box is None:
        return None
    z, y, x = grid.coords(box)
    d = p1 - p0
    length2 = max(float(d @ d), 1e-6)
    dz, dy, dx = z - p0[0], y - p0[1], x - p0[2]
    t = np.clip((dz * d[0] + dy * d[1] + dx * d[2]) / length2, 0.0, 1.0)
    dist = np.sqrt((dz - t * d[0]) ** 2 + (dy - t * d[1]) ** 2 + (dx - t * d[2]) ** 2)
    weight = np.clip((radius - dist) / h + 0.5, 0.0, 1.0) * min(1.0, 2.0 * radius / h)
    return box, weight


def draw_tube(grid: Grid, target: np.ndarray, p0, p1, radius: float) -> None:
    """Max-composite a tube's occupancy into ``target``."""
    drawn = segment_weight(grid, p0, p1, radius)
    if drawn is not None:
        box, weight = drawn
        np.maximum(target[box], weight, out=target[box])


def ellipsoid(grid: Grid, center, radii, margin: float):
    """The box ``margin`` radii around an axis-aligned ellipsoid and its level there (<= 1 inside), or None."""
    center, radii = np.asarray(center, dtype=float), np.asarray(radii, dtype=float)
    box = grid.box(center - margin * radii, center + margin * radii)
    if box is None:
        return None
    return box, sum(((c - m) / r) ** 2 for c, m, r in zip(grid.coords(box), center, radii))



def render_grid(shape, spacing, render_spacing) -> Grid:
    factors = [max(1, int(round(r / s))) for r, s in zip(render_spacing, spacing)]
    render_shape = tuple(int(math.ceil(n / f)) for n, f in zip(shape, factors))
    return Grid(render_shape, tuple(n * s / r for n, s, r in zip(shape, spacing, render_shape)))


def to_image(hu: np.ndarray, shape, noise_sd: float, rng: np.random.Generator, slab: int = 8) -> np.ndarray:
    """Upsample the render-grid HU to ``shape``, add white Gaussian noise and round to int16, a slab of slices at a
    time so no full-size float temporaries are allocated."""
    image = np.empty(shape, dtype=np.int16)
    noise = np.empty((slab,) + tuple(shape[1:]), dtype=np.float32)
    for z0 in range(0, shape[0], slab):
        z1 = min(z0 + slab, shape[0])
        part = upsample(hu, shape, (slice(z0, z1), slice(0, shape[1]), slice(0, shape[2])))
        if np.shares_memory(part, hu):
            part = part.copy()
        rng.standard_normal(out=noise[: z1 - z0], dtype=np.float32)
        noise[: z1 - z0] *= np.float32(noise_sd)
        part += noise[: z1 - z0]
        np.rint(part, out=part)
        np.clip(part, -1024, 3071, out=part)
        image[z0:z1] = part
    return image
