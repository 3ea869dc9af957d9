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


# --------------------------------------------------------------------------------------------
# atlas info (check_atlas_info): abagen's columns and values, refused otherwise
# --------------------------------------------------------------------------------------------
def _info(**cols):
    import pandas as pd

    base = {"id": [1, 2, 3], "hemisphere": ["L", "R", "B"],
            "structure": ["cortex", "subcortex", "cerebellum"]}
    base.update(cols)
    return pd.DataFrame({k: v for k, v in base.items() if v is not None})


def test_atlas_info_accepts_abagens_forms_in_any_case():
    import pandas as pd

    from atlas_engine.pipeline.matching import check_atlas_info

    t = check_atlas_info(_info(hemisphere=["lh", "Right", "bilateral"],
                               structure=["Cortex", "brainstem", "White Matter"]))
    assert t.index.name == "id" and t.index.tolist() == [1, 2, 3]
    assert t["hemisphere"].tolist() == ["L", "R", "B"]
    assert t["structure"].tolist() == ["cortex", "subcortex/brainstem", "white matter"]
    frame = _info(structure=[" cortex", "subcortex ", "cerebellum"]).rename(
        columns={"id": "ID", "hemisphere": " Hemisphere"})
    assert check_atlas_info(frame)["hemisphere"].tolist() == ["L", "R", "B"]
    indexed = _info().set_index("id")
    assert check_atlas_info(indexed).index.tolist() == [1, 2, 3]
    assert check_atlas_info(_info(id=[1.0, 2.0, 3.0])).index.dtype == np.int64
    # checked twice gives the same table
    pd.testing.assert_frame_equal(check_atlas_info(check_atlas_info(_info())),
                                  check_atlas_info(_info()))


@pytest.mark.parametrize("cols,needle", [
    ({"id": None}, "no id column"),                       # a RangeIndex is not the ids
    ({"structure": None}, "no structure column"),
    ({"hemisphere": ["L", "R", "X"]}, "hemisphere values ['X']"),
    ({"structure": ["cortex", "subcortical", "cerebellum"]}, "structure values ['subcortical']"),
    ({"id": ["a", "b", "c"]}, "not integers"),
    ({"id": [1.5, 2, 3]}, "not integers"),
])
def test_atlas_info_refused_naming_the_file(tmp_path, cols, needle):
    from atlas_engine.errors import FormatError
    from atlas_engine.pipeline.atlas_input import resolve_atlas

    path = tmp_path / "info.csv"
    _info(**cols).to_csv(path, index=False)
    labels = np.zeros((4, 4, 4), dtype=np.int64)
    labels[0, 0, :3] = [1, 2, 3]
    with pytest.raises(FormatError) as err:
        resolve_atlas((labels, np.eye(4)), str(path))
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value)
    with pytest.raises(ConfigError, match="atlas info: "):
        from atlas_engine.pipeline.matching import check_atlas_info

        check_atlas_info(_info(**cols))


@pytest.mark.parametrize("atlas", [{9861: "a.nii.gz", 10021: "b.nii.gz"},
                                   ("lh.label.gii", "rh.label.gii"), ["x.nii.gz"]])
def test_abagens_other_atlas_forms_refused_in_one_line(atlas):
    from atlas_engine.pipeline.atlas_input import resolve_atlas

    with pytest.raises(ConfigError, match="per-donor .* and surface atlases are not supported"):
        resolve_atlas(atlas, None)
