"""The streamed regions × genes output (``get_expression_data(..., out=...)``): same numbers,
labels and genes as the in-memory path, xarray-readable, the gene drop computed without the
matrix, and the CLI writing ``-o X.zarr``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from _golden import store_copy
from click.testing import CliRunner

from atlas_engine import open_store
from atlas_engine.errors import ConfigError
from atlas_engine.pipeline import output as output_mod
from atlas_engine.pipeline.expression import get_expression_data
from atlas_engine.pipeline.matching import VolumeAtlas
from atlas_engine.pipeline.output import RegionStream
from atlas_engine.pipeline.regions import aggregate_samples

GOLDEN = Path(__file__).parent / "data" / "abagen_golden"
PARAMS = json.loads((GOLDEN / "e2e_interp_params.json").read_text())
ATLAS = str(GOLDEN / "e2e_interp_atlas.nii.gz")
INFO = str(GOLDEN / "e2e_interp_atlas_info.csv")
FIXED = dict(corrected_mni=False, reannotated=False)


@pytest.fixture(scope="module")
def store(e2e_source, tmp_path_factory):
    return open_store(store_copy(e2e_source, tmp_path_factory.mktemp("stream") / "store.zarr"))


def _same(streamed: xr.DataArray, frame: pd.DataFrame, exact: bool = True) -> None:
    got = streamed.to_pandas()
    assert streamed.dims == ("label", "gene_symbol")
    assert got.index.tolist() == frame.index.tolist()
    assert got.columns.tolist() == frame.columns.tolist()
    if exact:
        np.testing.assert_array_equal(got.to_numpy(), frame.to_numpy())
    else:
        np.testing.assert_allclose(got.to_numpy(), frame.to_numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kw", [
    {}, {"missing": "interpolate"}, {"missing": "centroids"},
    {"missing": "interpolate", "agg_metric": "median", "norm_matched": False},
    {"missing": "interpolate", "region_agg": "samples"},
    {"missing": "centroids", "region_agg": "samples", "gene_norm": "zscore"},
], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
@pytest.mark.parametrize("with_info", [True, False], ids=["info", "noinfo"])
def test_stream_equals_in_memory(store, tmp_path, kw, with_info):
    info = INFO if with_info else None
    mem = get_expression_data(store, ATLAS, info, **FIXED, **kw)
    out = tmp_path / "cube.zarr"
    res = get_expression_data(store, ATLAS, info, out=out, **FIXED, **kw)
    _same(res.expression, mem.expression, exact=kw.get("region_agg") != "samples")
    pd.testing.assert_frame_equal(res.genes, mem.genes)
    # xarray reads it back on its own, and nothing else is left next to it
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # no "consolidated metadata" warning either
        ds = xr.open_zarr(out)
    assert ds["expression"].shape == mem.expression.shape
    assert [p.name for p in tmp_path.iterdir()] == ["cube.zarr"]


def test_failed_stream_leaves_nothing(store, tmp_path, monkeypatch):
    """An error between two donors: neither the output nor the spilled donors stay behind."""
    calls = []

    def add_donor(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return original(self, *args, **kwargs)

    original = RegionStream.add_donor
    monkeypatch.setattr(RegionStream, "add_donor", add_donor)
    with pytest.raises(RuntimeError, match="interrupted"):
        get_expression_data(store, ATLAS, INFO, out=tmp_path / "cube.zarr", **FIXED)
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []


def test_voxel_atlas_stream_equals_in_memory(store, voxel_atlas_path, tmp_path, monkeypatch):
    # small blocks: many blocks of regions, each region block split across donors' fills
    monkeypatch.setattr(output_mod, "BLOCK_BYTES", 2000 * 8 * 60)
    for missing in (None, "interpolate", "centroids"):
        mem = get_expression_data(store, voxel_atlas_path, None, missing=missing, **FIXED)
        res = get_expression_data(store, voxel_atlas_path, None, missing=missing,
                                  out=tmp_path / "vox.zarr", dtype="float32", **FIXED)
        assert res.expression.dtype == np.float32
        assert res.expression.shape[0] > 1000
        got = res.expression.to_pandas()
        assert got.columns.tolist() == mem.expression.columns.tolist()
        np.testing.assert_array_equal(got.to_numpy(), mem.expression.to_numpy(np.float32))
        if missing is not None:
            assert not np.isnan(got.to_numpy()).any()


def test_gene_drop_without_the_matrix(tmp_path):
    """RegionStream against aggregate_samples on data with NaN patterns that drop genes."""
    rng = np.random.default_rng(11)
    vol = np.zeros((8, 8, 8), dtype=np.int64)
    vol[1:7, 1:7, 1:7] = rng.integers(1, 30, size=(6, 6, 6))
    atlas = VolumeAtlas(vol, np.eye(4))
    labels = np.unique(vol[vol > 0])
    n_genes = 23
    donors = []
    for _ in range(3):
        n = 25
        x = rng.normal(size=(n, n_genes))
        lab = rng.choice(np.concatenate([[0], labels[:12]]), size=n)
        x[rng.random(x.shape) < 0.15] = np.nan
        x[:, 5] = np.nan                       # NaN everywhere for this donor
        donors.append((x, lab))
    donors[0][0][:, 7] = np.nan                 # NaN in donor 0 only: kept (other donors)
    for agg, metric in (("donors", "mean"), ("donors", "median"), ("samples", "mean")):
        want = aggregate_samples([x for x, _ in donors], [lab for _, lab in donors], labels,
                                 region_agg=agg, agg_metric=metric)
        sink = RegionStream(tmp_path / f"{agg}{metric}.zarr", atlas, labels,
                            np.zeros(0, dtype=np.int64), n_genes, None, agg, metric)
        for x, lab in donors:
            sink.add_donor(np.ascontiguousarray(x.T), lab, np.zeros((len(lab), 3)),
                           np.full(len(lab), "L"), np.full(len(lab), "cortex"))
        assert not sink.keep_genes().all()
        np.testing.assert_array_equal(sink.keep_genes(), want.keep_genes)
        genes = np.asarray([f"g{i}" for i in range(n_genes)])
        arr, keep = sink.write(genes, np.float64)
        np.testing.assert_allclose(arr.to_numpy(), want.values, rtol=1e-12, atol=1e-15)
        assert arr["gene_symbol"].values.tolist() == genes[keep].tolist()
        assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_stream_refuses_return_donors(store, tmp_path):
    with pytest.raises(ConfigError, match="return_donors"):
        get_expression_data(store, ATLAS, INFO, return_donors=True, out=tmp_path / "x.zarr",
                            **FIXED)
    assert not (tmp_path / "x.zarr").exists()


def test_cli_writes_zarr(store, tmp_path):
    from atlas_engine.cli import cli

    out = tmp_path / "res" / "cube.zarr"
    result = CliRunner().invoke(cli, [
        "aggregate", str(store.url), "--by", f"atlas:{ATLAS}", "--atlas-info", INFO,
        "--missing", "interpolate", "--no-corrected-mni", "--no-reannotated", "-o", str(out),
        "--quiet"])
    assert result.exit_code == 0, result.output
    mem = get_expression_data(store, ATLAS, INFO, missing="interpolate", **FIXED)
    _same(xr.open_zarr(out, consolidated=False)["expression"], mem.expression)
    assert (tmp_path / "res" / "cube.genes.csv").exists()
    assert (tmp_path / "res" / "cube.provenance.json").exists()


def test_group_sums_of_pooled_samples_match_a_plain_loop():
    """The spill's per-region sums and counts of pooled samples (a numba kernel) against a
    plain numpy loop adding the samples in their order, NaN skipped, code -1 left out."""
    from atlas_engine.pipeline.output import _group_sums

    rng = np.random.default_rng(4)
    x = rng.normal(size=(70, 45))
    x[rng.random(x.shape) < 0.15] = np.nan
    x[3] = np.nan
    codes = rng.integers(-1, 6, size=45)
    codes[:2] = 5                         # a region holding the first samples
    want_s = np.zeros((6, 70))
    want_c = np.zeros((6, 70))
    for j in range(45):
        if codes[j] < 0:
            continue
        ok = ~np.isnan(x[:, j])
        want_s[codes[j], ok] += x[ok, j]
        want_c[codes[j], ok] += 1
    sums, counts = _group_sums(x, codes, 6)
    np.testing.assert_array_equal(sums, want_s)
    np.testing.assert_array_equal(counts, want_c)
