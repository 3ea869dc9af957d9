"""The grid radius search finds exactly the voxels scipy's KD-tree finds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from atlas_engine.kernels.gridball import voxels_within
from atlas_engine.pipeline.matching import VolumeAtlas


def _grid(rng: np.random.Generator, shape: tuple[int, int, int], step: np.ndarray,
          origin: np.ndarray, fill: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.where(rng.random(shape) < fill, rng.integers(1, 9, shape), 0)
    nz = np.nonzero(labels)
    aff = np.eye(4)
    aff[:3, :3] = np.diag(step)
    aff[:3, 3] = origin
    coords = np.column_stack(nz).astype(np.float64) @ aff[:3, :3].T + aff[:3, 3]
    index = np.full(shape, -1, dtype=np.int32)
    index[nz] = np.arange(len(coords))
    return labels, aff, coords, index


@pytest.mark.parametrize("step, origin", [
    ((1.0, 1.0, 1.0), (-90.0, -126.0, -72.0)),     # MNI 1 mm, as the DK atlas
    ((-1.0, 1.0, 1.0), (90.0, -126.0, -72.0)),     # x flipped (radiological affines)
    ((2.0, 2.0, 2.0), (-90.5, -126.25, -72.0)),
    ((1.5, -0.7, 0.9), (-30.3, 20.1, -11.7)),      # spacings that are not exact in binary
])
def test_same_voxels_as_kdtree(step, origin):
    rng = np.random.default_rng(3)
    shape = (23, 19, 17)
    labels, aff, coords, index = _grid(rng, shape, np.array(step), np.array(origin), 0.4)
    tree = cKDTree(coords)
    # points on the grid (distances exactly 1, 2 … occur), between voxels, outside the
    # volume, far away, and not finite
    on_grid = coords[rng.integers(0, len(coords), 60)]
    lo, hi = coords.min(axis=0) - 4, coords.max(axis=0) + 4
    between = rng.uniform(lo, hi, (200, 3))
    snapped = np.round(between / np.abs(step)) * np.abs(step) + np.array(origin) % 1
    far = np.array([[1e6, 0.0, 0.0], [-1e5, 1e5, 0.0]])
    pts = np.vstack([on_grid, between, snapped, far])
    for radius in (0, 1, 2, 3, 2.5):
        indptr, found = voxels_within(index, coords, aff[:3, 3], np.diag(aff[:3, :3]), pts,
                                      radius)
        want = tree.query_ball_point(pts, radius)
        assert len(indptr) == len(pts) + 1
        for q in range(len(pts)):
            got = found[indptr[q]:indptr[q + 1]]
            assert np.all(np.diff(got) > 0)
            assert got.tolist() == sorted(want[q]), (radius, q)
    # not finite, or too far for the tree (its distances overflow): none, no integer overflow
    odd = voxels_within(index, coords, aff[:3, 3], np.diag(aff[:3, :3]),
                        np.array([[np.nan, 0.0, 0.0], [-1e300, 1e300, 0.0]]), 5)
    assert odd[0].tolist() == [0, 0, 0] and odd[1].size == 0


def test_zero_spacing_refused():
    with pytest.raises(ValueError, match="non-zero"):
        voxels_within(np.zeros((2, 2, 2), dtype=np.int32), np.zeros((0, 3)), np.zeros(3),
                      np.array([1.0, 0.0, 1.0]), np.zeros((1, 3)), 1)


@pytest.mark.parametrize("where", ["spread", "in a corner"])
def test_atlas_labels_samples_as_with_the_tree(where):
    """VolumeAtlas.label_samples on the grid search gives the labels and ways of matching
    that the KD-tree's candidate voxels give (the tree kept for the interpolation fill),
    also when the labelled voxels fill only a box of the volume (the search's index covers
    that box)."""
    rng = np.random.default_rng(8)
    labels, aff, coords, _ = _grid(rng, (30, 28, 26), np.array([1.0, 1.0, 1.0]),
                                   np.array([-15.0, -14.0, -13.0]), 0.05)
    if where == "in a corner":
        labels[:, :, :] = np.where(rng.random(labels.shape) < 0.3,
                                   rng.integers(1, 9, labels.shape), 0)
        labels[:17] = 0
        labels[:, :5] = 0
        labels[:, :, 20:] = 0
    atlas = VolumeAtlas(labels, aff)
    xyz = rng.uniform(-18, 18, (400, 3))
    got = atlas.label_samples(xyz, tolerance=3, return_how=True)

    class TreeAtlas(VolumeAtlas):
        def voxels_within(self, points, radius):
            found = self.tree.query_ball_point(points, radius)
            indptr = np.concatenate([[0], np.cumsum([len(f) for f in found])])
            flat = [v for f in found for v in f]
            return indptr.astype(np.int64), np.asarray(flat, dtype=np.int64)

    want = TreeAtlas(labels, aff).label_samples(xyz, tolerance=3, return_how=True)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert (got[0] > 0).sum() > 100 and (got[1] == 3).any()   # ties decided by centroids too


def test_atlas_without_labels_matches_nothing():
    atlas = VolumeAtlas(np.zeros((4, 5, 6), dtype=np.int64), np.eye(4))
    assert atlas.label_samples(np.array([[1.0, 1.0, 1.0], [2.0, 3.0, 4.0]]),
                               tolerance=3).tolist() == [0, 0]
