"""axis_aligned: rounding noise off the diagonal dropped, axes reordered, rotations refused."""

from __future__ import annotations

import numpy as np
import pytest

from atlas_engine.errors import ConfigError
from atlas_engine.pipeline.atlas_affine import NOISE_SHIFT, axis_aligned


def _affine(lin, offset=(-90.0, -126.0, -72.0)):
    aff = np.eye(4)
    aff[:3, :3] = lin
    aff[:3, 3] = offset
    return aff


def _world(labels, aff):
    """Every labelled voxel as (x, y, z, label), sorted: what matching sees."""
    ijk = np.column_stack(np.nonzero(labels))
    xyz = ijk @ aff[:3, :3].T + aff[:3, 3]
    rows = np.column_stack([xyz, labels[tuple(ijk.T)]])
    return rows[np.lexsort(rows.T[::-1])]


def test_exact_affine_unchanged():
    labels = np.arange(24).reshape(2, 3, 4)
    aff = _affine(np.diag([2.0, -2.0, 1.5]))
    data, clean, note = axis_aligned(labels, aff)
    assert data is labels and note is None
    np.testing.assert_array_equal(clean, aff)


def test_permuted_axes_are_the_same_world_grid():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, (4, 5, 6))
    lin = np.zeros((3, 3))
    lin[0, 2], lin[1, 0], lin[2, 1] = 1.5, -2.0, 1.0   # world x along voxel axis 2, …
    aff = _affine(lin)
    data, clean, note = axis_aligned(labels, aff)
    assert note is None and data.shape == (6, 4, 5) and data.flags.c_contiguous
    np.testing.assert_array_equal(clean[:3, :3], np.diag([1.5, -2.0, 1.0]))
    np.testing.assert_array_equal(_world(data, clean), _world(labels, aff))


def test_noise_dropped_with_a_note_and_rotation_refused():
    labels = np.ones((100, 100, 100), dtype=np.int64)
    lin = np.diag([1.0, 1.0, 1.0])
    lin[0, 1] = 1e-9
    _, clean, note = axis_aligned(labels, _affine(lin))
    np.testing.assert_array_equal(clean[:3, :3], np.eye(3))
    assert "1e-09" in note and "9.9e-08 mm" in note
    # just above the limit: the terms would move a voxel by more than NOISE_SHIFT of a voxel
    lin[0, 1] = NOISE_SHIFT / 99 * 1.01
    with pytest.raises(ConfigError, match="oblique.*resample"):
        axis_aligned(labels, _affine(lin))
    lin[0, 1] = NOISE_SHIFT / 99 * 0.99
    assert axis_aligned(labels, _affine(lin))[2] is not None


@pytest.mark.parametrize("lin", [np.diag([1.0, 0.0, 1.0]),
                                 np.array([[1.0, 1.0, 0], [1.0, 1.0, 0], [0, 0, 1.0]]),
                                 np.diag([1.0, np.nan, 1.0])])
def test_degenerate_or_not_finite_refused(lin):
    with pytest.raises(ConfigError, match="affine"):
        axis_aligned(np.ones((3, 3, 3)), _affine(lin))
