"""groupby_reduce: numpy path vs pandas oracle, Dask path vs numpy path, laziness, roll-up,
median, donors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas_engine.aggregate import specs
from atlas_engine.aggregate.engine import combine_donors, groupby_reduce
from atlas_engine.errors import ConfigError

STATS = ("mean", "sum", "count", "var", "std", "min", "max")


@contextlib.contextmanager
def raise_if_dask_computes() -> Iterator[None]:
    """Any compute inside the block fails (proves graph building is lazy)."""

    def scheduler(dsk, keys, **kwargs):
        raise RuntimeError("a Dask computation ran while building the graph")

    with dask.config.set(scheduler=scheduler):
        yield


def pandas_oracle(values, labels, n_groups, axis, ddof=1):
    frame = pd.DataFrame(values.astype(np.float64).T if axis == 1 else values.astype(np.float64))
    keep = labels >= 0
    g = frame[keep].groupby(labels[keep])
    idx = range(n_groups)
    res = {
        "mean": g.mean(), "sum": g.sum(min_count=1), "count": g.count(),
        "var": g.var(ddof=ddof), "std": g.std(ddof=ddof), "min": g.min(), "max": g.max(),
        "median": g.median(),
    }
    out = {}
    for k, r in res.items():
        a = r.reindex(idx).to_numpy(dtype=np.float64)
        if k == "count":
            a = np.nan_to_num(a)
        out[k] = a.T if axis == 1 else a
    return out


def random_case(seed, shape, n_groups, axis, dtype=np.float32, nan=0.2):
    rng = np.random.default_rng(seed)
    values = rng.normal(6.0, 1.5, shape).astype(dtype)
    values[rng.random(shape) < nan] = np.nan
    labels = rng.integers(-1, n_groups, shape[axis])
    return values, labels


def assert_results_close(got, exp, keys, rtol=1e-6):
    for k in keys:
        np.testing.assert_allclose(np.asarray(got[k], dtype=np.float64), exp[k], rtol=rtol,
                                   atol=1e-9, err_msg=k)


@pytest.mark.parametrize("axis", ["sample", "probe"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_numpy_path_matches_pandas(axis, ddof):
    ax = 1 if axis == "sample" else 0
    values, labels = random_case(1, (37, 53), 7, ax)
    res = groupby_reduce(values, labels, axis=axis, n_groups=9, stats=(*STATS, "median"),
                         ddof=ddof)
    exp = pandas_oracle(values, labels, 9, ax, ddof=ddof)
    assert res["count"].dtype == np.int64
    assert_results_close(res, exp, (*STATS, "median"))


def test_count_always_reported_and_unknown_stat_rejected():
    values, labels = random_case(2, (5, 6), 2, 1)
    assert set(groupby_reduce(values, labels, axis=1, stats="max")) == {"max", "count"}
    with pytest.raises(ConfigError, match="unknown statistic"):
        groupby_reduce(values, labels, axis=1, stats="mode")
    with pytest.raises(ConfigError, match="out of range"):
        groupby_reduce(values, labels, axis=1, n_groups=1)


@pytest.mark.parametrize("axis", [1, 0])
def test_dask_graph_is_lazy_and_matches_numpy(axis):
    values, labels = random_case(3, (61, 89), 6, axis)
    arr = da.from_array(values, chunks=(7, 13))
    with raise_if_dask_computes():
        lazy = groupby_reduce(arr, labels, axis=axis, n_groups=8, stats=STATS, split_every=3)
    assert all(isinstance(v, da.Array) for v in lazy.values())
    kept = arr.chunks[1 - axis]
    assert lazy["mean"].chunks == ((kept, (8,)) if axis == 1 else ((8,), kept))
    got = dask.compute(lazy, scheduler="threads")[0]
    exp = groupby_reduce(values, labels, axis=axis, n_groups=8, stats=STATS)
    for k in exp:
        np.testing.assert_allclose(got[k], exp[k], rtol=1e-6, err_msg=k)
        assert got[k].dtype == exp[k].dtype


def test_dask_median_requires_unchunked_group_axis():
    values, labels = random_case(4, (20, 30), 4, 1)
    with pytest.raises(ConfigError, match="rechunk"):
        groupby_reduce(da.from_array(values, chunks=(5, 10)), labels, axis=1, stats="median")
    res = groupby_reduce(da.from_array(values, chunks=(5, 30)), labels, axis=1, n_groups=4,
                         stats="median")
    np.testing.assert_allclose(res["median"].compute(), pandas_oracle(values, labels, 4, 1)["median"])


@st.composite
def dask_cases(draw):
    n_probe = draw(st.integers(1, 40))
    n_sample = draw(st.integers(1, 40))
    axis = draw(st.sampled_from([0, 1]))
    n_groups = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31))
    nan = draw(st.sampled_from([0.0, 0.3, 1.0]))
    cp = draw(st.integers(1, n_probe))
    cs = draw(st.integers(1, n_sample))
    split_every = draw(st.integers(2, 5))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return n_probe, n_sample, axis, n_groups, seed, nan, (cp, cs), split_every, dtype


@settings(max_examples=50, deadline=None)
@given(dask_cases())
def test_dask_property_any_chunking(case):
    n_probe, n_sample, axis, n_groups, seed, nan, chunks, split_every, dtype = case
    values, labels = random_case(seed, (n_probe, n_sample), n_groups, axis, dtype, nan)
    lazy = groupby_reduce(da.from_array(values, chunks=chunks), labels, axis=axis,
                          n_groups=n_groups, stats=STATS, split_every=split_every)
    got = dask.compute(lazy, scheduler="sync")[0]
    exp = pandas_oracle(values, labels, n_groups, axis)
    assert_results_close(got, exp, STATS, rtol=1e-6)


def test_membership_rollup_matches_direct_grouping():
    # 5 leaf labels; output groups: {0,1}, {2}, {0,1,2,3,4}, {} (empty), {3,4}
    member = np.zeros((5, 5), bool)
    member[[0, 1], 0] = True
    member[2, 1] = True
    member[:, 2] = True
    member[[3, 4], 4] = True
    values, labels = random_case(6, (23, 71), 5, 1)
    got = groupby_reduce(values, labels, axis=1, stats=(*STATS, "median"), membership=member)
    for k in range(member.shape[1]):
        in_group = np.where((labels >= 0) & member[np.maximum(labels, 0), k], 0, -1)
        exp = pandas_oracle(values, in_group, 1, 1)
        for stat in (*STATS, "median"):
            np.testing.assert_allclose(got[stat][:, k], exp[stat][:, 0], rtol=1e-6, atol=1e-9,
                                       err_msg=f"{stat} group {k}")
    lazy = groupby_reduce(da.from_array(values, chunks=(9, 20)), labels, axis=1, stats=STATS,
                          membership=member)
    for stat, arr in dask.compute(lazy)[0].items():
        np.testing.assert_allclose(arr, got[stat], rtol=1e-6, err_msg=stat)


def test_merge_pair_is_chan():
    rng = np.random.default_rng(8)
    a, b = rng.normal(3, 1, 17), rng.normal(5, 2, 9)

    def inter(x):
        return {"count": np.array(x.size), "sum": np.array(x.sum()),
                "m2": np.array(((x - x.mean()) ** 2).sum())}

    m = specs.merge_pair(inter(a), inter(b))
    both = np.concatenate([a, b])
    np.testing.assert_allclose(m["m2"], ((both - both.mean()) ** 2).sum())
    empty = {"count": np.array(0), "sum": np.array(0.0), "m2": np.array(0.0)}
    np.testing.assert_allclose(specs.merge_pair(empty, inter(b))["m2"], inter(b)["m2"])


def test_combine_donors_modes():
    donors = []
    for d in range(3):
        values, labels = random_case(20 + d, (11, 15 + d), 4, 1)
        if d == 2:
            labels[labels == 3] = -1  # donor 2 has no sample in group 3
        donors.append((values, labels))
    per = [groupby_reduce(v, lab, axis=1, n_groups=4, stats="mean") for v, lab in donors]
    means = np.stack([p["mean"] for p in per])
    counts = np.stack([p["count"] for p in per])

    comb = combine_donors(means, counts, "combined")
    exp = np.nanmean(np.where(counts > 0, means, np.nan), axis=0)
    np.testing.assert_allclose(comb["mean"], exp)
    np.testing.assert_array_equal(comb["n_donors"][:, 3], (counts[:, :, 3] > 0).sum(axis=0))

    pooled = combine_donors(means, counts, "pooled")
    allv = np.concatenate([v for v, _ in donors], axis=1)
    alll = np.concatenate([lab for _, lab in donors])
    np.testing.assert_allclose(pooled["mean"], pandas_oracle(allv, alll, 4, 1)["mean"], rtol=1e-9)
    np.testing.assert_array_equal(pooled["count"], counts.sum(axis=0))

    each = combine_donors(means, counts, "each")
    assert each["mean"].shape == means.shape

    lazy = combine_donors(da.from_array(means, chunks=(1, 5, 4)),
                          da.from_array(counts, chunks=(1, 5, 4)), "combined")
    np.testing.assert_allclose(lazy["mean"].compute(), exp)
    with pytest.raises(ConfigError, match="donor mode"):
        combine_donors(means, counts, "mixed")


def test_dask_many_groups_on_chunked_group_axis_are_reblocked(monkeypatch):
    """Probe blocks grouped into many genes: each block would yield full-size intermediates,
    so the engine regroups the array into whole probe columns; results still match numpy."""
    from atlas_engine.aggregate import engine

    monkeypatch.setattr(engine, "REBLOCK_BYTES", 1024)
    values, labels = random_case(4, (120, 40), 50, 0)
    arr = da.from_array(values, chunks=(10, 40))
    lazy = groupby_reduce(arr, labels, axis=0, n_groups=50, stats=("mean", "var"))
    assert lazy["mean"].chunks[0] == (50,)
    assert all(c <= 40 for c in lazy["mean"].chunks[1])
    got = dask.compute(lazy, scheduler="threads")[0]
    exp = groupby_reduce(values, labels, axis=0, n_groups=50, stats=("mean", "var"))
    for k in exp:
        np.testing.assert_allclose(got[k], exp[k], rtol=1e-9, err_msg=k)
    # few groups: blocks kept as they are (tree combine)
    small = groupby_reduce(arr, labels % 3, axis=0, n_groups=3, stats="mean")
    assert small["mean"].chunks[1] == (40,)


def test_mean_in_place_leaves_sum_when_asked_for():
    """numpy path: mean reuses the sum buffer only when sum is not itself requested."""
    values, labels = random_case(6, (30, 40), 5, 1)
    both = groupby_reduce(values, labels, axis=1, n_groups=5, stats=("sum", "mean"))
    alone = groupby_reduce(values, labels, axis=1, n_groups=5, stats="mean")
    with np.errstate(invalid="ignore", divide="ignore"):
        exp_mean = both["sum"] / both["count"]
    np.testing.assert_allclose(both["mean"], exp_mean, rtol=1e-12)
    np.testing.assert_allclose(alone["mean"], exp_mean, rtol=1e-12)
    assert not np.shares_memory(both["sum"], both["mean"])


def test_merge_moments_kernel_is_the_numpy_formula_bit_for_bit():
    """The numba merge (2-D float64, integer counts, also into the first operand) gives the
    numbers of the numpy expression it replaced."""
    rng = np.random.default_rng(9)
    g, w = 7, 33

    def part(n_max):
        count = rng.integers(0, n_max, (g, w))
        s = rng.normal(5, 3, (g, w)) * count
        m2 = np.abs(rng.normal(2, 1, (g, w))) * count
        return {"count": count, "sum": s, "m2": m2}

    a, b = part(6), part(4)
    na, nb = a["count"], b["count"]
    n = na + nb
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = b["sum"] / np.where(nb > 0, nb, 1) - a["sum"] / np.where(na > 0, na, 1)
        extra = np.where((na > 0) & (nb > 0),
                         delta * delta * (na * nb) / np.where(n > 0, n, 1), 0.0)
    want_m2 = a["m2"] + b["m2"] + extra
    got = specs.merge_pair(a, b)
    np.testing.assert_array_equal(got["m2"], want_m2)
    np.testing.assert_array_equal(got["sum"], a["sum"] + b["sum"])
    np.testing.assert_array_equal(got["count"], n)
    assert got["m2"] is not a["m2"]            # a new array by default
    own = {k: v.copy() for k, v in a.items()}
    into = specs.merge_pair(own, b, into=True)
    assert into["m2"] is own["m2"] and into["sum"] is own["sum"]
    np.testing.assert_array_equal(into["m2"], want_m2)
    # broadcast (stride-0) counts, as sparse blocks give: same numbers
    bc = {**a, "count": np.broadcast_to(a["count"][:, :1], (g, w))}
    bb = {**b, "count": np.broadcast_to(b["count"][:, :1], (g, w))}
    got = specs.merge_pair(bc, bb)
    full = specs.merge_pair({**bc, "count": np.ascontiguousarray(bc["count"])},
                            {**bb, "count": np.ascontiguousarray(bb["count"])})
    np.testing.assert_array_equal(got["m2"], full["m2"])
    assert got["count"].strides[1] == 0
