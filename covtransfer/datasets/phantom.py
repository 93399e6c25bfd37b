"""Synthetic chest-CT phantoms in Hounsfield units: one shared anatomy and three lesion models.

Every kind draws the same anatomy (table, fat, muscle, ribs, sternum, spine, mediastinum, heart, aorta, airways, lungs
with branching vessels), so a network pre-trained on tumours or effusions meets the intensity and shape statistics of
the COVID-19 target; only the lesion model differs. Smooth structures are drawn on a render grid (the output grid, or a
coarser one for ``clinical``), blurred and upsampled linearly; CT noise is added at the output resolution.
Arrays and spacings are (z, y, x); +y is posterior and +z superior (LPS with identity direction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from covtransfer.errors import CovtransferError

KINDS = ("covid", "tumor", "effusion")
BLOOD_HU = 40.0
AIR_HU = -1000.0


@dataclass(frozen=True)
class SizeSpec:
    """Ranges one case's grid is drawn from.

    The slice spacing is ``coverage_mm / slices`` clipped to ``slice_spacing``; ``render_spacing`` (mm per axis, 0 =
    output grid) is about the spacing smooth structures are drawn at before linear upsampling.
    """

    slices: tuple[int, int]
    rows: tuple[int, int]
    columns: tuple[int, int]
    inplane_spacing: tuple[float, float]
    slice_spacing: tuple[float, float]
    coverage_mm: tuple[float, float]
    render_spacing: tuple[float, float, float] = (0.0, 0.0, 0.0)
    min_lesion_voxels: int = 20


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec((24, 32), (48, 60), (52, 64), (4.6, 6.0), (5.0, 7.0), (140.0, 200.0)),
    "small": SizeSpec((40, 56), (96, 120), (104, 128), (2.5, 3.2), (3.5, 5.0), (170.0, 250.0)),
    "clinical": SizeSpec((150, 260), (512, 512), (512, 512), (0.6, 0.8), (1.0, 2.5), (260.0, 340.0),
                         render_spacing=(2.2, 1.4, 1.4)),
}


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


@dataclass
class _Grid:
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


def _upsample(array: np.ndarray, shape, box=None) -> np.ndarray:
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


def _upsample_mask(weight: np.ndarray, shape) -> np.ndarray:
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
    mask[box] = _upsample(weight, shape, box) >= 0.5
    return mask


def _smooth_field(rng: np.random.Generator, grid: _Grid, box, correlation_mm: float) -> np.ndarray:
    """A zero-mean, roughly unit-variance random field on ``box`` that varies over about ``correlation_mm``."""
    shape = tuple(s.stop - s.start for s in box)
    cells = tuple(int(min(n, max(2, math.ceil(n * sp / correlation_mm) + 1)))
                  for n, sp in zip(shape, grid.spacing))
    coarse = ndimage.gaussian_filter(rng.standard_normal(cells).astype(np.float32), 0.7, mode="wrap")
    coarse = (coarse - coarse.mean()) / (coarse.std() + 1e-6)
    return _upsample(coarse, shape)


def _segment_weight(grid: _Grid, p0, p1, radius: float):
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


def _draw_tube(grid: _Grid, target: np.ndarray, p0, p1, radius: float) -> None:
    """Max-composite a tube's occupancy into ``target``."""
    drawn = _segment_weight(grid, p0, p1, radius)
    if drawn is not None:
        box, weight = drawn
        np.maximum(target[box], weight, out=target[box])


def _ellipsoid(grid: _Grid, center, radii, margin: float):
    """The box ``margin`` radii around an axis-aligned ellipsoid and its level there (<= 1 inside), or None."""
    center, radii = np.asarray(center, dtype=float), np.asarray(radii, dtype=float)
    box = grid.box(center - margin * radii, center + margin * radii)
    if box is None:
        return None
    return box, sum(((c - m) / r) ** 2 for c, m, r in zip(grid.coords(box), center, radii))


@dataclass
class _Lung:
    """One lung: its ellipse in the axial plane, its height, and its mask within ``box``."""

    side: int  # -1 right (toward -x), +1 left
    center: tuple[float, float]  # (y, x) mm
    radii: tuple[float, float]  # (y, x) mm
    z_base: float
    z_apex: float
    box: tuple[slice, slice, slice]
    mask: np.ndarray

    @property
    def height(self) -> float:
        return self.z_apex - self.z_base


@dataclass
class _Scene:
    """The rendered anatomy that lesion models paint into."""

    grid: _Grid
    out_spacing: tuple[float, float, float]
    hu: np.ndarray
    lung: np.ndarray  # bool, both lungs
    q: np.ndarray  # normalised lung radius (0 centre, ~1 pleura) inside the lungs, inf elsewhere
    lungs: list[_Lung]
    vessels: np.ndarray  # vessel occupancy in [0, 1]

    @property
    def lung_size(self) -> float:
        return float(np.mean([min(lung.radii) for lung in self.lungs]))

    def min_radius(self, voxels: float) -> float:
        """A lesion radius (mm) spanning at least ``voxels`` output and render voxels along the coarsest axis."""
        return voxels * max(max(self.out_spacing), max(self.grid.spacing))


@dataclass
class _Torso:
    """The patient's axial outline (mm): a superellipse body, its fat layer, and the thoracic cavity inside the
    chest wall; ``scale`` (per slice) tapers the outline slightly along z."""

    cx: float
    cy: float
    radii: tuple[float, float]  # body (y, x)
    exponent: float
    fat: float
    cavity_cy: float
    cavity_radii: tuple[float, float]  # (y, x)
    cavity_exponent: float
    scale: np.ndarray

    def level(self, y, x, shrink: float = 0.0) -> np.ndarray:
        """Superellipse level of the body outline moved inwards by ``shrink`` mm (<= 1 inside)."""
        ry, rx = (r - shrink for r in self.radii)
        return np.abs((x - self.cx) / (rx * self.scale)) ** self.exponent + \
            np.abs((y - self.cy) / (ry * self.scale)) ** self.exponent

    def cavity_level(self, y, x) -> np.ndarray:
        ry, rx = self.cavity_radii
        return np.abs((x - self.cx) / (rx * self.scale)) ** self.cavity_exponent + \
            np.abs((y - self.cavity_cy) / (ry * self.scale)) ** self.cavity_exponent


def _draw_torso(grid: _Grid, hu: np.ndarray, rng: np.random.Generator):
    """Table, subcutaneous fat, muscle and (fat-filled) thoracic cavity; returns the torso and its masks."""
    z, y, x = grid.coords()
    length, fov_y, fov_x = grid.extent
    ax = _u(rng, 0.37, 0.44) * fov_x
    ay = min(ax * _u(rng, 0.62, 0.76), 0.44 * fov_y)
    cx, cy = _u(rng, -0.04, 0.04) * fov_x, _u(rng, -0.03, 0.04) * fov_y
    p = _u(rng, 2.0, 2.8)
    fat, wall = _u(rng, 0.04, 0.09) * ax, _u(rng, 0.09, 0.12) * ax
    torso = _Torso(cx, cy, (ay, ax), p, fat, cy - 0.05 * ay, (ay - fat - 1.2 * wall, ax - fat - wall),
                   2.0 + 0.5 * (p - 2.0), (1 + _u(rng, -0.06, 0.06) * z / length).astype(np.float32))
    table_top = cy + ay * 1.07 + 3.0
    table = (y[0] >= table_top) & (y[0] <= table_top + 0.025 * fov_y) & (np.abs(x[0] - cx) < 0.42 * fov_x)
    hu[:, table] = _u(rng, -350, -150)
    cavity_level = torso.cavity_level(y, x)
    inner, cavity = torso.level(y, x, shrink=fat) <= 1, cavity_level <= 1
    hu[torso.level(y, x) <= 1] = _u(rng, -110, -85)
    hu[inner] = _u(rng, 35, 55)
    hu[cavity] = _u(rng, -100, -70)
    return torso, inner, cavity, cavity_level


def _lung_layout(grid: _Grid, torso: _Torso, rng: np.random.Generator) -> list[dict]:
    """Per lung (right, left): ellipse centre and radii, base and apex heights, dome, posterior recess, apex
    rounding and the gap left for the mediastinum."""
    length = grid.extent[0]
    (ayc, axc), layout = torso.cavity_radii, []
    for side in (-1, 1):
        z_base = -length / 2 + _u(rng, 0.05, 0.14) * length + (_u(rng, 0.01, 0.04) * length if side < 0 else 0.0)
        z_apex = length / 2 - _u(rng, 0.02, 0.08) * length
        height = z_apex - z_base
        layout.append(dict(
            side=side,
            center=(torso.cavity_cy + _u(rng, -0.04, 0.06) * ayc, torso.cx + side * _u(rng, 0.42, 0.5) * axc),
            radii=(_u(rng, 0.9, 1.05) * ayc, _u(rng, 0.5, 0.6) * axc), z_base=z_base, z_apex=z_apex,
            dome=_u(rng, 0.12, 0.22) * height, tilt=_u(rng, 0.03, 0.07) * height,
            apex=_u(rng, 0.15, 0.25) * height, gap=_u(rng, 0.08, 0.14) * axc))
    return layout


@dataclass
class _Spine:
    """A vertebral column in the posterior midline: body (cortex, cancellous bone, discs), canal, arch, process."""

    body: np.ndarray  # 2-D masks (y, x)
    cortex: np.ndarray
    canal: np.ndarray
    arch: np.ndarray
    disc: np.ndarray  # per slice (z, 1, 1)
    hu: dict
    center_y: float
    radius: float

    @classmethod
    def draw(cls, grid: _Grid, torso: _Torso, period: float, rng: np.random.Generator) -> "_Spine":
        z, y, x = grid.coords()
        y, x = y[0], x[0]
        rv = _u(rng, 0.13, 0.16) * torso.cavity_radii[1]
        yv = torso.cavity_cy + torso.cavity_radii[0] - 0.55 * rv
        r_canal, y_canal = 0.45 * rv, yv + 1.5 * rv
        to_body, to_canal = np.hypot(x - torso.cx, y - yv), np.hypot(x - torso.cx, y - y_canal)
        body = to_body <= rv
        arch = ((to_canal > r_canal) & (to_canal <= r_canal + 0.3 * rv)) | \
            ((np.abs(x - torso.cx) < 0.15 * rv) & (y > y_canal) & (y < y_canal + r_canal + 0.9 * rv))
        disc = (((z - _u(rng, 0, period)) / period) % 1.0) < 0.2
        hu = dict(cancellous=_u(rng, 380, 460), cortical=_u(rng, 700, 950), disc=_u(rng, 70, 100),
                  canal=_u(rng, 15, 30))
        cortex = body & (to_body > rv - max(0.15 * rv, 0.6 * grid.spacing[2]))
        return cls(body, cortex, to_canal <= r_canal, arch, disc, hu, yv, rv)

    @property
    def region(self) -> np.ndarray:
        return self.body | self.arch | self.canal

    def paint(self, hu: np.ndarray, inner: np.ndarray) -> None:
        hu[inner & (self.body | self.arch)] = self.hu["cortical"]
        hu[inner & self.body & ~self.cortex] = self.hu["cancellous"]
        hu[inner & self.body & self.disc] = self.hu["disc"]
        hu[inner & self.canal] = self.hu["canal"]


def _draw_heart(grid: _Grid, hu, solid, cavity, torso: _Torso, z_dome: float, height: float, rng):
    """An ellipsoidal heart with a shell of epicardial fat, resting on the higher dome, left-anterior."""
    (ayc, axc) = torso.cavity_radii
    radii = np.array([_u(rng, 0.2, 0.26) * height, _u(rng, 0.4, 0.5) * ayc, _u(rng, 0.36, 0.45) * axc])
    center = np.array([z_dome + 0.75 * radii[0], torso.cavity_cy - _u(rng, 0.15, 0.3) * ayc,
                       torso.cx + _u(rng, 0.1, 0.2) * axc])
    drawn = _ellipsoid(grid, center, radii, 1.2)
    if drawn is not None:
        box, level = drawn
        in_cavity = cavity[box]
        hu[box][(level <= 1.15 ** 2) & in_cavity] = _u(rng, -100, -80)
        hu[box][(level <= 1) & in_cavity] = _u(rng, 30, 45)
        solid[box] |= (level <= 1.15 ** 2) & in_cavity
    return center, radii


def _draw_mediastinal_tubes(grid: _Grid, hu, solid, cavity, torso: _Torso, spine: _Spine, heart, layout,
                            z_low: float, height: float, rng):
    """Aorta (ascending, arch, descending), oesophagus, trachea and main bronchi; returns the airway lumen
    occupancy (painted as air after the lungs) and the two hila."""
    (ayc, axc), cx = torso.cavity_radii, torso.cx
    length = grid.extent[0]
    (heart_c, heart_r), rv, yv = heart, spine.radius, spine.center_y
    z_top, z_bottom = length / 2 + 10.0, -length / 2 - 10.0
    ra, re, rt = _u(rng, 0.065, 0.08) * axc, 0.04 * axc, _u(rng, 0.065, 0.08) * axc
    z_arch = z_low + _u(rng, 0.7, 0.78) * height
    x_desc, y_desc = cx + rv + 0.9 * ra, yv - 0.6 * rv
    y_eso = yv - rv - re - 1.0
    y_tra = y_eso - re - rt - 2.0
    aorta = [(heart_c[0] + 0.5 * heart_r[0], heart_c[1] + 0.2 * heart_r[1], cx - 0.05 * axc),
             (z_arch, torso.cavity_cy - 0.25 * ayc, cx - 0.02 * axc), (z_arch + 0.04 * height, y_tra, cx + 0.12 * axc),
             (z_arch, y_desc, x_desc), (z_bottom, y_desc, x_desc)]
    tissue = np.zeros(grid.shape, dtype=np.float32)
    for a, b in zip(aorta[:-1], aorta[1:]):
        _draw_tube(grid, tissue, a, b, ra)
    _draw_tube(grid, tissue, (z_top, y_eso, cx), (z_bottom, y_eso, cx), re)
    carina = (z_low + _u(rng, 0.55, 0.65) * height, y_tra + 0.3 * rt, cx)
    hila = [np.array([z_low + _u(rng, 0.45, 0.55) * height, lp["center"][0] + _u(rng, -0.1, 0.1) * lp["radii"][0],
                      lp["center"][1] - lp["side"] * 0.6 * lp["radii"][1]]) for lp in layout]
    airway = np.zeros(grid.shape, dtype=np.float32)
    for a, b, r in [((z_top, y_tra, cx), carina, rt)] + [(carina, hilum, 0.7 * rt) for hilum in hila]:
        _draw_tube(grid, tissue, a, b, 1.3 * r)
        _draw_tube(grid, airway, a, b, r)
    tissue *= cavity
    hu += tissue * (BLOOD_HU - hu)
    solid |= tissue >= 0.5
    return airway, hila


def _draw_lungs(grid: _Grid, hu, allowed: np.ndarray, torso: _Torso, layout, rng):
    """Lungs: ellipses inside the cavity with domed bases (deeper posteriorly), rounded apices, a cone-like taper
    and irregular pleura; parenchyma ~-850 HU, denser posteriorly (gravity). Returns masks and normalised radius."""
    lung = np.zeros(grid.shape, dtype=bool)
    q = np.full(grid.shape, np.inf, dtype=np.float32)
    lungs = []
    for lp in layout:
        (ly0, lx0), (ry, rx) = lp["center"], lp["radii"]
        box = grid.box((lp["z_base"] - lp["tilt"], ly0 - ry, lx0 - rx), (lp["z_apex"], ly0 + ry, lx0 + rx))
        z, y, x = grid.coords(box)
        height = lp["z_apex"] - lp["z_base"]
        apex = np.clip((z - (lp["z_apex"] - lp["apex"])) / lp["apex"], 0, 1)
        shrink = np.sqrt(np.clip(1 - apex ** 2, 1e-4, 1)) * (1 - 0.15 * np.clip((z - lp["z_base"]) / height, 0, 1))
        q2 = ((y - ly0) / (ry * shrink)) ** 2 + ((x - lx0) / (rx * shrink)) ** 2 + \
            0.1 * _smooth_field(rng, grid, box, 40.0)
        floor = lp["z_base"] + lp["dome"] * (1 - np.clip(q2, 0, 1)) - lp["tilt"] * (y - ly0) / ry
        mask = (q2 <= 1) & (z >= floor) & (z <= lp["z_apex"]) & (lp["side"] * (x - torso.cx) > lp["gap"]) \
            & allowed[box]
        density = _u(rng, -880, -830) + _u(rng, 15, 40) * (y - ly0) / ry + 10 * _smooth_field(rng, grid, box, 25.0)
        hu[box][mask] = np.broadcast_to(density, mask.shape)[mask]
        q[box][mask] = np.sqrt(np.clip(q2, 0, None))[mask]
        lung[box] |= mask
        lungs.append(_Lung(lp["side"], lp["center"], lp["radii"], lp["z_base"], lp["z_apex"], box, mask))
    return lung, q, lungs


def _draw_ribs(grid: _Grid, hu, torso: _Torso, cavity_level, inner, period: float, rng) -> None:
    """Ribs in a shell just outside the cavity, one every ``period`` mm, sloping down anteriorly (so an axial slice
    cuts several arcs); a costal-cartilage gap and the sternum in front, the spine behind."""
    z, y, x = grid.coords()
    (ayc, axc), pc = torso.cavity_radii, torso.cavity_exponent
    yn, xn = (y[0] - torso.cavity_cy) / ayc, (x[0] - torso.cx) / axc
    sin_theta = yn / np.hypot(xn, yn).clip(1e-6)  # +1 posterior, -1 anterior
    thickness = _u(rng, 0.06, 0.08)
    shell = (cavity_level > 1.02 ** pc) & (cavity_level <= (1.02 + thickness) ** pc) & inner
    phase = (z + _u(rng, 2.0, 3.0) * period * (1 - sin_theta) / 2 - _u(rng, 0, period)) / period
    ribs = shell & (np.cos(2 * np.pi * phase) > math.cos(math.pi * 0.35)) & (np.abs(sin_theta) < 0.93)
    hu[ribs] = _u(rng, 450, 750)
    hu[shell & (np.abs(x - torso.cx) < 0.1 * axc) & (y < torso.cavity_cy)] = _u(rng, 350, 450)


def _draw_anatomy(grid: _Grid, out_spacing, rng: np.random.Generator) -> _Scene:
    """The lesion-free scene: torso, abdomen below the domes, heart, great vessels, airways, lungs with branching
    vessels, ribs, sternum and spine, in that painting order."""
    z, y, x = grid.coords()
    hu = np.full(grid.shape, AIR_HU, dtype=np.float32)
    torso, inner, cavity, cavity_level = _draw_torso(grid, hu, rng)
    layout = _lung_layout(grid, torso, rng)
    height = float(np.mean([lp["z_apex"] - lp["z_base"] for lp in layout]))
    z_low = min(lp["z_base"] for lp in layout)
    domes = [lp["z_base"] + lp["dome"] for lp in layout]
    abdomen = cavity & (z < np.where(x < torso.cx, domes[0], domes[1]))
    hu[abdomen & (x < torso.cx)] = _u(rng, 50, 65)  # liver
    hu[abdomen & (x >= torso.cx)] = _u(rng, 35, 50)  # spleen, stomach

    period = max(_u(rng, 24, 32), 3.5 * grid.spacing[0])
    spine = _Spine.draw(grid, torso, period, rng)
    solid = spine.region & cavity
    heart = _draw_heart(grid, hu, solid, cavity, torso, max(domes), height, rng)
    airway, hila = _draw_mediastinal_tubes(grid, hu, solid, cavity, torso, spine, heart, layout, z_low, height, rng)
    lung, q, lungs = _draw_lungs(grid, hu, cavity & ~solid & (airway < 0.5), torso, layout, rng)
    hu += airway * (AIR_HU - hu)
    _draw_ribs(grid, hu, torso, cavity_level, inner, period, rng)
    spine.paint(hu, inner)

    vessels = np.zeros(grid.shape, dtype=np.float32)
    for lp, hilum in zip(lungs, hila):
        _vessel_tree(rng, grid, lp, lung, vessels, hilum, r0=0.042 * torso.cavity_radii[1])
    return _Scene(grid, tuple(out_spacing), hu, lung, q, lungs, vessels)


def _vessel_tree(rng, grid: _Grid, lung: _Lung, lung_mask, vessels, hilum, r0: float) -> None:
    """Branching pulmonary vessels from the hilum: each branch splits in two, thinner and shorter, until it leaves
    the lung (past the first two generations, which cross the hilum) or gets thinner than a third of a voxel."""
    side = lung.side
    trunks = [(0.8, 0.0, 0.6 * side), (0.0, _u(rng, -0.3, 0.3), side), (-0.7, 0.4, 0.5 * side),
              (-0.7, -0.4, 0.5 * side), (-0.2, 0.8, 0.5 * side)]
    min_r = 0.3 * min(grid.spacing)
    stack = []
    for direction in trunks:
        d = np.array(direction) + rng.normal(0, 0.15, 3)
        stack.append((hilum, d / np.linalg.norm(d), _u(rng, 0.3, 0.45) * lung.radii[1], r0 * _u(rng, 0.85, 1.15), 0))
    while stack:
        start, direction, length, radius, depth = stack.pop()
        end = start + direction * length
        _draw_tube(grid, vessels, start, end, radius)
        if depth >= 8 or radius * 0.78 < min_r or (depth >= 2 and not lung_mask[grid.index(end)]):
            continue
        normal = rng.normal(size=3)
        normal -= (normal @ direction) * direction
        normal /= np.linalg.norm(normal) + 1e-9
        for sign in (1, -1):
            angle = _u(rng, 0.35, 0.7)
            child = math.cos(angle) * direction + sign * math.sin(angle) * normal
            stack.append((end, child / np.linalg.norm(child), length * _u(rng, 0.78, 0.92),
                          radius * _u(rng, 0.72, 0.84), depth + 1))


def _pick(rng, scene: _Scene, candidates: np.ndarray, prefer_dependent: bool) -> np.ndarray:
    """A candidate voxel's centre; with ``prefer_dependent`` the most posterior-inferior of four random picks."""
    picks = rng.choice(candidates, size=4 if prefer_dependent else 1)
    points = [scene.grid.point(int(i)) for i in picks]
    return max(points, key=lambda p: p[1] - p[0]) if prefer_dependent else points[0]


def _covid(scene: _Scene, rng: np.random.Generator):
    """Ground-glass opacities: several patchy, low-contrast, ill-defined subpleural patches, favouring the dependent
    lower lungs, some with a consolidated core; vessels stay visible through them."""
    lesion = np.zeros(scene.grid.shape, dtype=np.float32)
    candidates = np.flatnonzero(scene.lung & (scene.q > 0.7))
    if candidates.size == 0:
        return lesion, np.zeros_like(lesion)
    h = scene.grid.voxel_mm
    for _ in range(int(rng.integers(2, 7))):
        center = _pick(rng, scene, candidates, prefer_dependent=rng.random() < 0.6)
        r = max(_u(rng, 0.2, 0.38) * scene.lung_size, scene.min_radius(1.6))
        radii = np.array([r * _u(rng, 0.7, 1.3), r * _u(rng, 0.8, 1.2), r * _u(rng, 0.8, 1.2)])
        box, level = _ellipsoid(scene.grid, center, radii, 1.4)
        level = level + 0.8 * _smooth_field(rng, scene.grid, box, 0.5 * r)
        edge = 3 * h / r
        weight = np.clip((1 - level) / edge + 0.5, 0, 1) * scene.lung[box]
        target = _u(rng, -680, -380) + 60 * _smooth_field(rng, scene.grid, box, 0.3 * r)
        if rng.random() < 0.3:
            core = np.clip((_u(rng, 0.25, 0.5) - level) / edge + 0.5, 0, 1)
            target = target + core * (_u(rng, -100, 40) - target)
        scene.hu[box] += weight * (np.clip(target, -720, 60) - scene.hu[box])
        np.maximum(lesion[box], weight, out=lesion[box])
    return lesion, np.zeros_like(lesion)


def _tumor(scene: _Scene, rng: np.random.Generator):
    """Lung tumours: one or two compact, lobulated, well-defined soft-tissue masses (0..60 HU) inside the lung,
    displacing vessels, sometimes with a hypodense necrotic centre."""
    lesion = np.zeros(scene.grid.shape, dtype=np.float32)
    candidates = np.flatnonzero(scene.lung & (scene.q < 0.6))
    if candidates.size == 0:
        return lesion, lesion.copy()
    h = scene.grid.voxel_mm
    for _ in range(1 if rng.random() < 0.75 else 2):
        r = min(max(_u(rng, 0.18, 0.32) * scene.lung_size, scene.min_radius(2.2)), 0.55 * scene.lung_size)
        radii = r * np.array([_u(rng, 0.85, 1.15) for _ in range(3)])
        best = None
        for _attempt in range(12):
            center = _pick(rng, scene, candidates, prefer_dependent=False)
            box, level = _ellipsoid(scene.grid, center, radii, 1.3)
            inside = level <= 1
            fraction = (inside & scene.lung[box]).sum() / max(inside.sum(), 1)
            if best is None or fraction > best[0]:
                best = (fraction, box, level)
            if fraction >= 0.9:
                break
        _, box, level = best
        shape = np.sqrt(level) - 0.15 * _smooth_field(rng, scene.grid, box, 0.6 * r)
        weight = np.clip((1 - shape) * r / h + 0.5, 0, 1) * scene.lung[box]
        target = _u(rng, 15, 45) + 6 * _smooth_field(rng, scene.grid, box, 0.4 * r)
        if rng.random() < 0.25:
            necrosis = np.clip((_u(rng, 0.35, 0.55) - shape) * r / h + 0.5, 0, 1)
            target = target + necrosis * (_u(rng, 5, 15) - target)
        scene.hu[box] += weight * (np.clip(target, 0, 60) - scene.hu[box])
        np.maximum(lesion[box], weight, out=lesion[box])
    return lesion, lesion.copy()


def _effusion(scene: _Scene, rng: np.random.Generator):
    """Pleural effusion: dependent crescents of fluid (0..20 HU) along the posterior chest wall at the lung base,
    thickest at the base, rising along the walls (meniscus), with compressed lung above the fluid."""
    lesion = np.zeros(scene.grid.shape, dtype=np.float32)
    sides = [(-1,), (1,), (-1, 1)][int(rng.integers(3))]
    h = scene.grid.voxel_mm
    for lung in scene.lungs:
        if lung.side not in sides:
            continue
        z, y, x = scene.grid.coords(lung.box)
        (cy, cx), (ry, rx) = lung.center, lung.radii
        reach, depth0, meniscus = _u(rng, 0.3, 0.6), _u(rng, 0.15, 0.4), _u(rng, 0.4, 1.0)
        t_z = np.clip((z - lung.z_base) / (reach * lung.height), 0, None)
        depth = depth0 * np.clip(1 - t_z, 0, 1) ** 0.7
        t_post = (y - (cy - ry)) / (2 * ry)
        surface = 1 - depth * (1 + meniscus * ((x - cx) / rx) ** 2)
        signed = (t_post - surface) * 2 * ry  # mm above (negative) or below (positive) the fluid surface
        weight = np.clip(signed / h + 0.5, 0, 1) * lung.mask
        band = _u(rng, 6.0, 14.0)
        compressed = np.clip(1 + signed / band, 0, 1) * (signed < 0) * (depth > 0) * lung.mask * 0.6
        region = scene.hu[lung.box]
        region += compressed * (_u(rng, -450, -250) - region)
        fluid = _u(rng, 2, 18) + 2 * _smooth_field(rng, scene.grid, lung.box, 30.0)
        region += weight * (fluid - region)
        np.maximum(lesion[lung.box], weight, out=lesion[lung.box])
    return lesion, lesion.copy()


_LESIONS: dict[str, Callable] = {"covid": _covid, "tumor": _tumor, "effusion": _effusion}


def _draw_grid(spec: SizeSpec, rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    nz = int(rng.integers(spec.slices[0], spec.slices[1] + 1))
    nx = int(rng.integers(spec.columns[0], spec.columns[1] + 1))
    ny = int(rng.integers(spec.rows[0], min(spec.rows[1], nx) + 1))
    inplane = round(_u(rng, *spec.inplane_spacing), 3)
    slice_spacing = round(float(np.clip(_u(rng, *spec.coverage_mm) / nz, *spec.slice_spacing)), 3)
    return (nz, ny, nx), (slice_spacing, inplane, inplane)


def _render_grid(shape, spacing, render_spacing) -> _Grid:
    factors = [max(1, int(round(r / s))) for r, s in zip(render_spacing, spacing)]
    render_shape = tuple(int(math.ceil(n / f)) for n, f in zip(shape, factors))
    return _Grid(render_shape, tuple(n * s / r for n, s, r in zip(shape, spacing, render_shape)))


def _composite_vessels(scene: _Scene, block: np.ndarray) -> None:
    """Blend vessel occupancy towards blood HU inside the aerated lung (not inside tumours or fluid)."""
    weight = scene.vessels
    weight *= scene.lung
    weight *= 1 - block
    scene.hu += weight * (BLOOD_HU - scene.hu)


def _to_image(hu: np.ndarray, shape, noise_sd: float, rng: np.random.Generator, slab: int = 8) -> np.ndarray:
    """Upsample the render-grid HU to ``shape``, add white Gaussian noise and round to int16, a slab of slices at a
    time so no full-size float temporaries are allocated."""
    image = np.empty(shape, dtype=np.int16)
    noise = np.empty((slab,) + tuple(shape[1:]), dtype=np.float32)
    for z0 in range(0, shape[0], slab):
        z1 = min(z0 + slab, shape[0])
        part = _upsample(hu, shape, (slice(z0, z1), slice(0, shape[1]), slice(0, shape[2])))
        if np.shares_memory(part, hu):
            part = part.copy()
        rng.standard_normal(out=noise[: z1 - z0], dtype=np.float32)
        noise[: z1 - z0] *= np.float32(noise_sd)
        part += noise[: z1 - z0]
        np.rint(part, out=part)
        np.clip(part, -1024, 3071, out=part)
        image[z0:z1] = part
    return image


def generate_case(kind: str, size: str, rng: np.random.Generator,
                  with_lungs: bool = False) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """One synthetic chest CT: ``(image int16 HU, label uint8, spacing)``, all (z, y, x).

    Labels: 0 background, 1 lesion; with ``with_lungs`` 0 background, 1 lung, 2 lesion. The lesion is never empty.
    """
    if kind not in _LESIONS:
        raise CovtransferError(f"unknown synthetic kind {kind!r}; choose one of {', '.join(KINDS)}")
    if size not in SIZES:
        raise CovtransferError(f"unknown synthetic size {size!r}; choose one of {', '.join(SIZES)}")
    spec = SIZES[size]
    shape, spacing = _draw_grid(spec, rng)
    grid = _render_grid(shape, spacing, spec.render_spacing)
    scene = _draw_anatomy(grid, spacing, rng)
    anatomy = scene.hu
    for _attempt in range(20):
        scene.hu = anatomy.copy()
        lesion, block = _LESIONS[kind](scene, rng)
        if np.count_nonzero(lesion >= 0.5) >= spec.min_lesion_voxels:
            break
    else:
        raise RuntimeError(f"could not place a {kind} lesion in 20 attempts")
    _composite_vessels(scene, block)
    sigma = np.clip(0.8 / np.array(grid.spacing), 0.35, 0.6)  # scanner blur ~0.8 mm, at least partial volume
    image = _to_image(ndimage.gaussian_filter(scene.hu, sigma, truncate=3.0), shape, _u(rng, 10, 25), rng)
    label = np.zeros(shape, dtype=np.uint8)
    if with_lungs:
        label[_upsample_mask(scene.lung.astype(np.float32), shape)] = 1
    label[_upsample_mask(lesion, shape)] = 2 if with_lungs else 1
    return image, label, spacing
