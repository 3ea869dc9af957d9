"""Numba kernel: the labelled voxels of an axis-aligned grid within a radius of each point.

Sample matching asks, for each sample and a radius of 0, 1, 2 … mm, which labelled atlas
voxels lie within that distance (abagen builds a KD-tree of the voxels' coordinates and calls
``query_ball_point``). On a grid the candidates of a point are the voxels of a small box of
indices around it, so no tree is needed: each point scans its box and keeps the voxels whose
squared distance, summed over x, y, z in that order from the voxels' own coordinates, is at
most radius². That is the test and the arithmetic of scipy's ``cKDTree.query_ball_point``
(``eps=0``, ``p=2``), so the same voxels are found (tests/test_kernels_gridball.py compares
the two on grids of several spacings, signs and offsets).

Inputs are plain arrays: ``index`` — the grid's shape, each voxel's row in ``coords`` or -1
for background; ``coords`` — (voxels, 3) world coordinates of the labelled voxels;
``origin`` and ``step`` — the world coordinate of voxel 0 and the spacing per axis (the
affine's diagonal; it may be negative). The box is widened by one voxel on each side so that
rounding in the world → index conversion cannot leave a voxel out; the distance test decides.
"""

from __future__ import annotations

import math

import numpy as np

from ._cache import cached_njit


@cached_njit(nogil=True)
def _span(p: float, radius: float, origin: float, step: float, n: int) -> tuple[int, int]:
    a = (p - radius - origin) / step
    b = (p + radius - origin) / step
    if a > b:
        a, b = b, a
    a = min(max(a, -2.0), n + 1.0)  # far-away points: an empty span, no integer overflow
    b = min(max(b, -2.0), n + 1.0)
    return max(int(math.floor(a)) - 1, 0), min(int(math.ceil(b)) + 1, n - 1)


@cached_njit(nogil=True)
def _scan(index: np.ndarray, coords: np.ndarray, origin: np.ndarray, step: np.ndarray,
          points: np.ndarray, radius: float, indptr: np.ndarray, out: np.ndarray,
          fill: bool) -> None:
    nx, ny, nz = index.shape
    r2 = radius * radius
    for q in range(points.shape[0]):
        px, py, pz = points[q, 0], points[q, 1], points[q, 2]
        n = 0
        pos = indptr[q]
        if np.isfinite(px) and np.isfinite(py) and np.isfinite(pz) and radius >= 0:
            i0, i1 = _span(px, radius, origin[0], step[0], nx)
            j0, j1 = _span(py, radius, origin[1], step[1], ny)
            k0, k1 = _span(pz, radius, origin[2], step[2], nz)
            for i in range(i0, i1 + 1):
                for j in range(j0, j1 + 1):
                    for k in range(k0, k1 + 1):
                        v = index[i, j, k]
                        if v < 0:
                            continue
                        d = 0.0
                        u = coords[v, 0] - px
                        d += u * u
                        u = coords[v, 1] - py
                        d += u * u
                        u = coords[v, 2] - pz
                        d += u * u
                        if d <= r2:
                            if fill:
                                out[pos + n] = v
                            n += 1
        if not fill:
            indptr[q + 1] = n


def voxels_within(index: np.ndarray, coords: np.ndarray, origin: np.ndarray, step: np.ndarray,
                  points: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The labelled voxels within ``radius`` of each point, as CSR arrays.

    Parameters
    ----------
    index : (X, Y, Z) int array
        Each voxel's row in ``coords``; -1 for background.
    coords : (V, 3) float64
        World coordinates of the labelled voxels.
    origin, step : (3,) float64
        World coordinate of voxel (0, 0, 0) and the spacing along each axis (non-zero, may be
        negative).
    points : (N, 3) float64
        Query points in world coordinates; a point with a non-finite coordinate has none.
    radius : float
        Distance (same units); a voxel at exactly ``radius`` is included.

    Returns
    -------
    indptr : (N + 1,) int64
        Point ``q``'s voxels are ``indices[indptr[q]:indptr[q + 1]]``.
    indices : int64
        Rows of ``coords``, ascending per point.
    """
    pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    xyz = np.ascontiguousarray(coords, dtype=np.float64)
    o = np.ascontiguousarray(origin, dtype=np.float64)
    s = np.ascontiguousarray(step, dtype=np.float64)
    if np.any(s == 0):
        raise ValueError("grid spacing must be non-zero on every axis")
    counts = np.zeros(len(pts) + 1, dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    _scan(index, xyz, o, s, pts, float(radius), counts, empty, False)
    indptr = np.cumsum(counts)                       # counts[0] is 0
    out = np.empty(int(indptr[-1]), dtype=np.int64)
    _scan(index, xyz, o, s, pts, float(radius), indptr, out, True)
    return indptr, out
