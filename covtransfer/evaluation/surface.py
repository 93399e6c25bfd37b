"""Segmentation surfaces as area-weighted surface elements, and the distances between two such surfaces.

The definitions are those of DeepMind's ``surface-distance`` package (``compute_surface_distances``), so that NSD and
HD95 computed here equal its ``compute_surface_dice_at_tolerance`` and ``compute_robust_hausdorff`` to rounding.

The surface of a mask is sampled on the grid of 2 x 2 x 2 voxel blocks (the "corners" between voxel centres) of the
zero-padded mask. Each block whose eight voxels are neither all inside nor all outside is one surface element; its
area in mm² is the area of the marching-cubes triangles whose vertices are the midpoints of the block's edges that
join an inside and an outside voxel, scaled by the voxel spacing. The area of each of the 256 block configurations is
looked up in a table built here from the rules of the classic marching-cubes case table that surface-distance uses:

- Polygons: on a face with two inside voxels on one diagonal and two outside voxels on the other, the voxels of the
  minority class are kept apart, each cut off by its own segment: a block with at most four inside voxels keeps the
  inside voxels apart, one with five or more has the surface of its complement (keeps the outside voxels apart), so a
  configuration and its complement always have the same area. Unlike a rule that looks at the face alone, this does
  not always give a closed surface; it is the reference definition, and only the element areas matter here.
- Triangles: a polygon with more than three vertices (4 to 6 here) is split into the triangles that make its total
  area in voxel units largest. Quadrilaterals are flat, so any split will do; pentagons and hexagons are not.

These two rules reproduce surface-distance's table at every spacing (each triangle's area vector is scaled by the
spacing, so matching the vectors up to sign matches all spacings). This module used to keep inside voxels apart at
every count and to split polygons around their centroid: 140 of the 256 areas then differed, from -16 % (non-flat
polygons) to +140 % (five or six inside voxels), which made NSD differ from surface-distance by 0.2-2.5 % on CT lesions.

Distances: from every surface element of one mask to the nearest surface element of the other, in mm with the
anisotropic spacing. These are exactly the values a Euclidean distance transform of the other mask's surface
elements (``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``) holds at this mask's surface elements, as in
surface-distance; they are computed with a k-d tree over the element positions instead, so the cost grows with the
surface size rather than with the volume of the bounding box (scattered lesions in a 512 x 512 x 200 CT span most of
the volume: the transform takes seconds there, the tree a fraction of one). The tree only finds the nearest element;
the distance is then evaluated from the integer index offset with the transform's own arithmetic,
``sqrt(((dz sz)² + (dy sy)²) + (dx sx)²)``, so that a distance equal to the NSD tolerance compares the same way.
Where several elements are equally near, their evaluated lengths can differ in the last bit; the smallest is taken,
as the transform does in all but rare cases (see :func:`_nearest_distances`).
Both masks are cropped to their joint bounding box first, which keeps the block-configuration pass small.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

from covtransfer.data.cropping import bounding_box, crop_to_box

_CORNERS = np.array([((b >> 2) & 1, (b >> 1) & 1, b & 1) for b in range(8)], dtype=np.float64)  # (z, y, x)

# Relative gap under which two k-d tree distances count as a tie (their rounding errors are ~1e-16 relative; a point
# let in that is truly farther does no harm, as only the smallest evaluated length of the group is kept).
_TIE_RTOL = 1e-12


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
    """Closed polygons of one block configuration with its inside corners kept apart, as lists of crossed edges."""
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


def _surface_polygons(code: int) -> list[list[tuple[int, int]]]:
    """The polygons of ``code`` with the voxels of the minority class kept apart: those of the complement for five or
    more inside voxels, else those with the inside voxels kept apart (see the module notes)."""
    return _polygons(255 - code if bin(code).count("1") > 4 else code)


def _triangulations(vertices: list[int]) -> list[list[tuple[int, int, int]]]:
    """Every split of the polygon with these vertices (in cyclic order) into triangles by non-crossing diagonals."""
    if len(vertices) < 3:
        return [[]]
    first, last = vertices[0], vertices[-1]
    splits = []
    for k in range(1, len(vertices) - 1):  # the triangle on the side (last, first), then the two sides of it
        for left in _triangulations(vertices[:k + 1]):
            for right in _triangulations(vertices[k:]):
                splits.append(left + [(first, vertices[k], last)] + right)
    return splits


def _largest_triangles(points: np.ndarray) -> list[np.ndarray]:
    """Doubled area vectors (cross products) of the triangulation of polygon ``points`` with the largest area.

    Among equally large ones the first is kept: they are the splits of a flat polygon, or mirror images of one
    another, and have the same area at every spacing, so the choice changes nothing.
    """
    best, best_area = [], -1.0
    for split in _triangulations(list(range(len(points)))):
        vectors = [np.cross(points[b] - points[a], points[c] - points[a]) for a, b, c in split]
        area = float(sum(np.linalg.norm(v) for v in vectors))
        if area > best_area + 1e-9:
            best, best_area = vectors, area
    return best


@functools.lru_cache(maxsize=1)
def _area_vectors() -> np.ndarray:
    """Per configuration, the doubled area vectors (cross products) of its triangles in voxel units, zero-padded."""
    per_code = []
    for code in range(256):
        vectors = []
        for polygon in _surface_polygons(code):
            vectors += _largest_triangles(np.array([(_CORNERS[a] + _CORNERS[b]) / 2 for a, b in polygon]))
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

    Bit ``4 dz + 2 dy + dx`` is set when the voxel at offset ``(dz, dy, dx)`` in the block is inside. Built one axis
    at a time (pairs along x, then pairs of those along y, then along z): three shifts instead of eight.
    """
    padded = np.pad(mask.astype(bool, copy=False), 1).view(np.uint8)
    pairs = padded[:, :, 1:] << np.uint8(1)
    pairs |= padded[:, :, :-1]
    quads = pairs[:, 1:, :] << np.uint8(2)
    quads |= pairs[:, :-1, :]
    codes = quads[1:, :, :] << np.uint8(4)
    codes |= quads[:-1, :, :]
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


def _indices(where: np.ndarray) -> np.ndarray:
    """``np.argwhere(where)``, as ``(n, ndim)`` int64 indices in C order, without its slow multi-index pass."""
    return np.stack(np.unravel_index(np.flatnonzero(where), where.shape), axis=1).astype(np.int64, copy=False)


def _grid_distances(offsets: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Lengths in mm of integer ``(n, 3)`` index offsets, with the arithmetic of ``distance_transform_edt``."""
    steps = offsets * scale
    steps *= steps
    return np.sqrt((steps[:, 0] + steps[:, 1]) + steps[:, 2])


def _nearest_distances(index_from: np.ndarray, index_to: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Distance (mm) from each grid point ``index_from`` to the nearest of the grid points ``index_to``.

    The k-d tree finds the nearest point; its distance is then recomputed from the integer offset. Where several
    points are nearest (their distances are mathematically equal, e.g. mirror images across an axis), the evaluated
    lengths can differ in the last bit, which decides a comparison with a tolerance equal to that distance: the
    smallest evaluated length of the tied points is taken, which is what the distance transform yields in almost all
    cases (its own choice among tied points is not fully predictable, so a last-bit difference can remain in rare
    ties).
    """
    points_to = index_to * scale
    points_from = index_from * scale
    tree = cKDTree(points_to)
    found, nearest = tree.query(points_from, k=2)  # with one point only, the second is at infinity
    distances = _grid_distances(index_to[nearest[:, 0]] - index_from, scale)
    tied = np.flatnonzero(found[:, 1] <= found[:, 0] * (1 + _TIE_RTOL))
    if tied.size:
        groups = tree.query_ball_point(points_from[tied], found[tied, 0] * (1 + _TIE_RTOL))
        sizes = np.fromiter(map(len, groups), dtype=np.intp, count=len(groups))
        members = np.fromiter(itertools.chain.from_iterable(groups), dtype=np.intp, count=int(sizes.sum()))
        owners = np.repeat(tied, sizes)
        lengths = _grid_distances(index_to[members] - index_from[owners], scale)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        distances[tied] = np.minimum(distances[tied], np.minimum.reduceat(lengths, starts))
    return distances


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
    index_ref, index_pred = _indices(border_ref), _indices(border_pred)
    to_pred = _nearest_distances(index_ref, index_pred, scale)
    to_ref = _nearest_distances(index_pred, index_ref, scale)
    areas = surfel_area_table(spacing)
    return SurfaceDistances(to_pred, areas[codes_ref[border_ref]], to_ref, areas[codes_pred[border_pred]])
