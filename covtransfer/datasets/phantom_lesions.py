"""The phantoms' lesion models, one function per kind: each paints its lesion into a :class:`Scene` and returns
the lesion's soft mask and where vessels are hidden (inside a tumour or fluid)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from covtransfer.datasets.phantom_anatomy import Scene
from covtransfer.datasets.phantom_render import ellipsoid, smooth_field, uniform


def _pick(rng, scene: Scene, candidates: np.ndarray, prefer_dependent: bool) -> np.ndarray:
    """A candidate voxel's centre; with ``prefer_dependent`` the most posterior-inferior of four random picks."""
    picks = rng.choice(candidates, size=4 if prefer_dependent else 1)
    points = [scene.grid.point(int(i)) for i in picks]
    return max(points, key=lambda p: p[1] - p[0]) if prefer_dependent else points[0]


def covid_lesion(scene: Scene, rng: np.random.Generator):
    """Ground-glass opacities: several patchy, low-contrast, ill-defined subpleural patches, favouring the dependent
    lower lungs, some with a consolidated core; vessels stay visible through them."""
    lesion = np.zeros(scene.grid.shape, dtype=np.float32)
    candidates = np.flatnonzero(scene.lung & (scene.q > 0.7))
    if candidates.size == 0:
        return lesion, np.zeros_like(lesion)
    h = scene.grid.voxel_mm
    for _ in range(int(rng.integers(2, 7))):
        center = _pick(rng, scene, candidates, prefer_dependent=rng.random() < 0.6)
        r = max(uniform(rng, 0.2, 0.38) * scene.lung_size, scene.min_radius(1.6))
        radii = np.array([r * uniform(rng, 0.7, 1.3), r * uniform(rng, 0.8, 1.2), r * uniform(rng, 0.8, 1.2)])
        box, level = ellipsoid(scene.grid, center, radii, 1.4)
        level = level + 0.8 * smooth_field(rng, scene.grid, box, 0.5 * r)
        edge = 3 * h / r
        weight = np.clip((1 - level) / edge + 0.5, 0, 1) * scene.lung[box]
        target = uniform(rng, -680, -380) + 60 * smooth_field(rng, scene.grid, box, 0.3 * r)
        if rng.random() < 0.3:
            core = np.clip((uniform(rng, 0.25, 0.5) - level) / edge + 0.5, 0, 1)
            target = target + core * (uniform(rng, -100, 40) - target)
        scene.hu[box] += weight * (np.clip(target, -720, 60) - scene.hu[box])
        np.maximum(lesion[box], weight, out=lesion[box])
    return lesion, np.zeros_like(lesion)


def tumor_lesion(scene: Scene, rng: np.random.Generator):
    """Lung tumours: one or two compact, lobulated, well-defined soft-tissue masses (0..60 HU) inside the lung,
    displacing vessels, sometimes with a hypodense necrotic centre."""
    lesion = np.zeros(scene.grid.shape, dtype=np.float32)
    candidates = np.flatnonzero(scene.lung & (scene.q < 0.6))
    if candidates.size == 0:
        return lesion, lesion.copy()
    h = scene.grid.voxel_mm
    for _ in range(1 if rng.random() < 0.75 else 2):
        r = min(max(uniform(rng, 0.18, 0.32) * scene.lung_size, scene.min_radius(2.2)), 0.55 * scene.lung_size)
        radii = r * np.array([uniform(rng, 0.85, 1.15) for _ in range(3)])
        best = None
        for _attempt in range(12):
            center = _pick(rng, scene, candidates, prefer_dependent=False)
            box, level = ellipsoid(scene.grid, center, radii, 1.3)
            inside = level <= 1
            fraction = (inside & scene.lung[box]).sum() / max(inside.sum(), 1)
            if best is None or fraction > best[0]:
                best = (fraction, box, level)
            if fraction >= 0.9:
                break
        _, box, level = best
        shape = np.sqrt(level) - 0.15 * smooth_field(rng, scene.grid, box, 0.6 * r)
        weight = np.clip((1 - shape) * r / h + 0.5, 0, 1) * scene.lung[box]
        target = uniform(rng, 15, 45) + 6 * smooth_field(rng, scene.grid, box, 0.4 * r)
        if rng.random() < 0.25:
            necrosis = np.clip((uniform(rng, 0.35, 0.55) - shape) * r / h + 0.5, 0, 1)
            target = target + necrosis * (uniform(rng, 5, 15) - target)
        scene.hu[box] += weight * (np.clip(target, 0, 60) - scene.hu[box])
        np.maximum(lesion[box], weight, out=lesion[box])
    return lesion, lesion.copy()


def effusion_lesion(scene: Scene, rng: np.random.Generator):
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
        reach, depth0, meniscus = uniform(rng, 0.3, 0.6), uniform(rng, 0.15, 0.4), uniform(rng, 0.4, 1.0)
        t_z = np.clip((z - lung.z_base) / (reach * lung.height), 0, None)
        depth = depth0 * np.clip(1 - t_z, 0, 1) ** 0.7
        t_post = (y - (cy - ry)) / (2 * ry)
        surface = 1 - depth * (1 + meniscus * ((x - cx) / rx) ** 2)
        signed = (t_post - surface) * 2 * ry  # mm above (negative) or below (positive) the fluid surface
        weight = np.clip(signed / h + 0.5, 0, 1) * lung.mask
        band = uniform(rng, 6.0, 14.0)
        compressed = np.clip(1 + signed / band, 0, 1) * (signed < 0) * (depth > 0) * lung.mask * 0.6
        region = scene.hu[lung.box]
        region += compressed * (uniform(rng, -450, -250) - region)
        fluid = uniform(rng, 2, 18) + 2 * smooth_field(rng, scene.grid, lung.box, 30.0)
        region += weight * (fluid - region)
        np.maximum(lesion[lung.box], weight, out=lesion[lung.box])
    return lesion, lesion.copy()


LESIONS: dict[str, Callable] = {"covid": covid_lesion, "tumor": tumor_lesion, "effusion": effusion_lesion}
