"""Segmentation surfaces as area-weighted surface elements, and the distances between two such surfaces.

The surface of a mask is sampled on the grid of 2 x 2 x 2 voxel blocks (the "corners" between voxel centres). Each
block whose eight voxels are neither all inside nor all outside is one surface element; its area in mm² is the area
of the marching-cubes-like polygons that cut the block's edges at their midpoints, scaled by the voxel spacing. The
area of each of the 256 block configurations is looked up in a table built here from that rule.

Rule for ambiguous block faces (two inside voxels on one diagonal of a face): the two inside voxels are kept apart,
each cut off by its own segment. The rule depends on the face alone, so two blocks sharing a face agree and the
surface is closed. Polygons with more than three vertices are triangulated as a fan around their vertex centroid.

Distances: from every surface element of one mask to the nearest surface element of the other, in mm with the
anisotropic spacing. These are exactly the values a Euclidean distance transform of the other mask's surface
elements (``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``) holds at this mask's surface elements, as in
DeepMind's surface-distance code; they are computed with a k-d tree over the element positions instead, so the cost
grows with the surface size rather than with the volume of the bounding box (scattered lesions in a 512 x 512 x 200
CT span most of the volume: the transform takes seconds there, the tree a fraction of one). Both masks are cropped to
their joint bounding box first, which keeps the block-configuration pass small.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

from covtransfer.data.cropping import bounding_box, crop_to_box

_CORNERS = np.array([((b >> 2) & 1, (b >> 1) & 1, b & 1) for b in range(8)], dtype=np.float64)  # (z, y, x)


def _face_cycles() -> list[list[int]]:
    """The six cube faces, each as its four corner indices in cyclic order."""
    faces = []
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        for value in (0, 1):
            cycle = []
            for i, j in ((0, 0), (0, 1), (1, 1), (1, 0)):
                bits = {axis: value, others[0]: i, others[1]: j}
                cycle.append(bits[0] << 2 | bits[1] << 1 | bits[2])
            faces.append(cycle)
    return faces


def _polygons(code: int) -> list[list[tuple[int, int]]]:
    """Closed polygons of one block configuration, each a list of crossed edges given as corner pairs."""
    inside = [bool(code >> b & 1) for b in range(8)]
    neighbours: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def link(a: tuple[int, int], b: tuple[int, int]) -> None:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)

    for cycle in _face_cycles():
        edges = [tuple(sorted((cycle[i], cycle[(i + 1) % 4]))) for i in range(4)]
        crossed = [i for i in range(4) if inside[cycle[i]] != inside[cycle[(i + 1) % 4]]]
        if len(crossed) == 2:
            link(edges[crossed[0]], edges[crossed[1]])
        elif len(crossed) == 4:
            for i in range(4):
                if inside[cycle[i]]:  # cut off each inside corner separately: edges before and after it
                    link(edges[i - 1], edges[i])
    polygons, seen = [], set()
    for start in sorted(neighbours):
        if start in seen:
            continue
        polygon, previous, current = [start], None, start
        seen.add(start)
        while True:
            nxt = neighbours[current][0] if previous is None else \
                next(n for n in neighbours[current] if n != previous)
            if nxt == start:
                break
            polygon.append(nxt)
            seen.add(nxt)
            previous, current = current, nxt
        polygons.append(polygon)
    return polygons


@functools.lru_cache(maxsize=1)
def _area_vectors() -> np.ndarray:
    """Per configuration, the doubled area vectors (cross products) of its fan triangles in voxel units, zero-padded."""
    per_code = []
    for code in range(256):
        vectors = []
        for polygon in _polygons(code):
            points = np.array([(_CORNERS[a] + _CORNERS[b]) / 2 for a, b in polygon])
            centre = points.mean(axis=0)
            for k in range(len(points)):
                vectors.append(np.cross(points[k] - centre, points[(k + 1) % len(points)] - centre))
        per_code.append(vectors)
    table = np.zeros((256, max(len(v) for v in per_code), 3))
    for code, vectors in enumerate(per_code):
        if vectors:
            table[code, :len(vectors)] = vectors
    return table


def surfel_area_table(spacing: Sequence[float]) -> np.ndarray:
    """Area in mm² of the surface element of each of the 256 block configurations, for voxel ``spacing`` (z, y, x).

    Scaling the axes by ``s`` scales component ``i`` of a cross product by ``prod(s) / s[i]``.
    """
    sz, sy, sx = (float(s) for s in spacing)
    scale = np.array([sy * sx, sz * sx, sz * sy])
    return 0.5 * np.linalg.norm(_area_vectors() * scale, axis=2).sum(axis=1)


def neighbourhood_codes(mask: np.ndarray) -> np.ndarray:
    """The 8-bit configuration of every 2 x 2 x 2 block of the zero-padded ``mask``; shape is ``mask.shape + 1``.

    Bit ``4 dz + 2 dy + dx`` is set when the voxel at offset ``(dz, dy, dx)`` in the block is inside.
    """
    padded = np.pad(mask.astype(bool, copy=False), 1).view(np.uint8)
    nz, ny, nx = (s + 1 for s in mask.shape)
    codes = np.zeros((nz, ny, nx), dtype=np.uint8)
    for bit, (dz, dy, dx) in enumerate(_CORNERS.astype(int)):
        codes |= padded[dz:dz + nz, dy:dy + ny, dx:dx + nx] << np.uint8(bit)
    return codes


def surface_elements(codes: np.ndarray) -> np.ndarray:
    """Where the blocks are surface elements: neither all outside (code 0) nor all inside (code 255)."""
    return (codes - np.uint8(1)) < np.uint8(254)  # uint8 wrap-around sends 0 to 255


def _check(mask: np.ndarray, spacing: Sequence[float]) -> None:
    if mask.ndim != 3:
        raise ValueError(f"surface computations need 3-D masks, got shape {mask.shape}")
    if len(spacing) != 3 or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers (z, y, x), got {tuple(spacing)}")


def surface_area(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Total surface area of ``mask`` in mm²."""
    _check(mask, spacing)
    codes = neighbourhood_codes(mask)
    return float(surfel_area_table(spacing)[codes].sum())


@dataclass
class SurfaceDistances:
    """Per surface element of each mask: its distance (mm) to the other mask's surface and its area (mm²)."""

    distances_ref_to_pred: np.ndarray
    areas_ref: np.ndarray
    distances_pred_to_ref: np.ndarray
    areas_pred: np.ndarray


def surface_distances(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> SurfaceDistances:
    """Distances between the surfaces of two non-empty boolean masks of one shape, with the areas as weights."""
    _check(ref, spacing)
    if ref.shape != pred.shape:
        raise ValueError(f"masks differ in shape: {ref.shape} vs {pred.shape}")
    ref, pred = ref.astype(bool, copy=False), pred.astype(bool, copy=False)
    if not ref.any() or not pred.any():
        raise ValueError("surface distances need two non-empty masks")
    box = bounding_box(ref | pred)
    codes_ref = neighbourhood_codes(crop_to_box(ref, box))
    codes_pred = neighbourhood_codes(crop_to_box(pred, box))
    border_ref, border_pred = surface_elements(codes_ref), surface_elements(codes_pred)
    scale = np.asarray(spacing, dtype=np.float64)
    points_ref, points_pred = np.argwhere(border_ref) * scale, np.argwhere(border_pred) * scale
    to_pred = cKDTree(points_pred).query(points_ref)[0]
    to_ref = cKDTree(points_ref).query(points_pred)[0]
    areas = surfel_area_table(spacing)
    return SurfaceDistances(to_pred, areas[codes_ref[border_ref]], to_ref, areas[codes_pred[border_pred]])
