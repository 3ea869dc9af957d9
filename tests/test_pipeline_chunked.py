"""The store pipeline's block reads on any chunk layout: chunked-layout kernels against numpy,
striped cache matrices, and get_expression_data on a store with small chunks (many chunk
rows and columns) against abagen's golden output, cold and from the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _golden import load_golden

from atlas_engine.convert.donor import convert_microarray
from atlas_engine.kernels.blockgroups import group_mean_select, take_rows, weighted_true_count
from atlas_engine.pipeline.cache import StripedMatrix
from atlas_engine.pipeline.expression import get_expression_data

GOLDEN = Path(__file__).parent / "data" / "abagen_golden"
PARAMS = json.loads((GOLDEN / "e2e_params.json").read_text())


def _chunked(x: np.ndarray, cc: int) -> np.ndarray:
    """``x`` in the layout read_chunk_row gives: [column chunk, row, column in chunk]."""
    n_cc = -(-x.shape[1] // cc)
    out = np.full((n_cc, x.shape[0], cc), -7.0, dtype=x.dtype)  # past the edge: junk
    for j in range(n_cc):
        part = x[:, j * cc:(j + 1) * cc]
        out[j, :, :part.shape[1]] = part
    return out


def test_chunked_kernels_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 23))
    x[rng.random(x.shape) < 0.1] = np.nan
    blk = _chunked(x, 10)
    rows = np.array([5, 0, 39, 5, 17])
    cols = np.array([22, 0, 3, 11, 11, 20, 9])                # repeats, any order
    codes = np.array([0, 2, 1, 0, 2, 2, 1])
    want = np.full((len(rows), 3), np.nan)
    for i, r in enumerate(rows):
        for g in range(3):
            v = x[r, cols[codes == g]]
            if (~np.isnan(v)).any():
                want[i, g] = np.nanmean(v)
    np.testing.assert_allclose(group_mean_select(blk, rows, cols, codes, 3), want,
                               rtol=1e-14, equal_nan=True)
    np.testing.assert_allclose(group_mean_select(x, rows, cols, codes, 3), want, rtol=1e-14,
                               equal_nan=True)
    flags = rng.random((40, 23)) < 0.4
    for weight in (rng.integers(0, 3, 23).astype(float), rng.random(23)):
        want_w = flags[rows].astype(float) @ weight
        for b in (flags, _chunked(flags, 10)):
            np.testing.assert_allclose(weighted_true_count(b, rows, weight), want_w,
                                       rtol=1e-14)
    out = np.zeros((7, 23))
    take_rows(blk, rows, np.array([6, 1, 2, 3, 4]), out)
    np.testing.assert_array_equal(out[[6, 1, 2, 3, 4]], x[rows])
    assert not out[[0, 5]].any()


def test_striped_matrix_reads_rows(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 17))
    for j, (c0, c1) in enumerate([(0, 8), (8, 16), (16, 17)]):
        np.save(tmp_path / f"m_{j}.npy", x[:, c0:c1])
    m = StripedMatrix.open(tmp_path, "m")
    assert m.shape == (30, 17) and len(m) == 30
    np.testing.assert_array_equal(np.asarray(m), x)
    np.testing.assert_array_equal(m[3:11], x[3:11])
    np.testing.assert_array_equal(m[4, [16, 0, 9]], x[4, [16, 0, 9]])
    np.testing.assert_array_equal(m[:, [2, 15]], x[:, [2, 15]])
    np.testing.assert_array_equal(m.read_rows(28, 40), x[28:])
    cols = np.array([16, 0, 9, 9, 3, 8])      # across stripes, out of order, repeated
    out = np.full((8, len(cols)), np.nan)
    np.testing.assert_array_equal(m.gather_rows(5, 13, cols, out), x[5:13][:, cols])
    with pytest.raises(ValueError, match="shape"):
        m.gather_rows(5, 14, cols, out)
    stripe = tmp_path / "m_1.npy"                  # a stripe cut short: refused, not padded,
    stripe.write_bytes(stripe.read_bytes()[:-100])  # as a damaged entry (recomputed)
    from atlas_engine.errors import DamagedCacheError

    with pytest.raises(DamagedCacheError, match=r"m_1.npy: ends before byte \d+ \(truncated\)"):
        m.gather_rows(20, 30, cols, np.empty((10, len(cols))))
    with pytest.raises(DamagedCacheError, match="m_1.npy: .*truncated"):
        m.read_rows(20, 30)
    with pytest.raises(KeyError):
        StripedMatrix.open(tmp_path, "other")



def test_stripe_checks_catch_damage_where_it_is_read(tmp_path, monkeypatch):
    """Stripes written by save_stripe carry a CRC-32C per segment of rows: every read checks
    the segments it covers, a damaged one is refused with its file and rows, and the entry's
    load (commit → load) checks sizes and headers only."""
    import atlas_engine.pipeline.cache as cache_mod
    from atlas_engine.errors import DamagedCacheError
    from atlas_engine.pipeline.cache import StoreCache, save_stripe

    monkeypatch.setattr(cache_mod, "SEGMENT_BYTES", 5 * 8 * 8)   # 5 rows of the widest stripe
    rng = np.random.default_rng(11)
    x = rng.normal(size=(37, 17))
    store = StoreCache(str(tmp_path), {"attrs": {}})
    key = store.key("samplenorm", {"a": 1})
    w = store.writer(key)
    for j, (c0, c1) in enumerate([(0, 8), (8, 16), (16, 17)]):
        checks = save_stripe(w.tmp / f"m_{j}.npy", x[:, c0:c1])
        np.testing.assert_array_equal(np.load(w.tmp / f"m_{j}.npy"), x[:, c0:c1])  # = np.save
        assert checks["segment_rows"] == (5 if j < 2 else 40)
        w.record(f"m_{j}.npy", checks)
    assert w.commit({"params": {}})
    entry = store.load(key)
    m = entry.striped("m")
    cols = np.array([16, 0, 9, 9, 3, 8])
    for r0, r1 in [(0, 37), (3, 11), (5, 10), (36, 37), (12, 13)]:
        np.testing.assert_array_equal(m.read_rows(r0, r1), x[r0:r1])
        out = np.empty((r1 - r0, len(cols)))
        np.testing.assert_array_equal(m.gather_rows(r0, r1, cols, out), x[r0:r1][:, cols])

    f = entry.path / "m_1.npy"
    data = bytearray(f.read_bytes())
    offset = len(data) - x.shape[0] * 8 * 8
    data[offset + 22 * 8 * 8 + 3] ^= 0x10           # a bit of row 22 of stripe 1
    f.write_bytes(bytes(data))
    assert store.load(key) is not None                # size and header still right
    m = store.load(key).striped("m")
    np.testing.assert_array_equal(m.read_rows(0, 20), x[:20])   # segments before it: fine
    np.testing.assert_array_equal(m.gather_rows(0, 37, np.array([0, 16]), np.empty((37, 2))),
                                  x[:, [0, 16]])                 # stripe 1 not read: fine
    with pytest.raises(DamagedCacheError, match=r"m_1.npy: rows 20–25 fail their CRC-32C"):
        m.read_rows(21, 23)
    with pytest.raises(DamagedCacheError, match="m_1.npy"):
        m.gather_rows(18, 30, cols, np.empty((12, len(cols))))

    with pytest.raises(DamagedCacheError, match="m_1.npy: rows 20–25 fail their CRC-32C"):
        store.load(key)["m_1"]                        # a whole stripe read checks it all
    np.testing.assert_array_equal(store.load(key)["m_0"], x[:, :8])

    data[offset + 22 * 8 * 8 + 3] ^= 0x10
    data[10] ^= 0x01                                  # the header
    f.write_bytes(bytes(data))
    assert store.load(key) is None and not (tmp_path / "cache" / key).exists()


def test_stripe_checks_refuse_a_file_that_does_not_match_them(tmp_path):
    from atlas_engine.errors import DamagedCacheError
    from atlas_engine.pipeline.cache import save_stripe

    x = np.arange(60.0).reshape(20, 3)
    checks = {"m_0.npy": save_stripe(tmp_path / "m_0.npy", x)}
    f = tmp_path / "m_0.npy"
    f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(DamagedCacheError, match="m_0.npy: size or header differs"):
        StripedMatrix.open(tmp_path, "m", checks)
    save_stripe(f, x)
    with pytest.raises(DamagedCacheError, match="m_0.npy: bad checks"):
        StripedMatrix.open(tmp_path, "m", {"m_0.npy": {"size": 1}})

@pytest.fixture(scope="module")
def small_chunks(e2e_source, tmp_path_factory):
    root = tmp_path_factory.mktemp("chunks")
    convert_microarray(e2e_source["raw"], root / "store.zarr", dtype="float64", probe_chunk=96,
                       sample_chunk=7)
    return root / "store.zarr"


ATLAS = str(GOLDEN / "e2e_atlas.nii.gz")
INFO = str(GOLDEN / "e2e_atlas_info.csv")


@pytest.fixture(scope="module")
def golden():
    return load_golden("e2e")


@pytest.mark.parametrize("case", ["defaults", "mirror", "max_variance", "norm_structures",
                                  "centroids", "zscore_minmax"])
def test_small_chunks_match_abagen_cold_and_cached(small_chunks, golden, case):
    kw = PARAMS["cases"][case]
    for computed in (True, False):      # the second call reads the cached sample norm
        if computed:
            shutil.rmtree(small_chunks / "cache", ignore_errors=True)
        res = get_expression_data(str(small_chunks), ATLAS, INFO, corrected_mni=False,
                                  reannotated=False, **kw)
        assert res.computed["sample_norm"] is computed
        assert list(res.expression.index) == golden[f"{case}|labels"].tolist()
        assert list(res.expression.columns) == golden[f"{case}|genes"].tolist()
        np.testing.assert_allclose(res.expression.to_numpy(), golden[f"{case}|values"],
                                   rtol=0, atol=1e-6, equal_nan=True)
