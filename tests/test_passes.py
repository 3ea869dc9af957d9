"""The pipeline's Dask passes over a store (atlas_engine.pipeline.passes) and the block
reader they share (store.blockread.BlockArray), each against plain numpy on the same arrays
read through zarr."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from atlas_engine.aggregate import rowtasks
from atlas_engine.convert.donor import convert_microarray
from atlas_engine.pipeline import matrix_passes, passes
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
    np.testing.assert_allclose(matrix_passes.srs_rows(x, cols), want_rows, rtol=0, atol=1e-12)
    np.testing.assert_allclose(matrix_passes.srs_columns(x), normalize(x, "srs", axis=0), rtol=0,
                               atol=1e-12)
    codes = rng.integers(-1, 6, len(cols))
    means = matrix_passes.srs_rows(x, cols, codes, 6)
    for g in range(6):
        np.testing.assert_allclose(means[:, g], want_rows[:, codes == g].mean(axis=1),
                                   rtol=1e-12)


# --------------------------------------------------------------------------------------------
# the tasks over blocks of columns / genes give the values of one call on the whole matrix
# --------------------------------------------------------------------------------------------
def _bits_equal(got: np.ndarray, want: np.ndarray) -> None:
    """Same shape and the same float64 values bit for bit (NaN where NaN)."""
    assert got.shape == want.shape and got.dtype == want.dtype == np.float64
    np.testing.assert_array_equal(got, want)
    assert (np.signbit(got) == np.signbit(want))[~np.isnan(want)].all()   # zeros too


def _fill(rng, n_labels: int, n_samples: int, one_per_label: bool):
    import scipy.sparse as sp

    from atlas_engine.pipeline.interpolate import InterpolationFill

    per = 1 if one_per_label else 3
    rows = np.repeat(np.arange(n_labels), per)
    cols = rng.integers(0, n_samples, len(rows))
    w = sp.coo_matrix((rng.uniform(0.1, 2.0, len(rows)), (rows, cols)),
                      shape=(n_labels, n_samples)).tocsr()
    w.sum_duplicates()
    w.sort_indices()
    return InterpolationFill(np.arange(100, 100 + n_labels), w,
                             np.asarray(w.sum(axis=1)).reshape(-1))


def test_sample_normalise_tasks_equal_one_call(monkeypatch):
    from atlas_engine.pipeline.donor_norm import sample_normalise
    from atlas_engine.pipeline.normalize import NORMALIZERS

    rng = np.random.default_rng(8)
    raw = rng.normal(8, 2, size=(300, 61))
    raw[:, 4] = 3.0                                 # a constant sample (zero IQR)
    # a block of 8 columns a task: the last block would hold one column alone
    monkeypatch.setattr(matrix_passes, "TASK_BYTES", 8 * 300 * 6)
    for method in NORMALIZERS.names():
        if method == "srs":
            continue
        with np.errstate(all="ignore"):
            want = normalize(raw, method, axis=0)
        _bits_equal(sample_normalise(raw.copy(), method), want)
    held = raw.copy()
    held[3, 7] = np.nan                             # NaN: one task for the whole matrix
    _bits_equal(sample_normalise(held, "zscore"), normalize(held, "zscore", axis=0))


def test_normalize_blocks_tasks_equal_the_block_loop():
    from atlas_engine.pipeline.donor_norm import normalize_blocks
    from atlas_engine.pipeline.normalize import normalize_donor

    rng = np.random.default_rng(9)
    x = rng.normal(8, 2, size=(70, 45))
    x[rng.random(x.shape) < 0.02] = np.nan
    x[5] = np.nan
    x[:, 7] = np.nan
    classes = rng.choice(np.array(["a", "b"]), len(x))
    for sn, gn, cls in (("zscore", "rs", None), ("center", "minmax", classes),
                        (None, "srs", classes)):
        want = x.copy()
        with np.errstate(all="ignore"):
            if sn is not None:
                for a in range(0, len(want), 2):
                    want[a:a + 2] = normalize_donor(want[a:a + 2], sn, None)
            for a in range(0, want.shape[1], 16):
                want[:, a:a + 16] = normalize_donor(want[:, a:a + 16], None, gn, cls)
            got = normalize_blocks(x.copy(), sn, gn, cls, block=16)
        _bits_equal(got, want)


@pytest.mark.parametrize("one_per_label", [True, False])
def test_region_tasks_equal_whole_matrix(monkeypatch, one_per_label):
    from atlas_engine.kernels.blockgroups import group_mean_rows, nanmean_stack
    from atlas_engine.pipeline import regions
    from atlas_engine.pipeline.interpolate import pooled_with_pseudo, with_pseudo

    rng = np.random.default_rng(10)
    n_samples, n_genes = 90, 77
    xg = rng.normal(size=(n_genes, n_samples))
    xg[rng.random(xg.shape) < 0.05] = np.nan
    xg[3] = np.nan
    x = xg.T
    all_labels = np.arange(1, 30)
    lab = rng.choice(np.concatenate([[0], all_labels[:20]]), n_samples)
    fill = _fill(rng, 9, n_samples, one_per_label)
    fill = type(fill)(all_labels[20:29], fill.weights, fill.denominator)
    codes = np.searchsorted(all_labels, lab)
    codes = np.where(lab == 0, -1, codes)
    # a few genes a task, the last block not a single gene
    monkeypatch.setattr(matrix_passes, "TASK_BYTES", 8 * n_samples * 5)
    _bits_equal(matrix_passes.group_means(xg, codes, all_labels, fill),
                with_pseudo(group_mean_rows(xg, codes, len(all_labels)).T, fill, x,
                            all_labels))
    for metric in ("mean", "median"):
        _bits_equal(matrix_passes.region_values(x, lab, all_labels, metric, fill),
                    with_pseudo(regions.region_values(x, lab, all_labels, metric), fill, x,
                                all_labels))
        _bits_equal(matrix_passes.region_values(x, lab, all_labels, metric),
                    regions.region_values(x, lab, all_labels, metric))
    got, got_lab = matrix_passes.pooled_samples(x, lab, fill)
    want, want_lab = pooled_with_pseudo(x, lab, fill)
    _bits_equal(got, want)
    np.testing.assert_array_equal(got_lab, want_lab)
    per = [regions.region_values(x[k::3], lab[k::3], all_labels) for k in range(3)]
    _bits_equal(matrix_passes.combine_donors(per, "mean"), nanmean_stack(per))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanmedian(np.stack(per), axis=0)
    _bits_equal(matrix_passes.combine_donors(per, "median"), want)
    _bits_equal(regions.combine_donors(per, "median"), want)


def test_gene_means_reduce_in_the_tasks_as_the_whole_kernel(store):
    from atlas_engine.aggregate.engine import groupby_reduce

    donor = _donors(store)[1]
    arr = rowtasks.open_array(str(store), donor, L.EXPRESSION)
    rng = np.random.default_rng(12)
    rows = rng.integers(0, arr.shape[0], 200)           # any order, repeats allowed
    codes = rng.integers(0, 30, len(rows))
    # the former pass: every chunk row read, then reduced by the (parallel) kernel in order
    jobs, order, tasks = rowtasks.row_tasks(arr, rows)
    sums = np.zeros((32, arr.shape[1]))
    counts = np.zeros((32, arr.shape[1]))
    for (_, _, lo, hi), block in zip(jobs, rowtasks.compute(tasks), strict=True):
        res = groupby_reduce(block, codes[order[lo:hi]], axis="probe", n_groups=32,
                             stats=("sum",))
        sums += np.where(res["count"] > 0, res["sum"], 0.0)
        counts += res["count"]
    assert len(jobs) > 1
    with np.errstate(invalid="ignore", divide="ignore"):
        _bits_equal(passes.gene_means(arr, rows, codes, 32), sums / counts)


def test_nanmean_stack_kernel_is_serial():
    from atlas_engine.kernels import blockgroups

    assert not blockgroups._nanmean_stack.targetoptions.get("parallel")
