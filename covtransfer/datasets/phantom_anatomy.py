"""The phantoms' shared anatomy: table, fat, muscle, ribs, sternum, spine, mediastinum, heart, aorta, airways and
lungs with branching vessels, painted in HU on a render grid into a :class:`Scene` that the lesion models paint into."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from covtransfer.datasets.phantom_render import Grid, draw_tube, ellipsoid, smooth_field, uniform

BLOOD_HU = 40.0
AIR_HU = -1000.0


@dataclass
class Lung:
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
class Scene:
    """The rendered anatomy that lesion models paint into."""

    grid: Grid
    out_spacing: tuple[float, float, float]
    hu: np.ndarray
    lung: np.ndarray  # bool, both lungs
    q: np.ndarray  # normalised lung radius (0 centre, ~1 pleura) inside the lungs, inf elsewhere
    lungs: list[Lung]
    vessels: np.ndarray  # vessel occupancy in [0, 1]

    @property
    def lung_size(self) -> float:
        return float(np.mean([min(lung.radii) for lung in self.lungs]))

    def min_radius(self, voxels: float) -> float:
        """A lesion radius (mm) spanning at least ``voxels`` output and render voxels along the coarsest axis."""
        return voxels * max(max(self.out_spacing), max(self.grid.spacing))


@dataclass
class Torso:
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


def _draw_torso(grid: Grid, hu: np.ndarray, rng: np.random.Generator):
    """Table, subcutaneous fat, muscle and (fat-filled) thoracic cavity; returns the torso and its masks."""
    z, y, x = grid.coords()
    length, fov_y, fov_x = grid.extent
    ax = uniform(rng, 0.37, 0.44) * fov_x
    ay = min(ax * uniform(rng, 0.62, 0.76), 0.44 * fov_y)
    cx, cy = uniform(rng, -0.04, 0.04) * fov_x, uniform(rng, -0.03, 0.04) * fov_y
    p = uniform(rng, 2.0, 2.8)
    fat, wall = uniform(rng, 0.04, 0.09) * ax, uniform(rng, 0.09, 0.12) * ax
    torso = Torso(cx, cy, (ay, ax), p, fat, cy - 0.05 * ay, (ay - fat - 1.2 * wall, ax - fat - wall),
                   2.0 + 0.5 * (p - 2.0), (1 + uniform(rng, -0.06, 0.06) * z / length).astype(np.float32))
    table_top = cy + ay * 1.07 + 3.0
    table = (y[0] >= table_top) & (y[0] <= table_top + 0.025 * fov_y) & (np.abs(x[0] - cx) < 0.42 * fov_x)
    hu[:, table] = uniform(rng, -350, -150)
    cavity_level = torso.cavity_level(y, x)
    inner, cavity = torso.level(y, x, shrink=fat) <= 1, cavity_level <= 1
    hu[torso.level(y, x) <= 1] = uniform(rng, -110, -85)
    hu[inner] = uniform(rng, 35, 55)
    hu[cavity] = uniform(rng, -100, -70)
    return torso, inner, cavity, cavity_level


def _lung_layout(grid: Grid, torso: Torso, rng: np.random.Generator) -> list[dict]:
    """Per lung (right, left): ellipse centre and radii, base and apex heights, dome, posterior recess, apex
    rounding and the gap left for the mediastinum."""
    length = grid.extent[0]
    (ayc, axc), layout = torso.cavity_radii, []
    for side in (-1, 1):
        z_base = -length / 2 + uniform(rng, 0.05, 0.14) * length + (uniform(rng, 0.01, 0.04) * length if side < 0 else 0.0)
        z_apex = length / 2 - uniform(rng, 0.02, 0.08) * length
        height = z_apex - z_base
        layout.append(dict(
            side=side,
            center=(torso.cavity_cy + uniform(rng, -0.04, 0.06) * ayc, torso.cx + side * uniform(rng, 0.42, 0.5) * axc),
            radii=(uniform(rng, 0.9, 1.05) * ayc, uniform(rng, 0.5, 0.6) * axc), z_base=z_base, z_apex=z_apex,
            dome=uniform(rng, 0.12, 0.22) * height, tilt=uniform(rng, 0.03, 0.07) * height,
            apex=uniform(rng, 0.15, 0.25) * height, gap=uniform(rng, 0.08, 0.14) * axc))
    return layout


@dataclass
class Spine:
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
    def draw(cls, grid: Grid, torso: Torso, period: float, rng: np.random.Generator) -> "Spine":
        z, y, x = grid.coords()
        y, x = y[0], x[0]
        rv = uniform(rng, 0.13, 0.16) * torso.cavity_radii[1]
        yv = torso.cavity_cy + torso.cavity_radii[0] - 0.55 * rv
        r_canal, y_canal = 0.45 * rv, yv + 1.5 * rv
        to_body, to_canal = np.hypot(x - torso.cx, y - yv), np.hypot(x - torso.cx, y - y_canal)
        body = to_body <= rv
        arch = ((to_canal > r_canal) & (to_canal <= r_canal + 0.3 * rv)) | \
            ((np.abs(x - torso.cx) < 0.15 * rv) & (y > y_canal) & (y < y_canal + r_canal + 0.9 * rv))
        disc = (((z - uniform(rng, 0, period)) / period) % 1.0) < 0.2
        hu = dict(cancellous=uniform(rng, 380, 460), cortical=uniform(rng, 700, 950), disc=uniform(rng, 70, 100),
                  canal=uniform(rng, 15, 30))
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


def _draw_heart(grid: Grid, hu, solid, cavity, torso: Torso, z_dome: float, height: float, rng):
    """An ellipsoidal heart with a shell of epicardial fat, resting on the higher dome, left-anterior."""
    (ayc, axc) = torso.cavity_radii
    radii = np.array([uniform(rng, 0.2, 0.26) * height, uniform(rng, 0.4, 0.5) * ayc, uniform(rng, 0.36, 0.45) * axc])
    center = np.array([z_dome + 0.75 * radii[0], torso.cavity_cy - uniform(rng, 0.15, 0.3) * ayc,
                       torso.cx + uniform(rng, 0.1, 0.2) * axc])
    drawn = ellipsoid(grid, center, radii, 1.2)
    if drawn is not None:
        box, level = drawn
        in_cavity = cavity[box]
        hu[box][(level <= 1.15 ** 2) & in_cavity] = uniform(rng, -100, -80)
        hu[box][(level <= 1) & in_cavity] = uniform(rng, 30, 45)
        solid[box] |= (level <= 1.15 ** 2) & in_cavity
    return center, radii


def _draw_mediastinal_tubes(grid: Grid, hu, solid, cavity, torso: Torso, spine: Spine, heart, layout,
                            z_low: float, height: float, rng):
    """Aorta (ascending, arch, descending), oesophagus, trachea and main bronchi; returns the airway lumen
    occupancy (painted as air after the lungs) and the two hila."""
    (ayc, axc), cx = torso.cavity_radii, torso.cx
    length = grid.extent[0]
    (heart_c, heart_r), rv, yv = heart, spine.radius, spine.center_y
    z_top, z_bottom = length / 2 + 10.0, -length / 2 - 10.0
    ra, re, rt = uniform(rng, 0.065, 0.08) * axc, 0.04 * axc, uniform(rng, 0.065, 0.08) * axc
    z_arch = z_low + uniform(rng, 0.7, 0.78) * height
    x_desc, y_desc = cx + rv + 0.9 * ra, yv - 0.6 * rv
    y_eso = yv - rv - re - 1.0
    y_tra = y_eso - re - rt - 2.0
    aorta = [(heart_c[0] + 0.5 * heart_r[0], heart_c[1] + 0.2 * heart_r[1], cx - 0.05 * axc),
             (z_arch, torso.cavity_cy - 0.25 * ayc, cx - 0.02 * axc), (z_arch + 0.04 * height, y_tra, cx + 0.12 * axc),
             (z_arch, y_desc, x_desc), (z_bottom, y_desc, x_desc)]
    tissue = np.zeros(grid.shape, dtype=np.float32)
    for a, b in zip(aorta[:-1], aorta[1:]):
        draw_tube(grid, tissue, a, b, ra)
    draw_tube(grid, tissue, (z_top, y_eso, cx), (z_bottom, y_eso, cx), re)
    carina = (z_low + uniform(rng, 0.55, 0.65) * height, y_tra + 0.3 * rt, cx)
    hila = [np.array([z_low + uniform(rng, 0.45, 0.55) * height, lp["center"][0] + uniform(rng, -0.1, 0.1) * lp["radii"][0],
                      lp["center"][1] - lp["side"] * 0.6 * lp["radii"][1]]) for lp in layout]
    airway = np.zeros(grid.shape, dtype=np.float32)
    for a, b, r in [((z_top, y_tra, cx), carina, rt)] + [(carina, hilum, 0.7 * rt) for hilum in hila]:
        draw_tube(grid, tissue, a, b, 1.3 * r)
        draw_tube(grid, airway, a, b, r)
    tissue *= cavity
    hu += tissue * (BLOOD_HU - hu)
    solid |= tissue >= 0.5
    return airway, hila


def _draw_lungs(grid: Grid, hu, allowed: np.ndarray, torso: Torso, layout, rng):
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
            0.1 * smooth_field(rng, grid, box, 40.0)
        floor = lp["z_base"] + lp["dome"] * (1 - np.clip(q2, 0, 1)) - lp["tilt"] * (y - ly0) / ry
        mask = (q2 <= 1) & (z >= floor) & (z <= lp["z_apex"]) & (lp["side"] * (x - torso.cx) > lp["gap"]) \
            & allowed[box]
        density = uniform(rng, -880, -830) + uniform(rng, 15, 40) * (y - ly0) / ry + 10 * smooth_field(rng, grid, box, 25.0)
        hu[box][mask] = np.broadcast_to(density, mask.shape)[mask]
        q[box][mask] = np.sqrt(np.clip(q2, 0, None))[mask]
        lung[box] |= mask
        lungs.append(Lung(lp["side"], lp["center"], lp["radii"], lp["z_base"], lp["z_apex"], box, mask))
    return lung, q, lungs


def _draw_ribs(grid: Grid, hu, torso: Torso, cavity_level, inner, period: float, rng) -> None:
    """Ribs in a shell just outside the cavity, one every ``period`` mm, sloping down anteriorly (so an axial slice
    cuts several arcs); a costal-cartilage gap and the sternum in front, the spine behind."""
    z, y, x = grid.coords()
    (ayc, axc), pc = torso.cavity_radii, torso.cavity_exponent
    yn, xn = (y[0] - torso.cavity_cy) / ayc, (x[0] - torso.cx) / axc
    sin_theta = yn / np.hypot(xn, yn).clip(1e-6)  # +1 posterior, -1 anterior
    thickness = uniform(rng, 0.06, 0.08)
    shell = (cavity_level > 1.02 ** pc) & (cavity_level <= (1.02 + thickness) ** pc) & inner
    phase = (z + uniform(rng, 2.0, 3.0) * period * (1 - sin_theta) / 2 - uniform(rng, 0, period)) / period
    ribs = shell & (np.cos(2 * np.pi * phase) > math.cos(math.pi * 0.35)) & (np.abs(sin_theta) < 0.93)
    hu[ribs] = uniform(rng, 450, 750)
    hu[shell & (np.abs(x - torso.cx) < 0.1 * axc) & (y < torso.cavity_cy)] = uniform(rng, 350, 450)


def draw_anatomy(grid: Grid, out_spacing, rng: np.random.Generator) -> Scene:
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
    hu[abdomen & (x < torso.cx)] = uniform(rng, 50, 65)  # liver
    hu[abdomen & (x >= torso.cx)] = uniform(rng, 35, 50)  # spleen, stomach

    period = max(uniform(rng, 24, 32), 3.5 * grid.spacing[0])
    spine = Spine.draw(grid, torso, period, rng)
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
    return Scene(grid, tuple(out_spacing), hu, lung, q, lungs, vessels)


def _vessel_tree(rng, grid: Grid, lung: Lung, lung_mask, vessels, hilum, r0: float) -> None:
    """Branching pulmonary vessels from the hilum: each branch splits in two, thinner and shorter, until it leaves
    the lung (past the first two generations, which cross the hilum) or gets thinner than a third of a voxel."""
    side = lung.side
    trunks = [(0.8, 0.0, 0.6 * side), (0.0, uniform(rng, -0.3, 0.3), side), (-0.7, 0.4, 0.5 * side),
              (-0.7, -0.4, 0.5 * side), (-0.2, 0.8, 0.5 * side)]
    min_r = 0.3 * min(grid.spacing)
    stack = []
    for direction in trunks:
        d = np.array(direction) + rng.normal(0, 0.15, 3)
        stack.append((hilum, d / np.linalg.norm(d), uniform(rng, 0.3, 0.45) * lung.radii[1], r0 * uniform(rng, 0.85, 1.15), 0))
    while stack:
        start, direction, length, radius, depth = stack.pop()
        end = start + direction * length
        draw_tube(grid, vessels, start, end, radius)
        if depth >= 8 or radius * 0.78 < min_r or (depth >= 2 and not lung_mask[grid.index(end)]):
            continue
        normal = rng.normal(size=3)
        normal -= (normal @ direction) * direction
        normal /= np.linalg.norm(normal) + 1e-9
        for sign in (1, -1):
            angle = uniform(rng, 0.35, 0.7)
            child = math.cos(angle) * direction + sign * math.sin(angle) * normal
            stack.append((end, child / np.linalg.norm(child), length * uniform(rng, 0.78, 0.92),
                          radius * uniform(rng, 0.72, 0.84), depth + 1))
