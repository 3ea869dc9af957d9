"""The pipeline's Dask passes over a store (atlas_engine.pipeline.passes) and the block
reader they share (store.blockread.BlockArray), each against plain numpy on the same arrays
read through zarr."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from atlas_engine.aggregate import rowtasks
from atlas_engine.convert.donor import convert_microarray
from atlas_engine.pipeline import passes
from atlas_engine.pipeline.normalize import normalize
from atlas_engine.store import layout as L
from atlas_engine.store.blockread import BlockArray, release_buffers, thread_buffer


@pytest.fixture(scope="module")
def store(synth_small, tmp_path_factory):
    path = tmp_path_factory.mktemp("passes") / "s.zarr"
    convert_microarray(synth_small.dest, path, probe_chunk=64, sample_chunk=8)
    return path


def _donors(store):
    root = zarr.open_group(str(store), mode="r")
    return sorted(int(k) for k in root["donors"].group_keys())


def _zarr(store, donor, name):
    return np.asarray(zarr.open_array(str(store), path=f"{L.donor_path(donor)}/{name}",
                                      mode="r")[...])


def test_block_array_reads_chunk_rows_and_chunks(store):
    donor = _donors(store)[0]
    want = _zarr(store, donor, L.EXPRESSION)
    arr = BlockArray.open(str(store), f"{L.donor_path(donor)}/{L.EXPRESSION}")
    assert arr.shape == want.shape and arr.chunks == (64, 8)
    cr, cc = arr.chunks
    for a, b in arr.blocks():
        block = arr.read(a, b)               # [column chunk, row, column in chunk]
        got = np.concatenate(list(block), axis=1)[:b - a, :arr.shape[1]]
        np.testing.assert_array_equal(got, want[a:b])
        for j, (c0, c1) in enumerate(arr.column_chunks()):
            np.testing.assert_array_equal(arr.read_chunk(a, j)[0, :b - a, :c1 - c0],
                                          want[a:b, c0:c1])
    with pytest.raises(ValueError, match="not one chunk row"):
        arr.read(1, cr)
    rows = np.array([3, 70, 71, 200])
    jobs = arr.row_jobs(rows)
    assert [(lo, hi) for _, _, lo, hi in jobs] == [(0, 1), (1, 3), (3, 4)]


def test_thread_buffers_are_reused_until_released():
    a = thread_buffer("t", (4, 5), np.float64)
    b = thread_buffer("t", (2, 3), np.float64)
    assert np.shares_memory(a, b)
    release_buffers()
    c = thread_buffer("t", (2, 3), np.float64)
    assert not np.shares_memory(a, c)


def test_read_rows_any_order_with_repeats(store):
    donor = _donors(store)[-1]
    want = _zarr(store, donor, L.EXPRESSION)
    rng = np.random.default_rng(7)
    rows = rng.integers(0, want.shape[0], 150)
    got = rowtasks.read_rows(rowtasks.open_array(str(store), donor, L.EXPRESSION), rows)
    np.testing.assert_array_equal(got, want[rows].astype(np.float64))


def test_ibf_signal_is_the_weighted_pacall_count(store):
    donors = _donors(store)
    rng = np.random.default_rng(11)
    srcs, wants = [], []
    calls = [_zarr(store, d, L.PACALL) for d in donors]
    rows = rng.permutation(calls[0].shape[0])[:100]
    for c in calls:
        src = np.sort(rng.integers(0, c.shape[1], c.shape[1] // 2))  # repeats count twice
        srcs.append(src)
        wants.append(c[rows][:, src].sum(axis=1).astype(np.float64))
    got = passes.ibf_signal(str(store), donors, srcs, rows)
    for g, w in zip(got, wants, strict=True):
        np.testing.assert_array_equal(g, w)


def test_probe_moments_and_gene_means(store):
    donor = _donors(store)[0]
    x = _zarr(store, donor, L.EXPRESSION).astype(np.float64)
    rng = np.random.default_rng(3)
    rows = rng.permutation(x.shape[0])[:90]
    src = np.arange(0, x.shape[1], 2)
    (count, mean, var), = passes.probe_moments(str(store), [donor], [src], rows)
    sub = x[rows][:, src]
    np.testing.assert_array_equal(count, np.sum(~np.isnan(sub), axis=1))
    np.testing.assert_allclose(mean, np.nanmean(sub, axis=1), rtol=1e-12)
    np.testing.assert_allclose(var, np.nanvar(sub, axis=1, ddof=1), rtol=1e-10)
    codes = rng.integers(0, 20, len(rows))
    got = passes.gene_means(rowtasks.open_array(str(store), donor, L.EXPRESSION), rows, codes, 20)
    for g in range(20):
        np.testing.assert_allclose(got[g], np.nanmean(x[rows[codes == g]], axis=0)
                                   if (codes == g).any() else np.full(x.shape[1], np.nan),
                                   rtol=1e-12, equal_nan=True)


def test_srs_tasks_match_numpy():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 40))
    cols = rng.integers(0, 40, 55)
    want_rows = normalize(x[:, cols], "srs", axis=1)
    np.testing.assert_allclose(passes.srs_rows(x, cols), want_rows, rtol=0, atol=1e-12)
    np.testing.assert_allclose(passes.srs_columns(x), normalize(x, "srs", axis=0), rtol=0,
                               atol=1e-12)
    codes = rng.integers(-1, 6, len(cols))
    means = passes.srs_rows(x, cols, codes, 6)
    for g in range(6):
        np.testing.assert_allclose(means[:, g], want_rows[:, codes == g].mean(axis=1),
                                   rtol=1e-12)
