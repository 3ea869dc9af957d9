"""``missing='interpolate'``: the store pipeline against abagen 0.1.3 (golden written by
benchmarks/abagen_oracle/make_interp_golden.py on the end-to-end dataset), and the fill
itself against a plain voxel × sample distance matrix (abagen's ``fill_label`` rule)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _golden import check_frame, load_golden, store_copy

from atlas_engine import open_store
from atlas_engine.pipeline.expression import get_expression_data
from atlas_engine.pipeline.interpolate import interpolation_fill
from atlas_engine.pipeline.matching import VolumeAtlas

GOLDEN = Path(__file__).parent / "data" / "abagen_golden"
PARAMS = json.loads((GOLDEN / "e2e_interp_params.json").read_text())
ATLAS = str(GOLDEN / "e2e_interp_atlas.nii.gz")
INFO = str(GOLDEN / "e2e_interp_atlas_info.csv")
FIXED = dict(corrected_mni=False, reannotated=False)


@pytest.fixture(scope="module")
def store(e2e_source, tmp_path_factory):
    return open_store(store_copy(e2e_source, tmp_path_factory.mktemp("interp") / "store.zarr"))


@pytest.fixture(scope="module")
def golden():
    return load_golden("e2e_interp")


@pytest.mark.parametrize("case", list(PARAMS["cases"]))
def test_interpolate_matches_abagen(store, golden, case):
    kw = dict(PARAMS["cases"][case])
    info = INFO if kw.pop("info", True) else None
    res = get_expression_data(store, ATLAS, info, return_counts=True, **FIXED, **kw)
    if kw.get("return_donors"):
        for d, frame in res.donors.items():
            check_frame(frame, golden, f"{case}@{d}")
    else:
        check_frame(res.expression, golden, case)
    # pseudo-samples are not counted
    np.testing.assert_array_equal(res.counts.to_numpy(), golden[f"{case}|counts"])


def test_interpolate_fills_what_none_leaves_empty(store):
    plain = get_expression_data(store, ATLAS, None, **FIXED)
    filled = get_expression_data(store, ATLAS, None, missing="interpolate", **FIXED)
    empty = plain.expression.isna().all(axis=1)
    assert empty.any()
    assert not filled.expression.isna().any().any()
    same = ~empty.to_numpy()
    genes = plain.expression.columns.intersection(filled.expression.columns)
    # regions with samples of every donor keep their values
    counts = get_expression_data(store, ATLAS, None, return_counts=True, **FIXED).counts
    full = (counts > 0).all(axis=1).to_numpy() & same
    np.testing.assert_allclose(filled.expression.loc[full, genes].to_numpy(),
                               plain.expression.loc[full, genes].to_numpy(), rtol=0, atol=0)


# ---- the fill against a dense reference ---------------------------------------------------
def _dense_reference(atlas, xyz, sample_labels, hemi, cls, info, x):
    """abagen's fill_label + _interpolate_missing with a full distance matrix."""
    _, node = atlas.tree.query(xyz, k=1)
    node_xyz = atlas.coords[node]
    node_lab = atlas.voxel_labels[node]
    out = {}
    for label in np.setdiff1d(atlas.labels, sample_labels):
        vox = atlas.coords[atlas.voxel_labels == label]
        d = np.sqrt(((vox[:, None, :] - node_xyz[None, :, :]) ** 2).sum(-1))
        if info is not None:
            ih = info.loc[node_lab, "hemisphere"].to_numpy()
            ic = info.loc[node_lab, "structure"].to_numpy()
            ok = np.where(ih == "B", ic == cls, (ic == cls) & (ih == hemi))
            ok &= (cls == info.loc[label, "structure"]) & (hemi == info.loc[label, "hemisphere"])
            d[:, ~ok] = np.inf
        closest = d.argmin(axis=1)
        dist = d[np.arange(len(d)), closest]
        if np.all(np.isinf(dist)):
            continue
        with np.errstate(divide="ignore"):
            w = 1.0 / dist
        w[dist == 0] = 1.0
        out[int(label)] = np.nansum(x[closest] * w[:, None], axis=0) / w.sum()
    return out


@pytest.mark.parametrize("with_info", [False, True])
def test_fill_matches_dense_distance_matrix(with_info):
    rng = np.random.default_rng(4)
    vol = np.zeros((14, 12, 10), dtype=np.int64)
    vol[1:13, 1:11, 1:9] = rng.integers(1, 9, size=(12, 10, 8))
    vol[2:5, 2:5, 2:5] = 9                       # a block label (many voxels)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-13.0, -11.0, -9.0]
    info = pd.DataFrame({"id": np.arange(1, 10),
                         "hemisphere": ["L", "R", "B", "L", "R", "L", "R", "B", "L"],
                         "structure": ["cortex", "cortex", "cortex", "subcortex/brainstem",
                                       "cortex", "cortex", "subcortex/brainstem", "cortex",
                                       "cortex"]})
    atlas = VolumeAtlas(vol, affine, info if with_info else None)
    n = 40
    # on-grid points (many exact distance ties) and off-grid ones
    xyz = atlas.coords[rng.choice(len(atlas.coords), n // 2, replace=False)]
    xyz = np.vstack([xyz, rng.uniform(-12, 12, size=(n - n // 2, 3))])
    hemi = rng.choice(["L", "R", "B"], size=n)
    cls = rng.choice(["cortex", "subcortex/brainstem"], size=n)
    lab = np.where(rng.random(n) < 0.5, 0, rng.choice([1, 2, 4, 6], size=n))
    x = rng.normal(size=(n, 5))
    x[3, 2] = np.nan
    fill = interpolation_fill(atlas, xyz, lab, hemi if with_info else None,
                              cls if with_info else None)
    ref = _dense_reference(atlas, xyz, lab, hemi, cls,
                           atlas.atlas_info if with_info else None, x)
    assert fill.labels.tolist() == sorted(ref)
    got = fill.values(x)
    for i, label in enumerate(fill.labels.tolist()):
        np.testing.assert_allclose(got[i], ref[label], rtol=1e-12, atol=1e-14)
    # any block of labels, samples fetched on demand, gives the same rows
    part = np.array([len(fill.labels) - 1, 0])
    np.testing.assert_array_equal(fill.rows(part, lambda idx: x[idx]), got[part])


@pytest.mark.parametrize("one_per_label", [True, False])
def test_fill_rows_equal_the_sparse_product(one_per_label):
    """Labels with one sample each take a gather path; it gives the sparse product's values
    bit for bit (NaN counted as 0, as abagen's weighted sum does)."""
    import scipy.sparse as sp

    from atlas_engine.pipeline.interpolate import InterpolationFill

    rng = np.random.default_rng(3)
    n_labels, n_samples, n_genes = 40, 25, 17
    x = rng.normal(size=(n_samples, n_genes))
    x[rng.random(x.shape) < 0.1] = np.nan
    per = 1 if one_per_label else 3
    cols = np.concatenate([np.sort(rng.choice(n_samples, per, replace=False))
                           for _ in range(n_labels)])
    data = rng.uniform(0.1, 2.0, len(cols))
    w = sp.csr_matrix((data, cols, np.arange(0, per * n_labels + 1, per)),
                      shape=(n_labels, n_samples))
    den = np.asarray(w.sum(axis=1)).reshape(-1)
    fill = InterpolationFill(np.arange(1, n_labels + 1), w, den)
    which = np.array([3, 4, 5, 9, 17, 30])
    got = fill.rows(which, lambda idx: x[idx])
    want = np.asarray(w[which] @ np.nan_to_num(x, nan=0.0)) / den[which][:, None]
    assert np.array_equal(got, want)
