"""get_expression_data on a converted store: end-to-end parity with abagen 0.1.3, caching,
explanation tables, reannotation / corrected-MNI joins and the CLI glue.

The end-to-end golden (tests/data/abagen_golden/e2e*.{npz,nii.gz,csv,json}) was written by
benchmarks/abagen_oracle/make_e2e_golden.py; the data are regenerated here with synth from the
saved parameters and converted to a float64 store.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest
from _golden import check_frame, load_golden, store_copy
from click.testing import CliRunner

from atlas_engine import open_store
from atlas_engine.cli.atlas_options import abagen_options, run_atlas_aggregate
from atlas_engine.errors import ConfigError
from atlas_engine.pipeline.cache import StoreCache
from atlas_engine.pipeline.expression import get_expression_data
from atlas_engine.pipeline.reannotate import reannotate_probes
from atlas_engine.pipeline.samples import corrected_coordinates

GOLDEN = Path(__file__).parent / "data" / "abagen_golden"
PARAMS = json.loads((GOLDEN / "e2e_params.json").read_text())
ATLAS = str(GOLDEN / "e2e_atlas.nii.gz")
INFO = str(GOLDEN / "e2e_atlas_info.csv")
FIXED = dict(corrected_mni=False, reannotated=False)


@pytest.fixture(scope="module")
def e2e(e2e_source, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    return {"store": open_store(store_copy(e2e_source, root / "store.zarr")),
            "raw": e2e_source["raw"], "synth": e2e_source["synth"]}


@pytest.fixture(scope="module")
def golden():
    return load_golden("e2e")


@pytest.mark.parametrize("case", list(PARAMS["cases"]))
def test_matches_abagen_end_to_end(e2e, golden, case):
    kw = PARAMS["cases"][case]
    res = get_expression_data(e2e["store"], ATLAS, INFO, return_counts=True, **FIXED, **kw)
    if kw.get("return_donors"):
        assert res.donors is not None and len(res.donors) == 6
        for d, frame in res.donors.items():
            check_frame(frame, golden, f"{case}@{d}")
    else:
        check_frame(res.expression, golden, case)
    np.testing.assert_array_equal(res.counts.to_numpy(), golden[f"{case}|counts"])
    assert res.counts.columns.tolist() == golden[f"{case}|count_donors"].tolist()


def test_second_atlas_reuses_cached_selection(e2e, tmp_path):
    st = e2e["store"]
    opts = dict(ibf_threshold=0.35, probe_selection="max_variance", **FIXED)
    first = get_expression_data(st, ATLAS, INFO, **opts)
    assert first.computed == {"ibf": True, "selection": True, "rows": True,
                              "sample_norm": True}
    # a second atlas: every label shifted, no region info
    import nibabel as nib

    img = nib.load(ATLAS)
    vol = np.asarray(img.dataobj).astype(np.int32)
    vol[vol > 0] += 100
    second_path = tmp_path / "second.nii.gz"
    nib.save(nib.Nifti1Image(vol, img.affine), str(second_path))
    second = get_expression_data(st, str(second_path), None, **opts)
    assert second.computed == {"ibf": False, "selection": False, "rows": False,
                               "sample_norm": False}
    fresh = get_expression_data(st, str(second_path), None, cache=False, **opts)
    assert fresh.computed["selection"] is True
    pd.testing.assert_frame_equal(second.expression, fresh.expression, check_exact=True)
    # another sample normalisation: same selection; rows re-read and normalised once
    for norm, rows, new in (("zscore", True, True), (None, True, False), (None, False, False),
                            ("zscore", False, False)):
        other = get_expression_data(st, str(second_path), None, sample_norm=norm, **opts)
        want = {"ibf": False, "selection": False, "rows": rows, "sample_norm": new}
        assert other.computed == want, norm
        plain = get_expression_data(st, str(second_path), None, sample_norm=norm,
                                    cache=False, **opts)
        pd.testing.assert_frame_equal(other.expression, plain.expression, check_exact=True)
    assert second.expression.index.min() > 100
    # other parameters miss the cache
    third = get_expression_data(st, ATLAS, INFO, ibf_threshold=0.36,
                                probe_selection="max_variance", **FIXED)
    assert third.computed["selection"] is True
    cache = StoreCache(st.url, {})
    assert len(cache.entries()) >= 2
    assert not any(p.name.startswith(".tmp") for p in (Path(st.url) / "cache").iterdir())


def _raw_pacall(raw: Path) -> dict[int, pd.DataFrame]:
    out = {}
    for z in sorted(raw.glob("normalized_microarray_donor*.zip")):
        donor = int(z.stem.replace("normalized_microarray_donor", ""))
        with zipfile.ZipFile(z) as zf:
            out[donor] = pd.read_csv(zf.open("PACall.csv"), header=None, index_col=0)
    return out


def test_explanations_against_raw_files(e2e):
    st, synth = e2e["store"], e2e["synth"]
    res = get_expression_data(st, ATLAS, INFO, **FIXED)
    probes = res.probes
    assert len(probes) == len(st.probes)
    assert probes["reason"].map(bool).all()
    # IBF fraction recomputed from the raw PACall CSVs over the samples kept by QC
    kept = res.samples[res.samples["status"] != "dropped"]
    pac = _raw_pacall(e2e["raw"])
    signal = sum(pac[d].iloc[:, (kept[kept.donor == d]["sample_id"] - 1).to_numpy()].sum(axis=1)
                 for d in pac)
    frac = signal / len(kept)
    usable = probes["ibf_fraction"].notna().to_numpy()
    np.testing.assert_allclose(probes.loc[usable, "ibf_fraction"].to_numpy(),
                               frac.loc[probes.loc[usable, "probe_id"]].to_numpy())
    assert (probes.loc[usable, "ibf_kept"] == (probes.loc[usable, "ibf_fraction"] >= 0.5)).all()
    no_entrez = ~usable
    assert probes.loc[no_entrez, "reason"].str.contains("Entrez").all()
    # genes: the kept ones are exactly the output columns; every drop has a reason
    genes = res.genes.set_index("gene_symbol")
    assert sorted(genes.index[genes.status == "kept"]) == sorted(res.expression.columns)
    dropped = genes[genes.status == "dropped"]
    assert len(dropped) > 0 and (dropped.reason != "unknown").all()
    lost_ibf = (dropped.n_probes_ibf == 0) & (dropped.n_probes > 0)
    assert lost_ibf.any()
    assert (dropped.loc[lost_ibf, "reason"] == "no probe passed the intensity filter").all()
    assert (dropped.loc[dropped.n_probes == 0, "reason"] == "no Entrez id").all()
    # each kept gene's chosen probe is selected in the probe table
    sel = set(probes.loc[probes.selected, "probe_id"])
    assert set(genes.loc[genes.status == "kept", "selected_probe_id"].astype(int)) <= sel
    # samples: the mismatches the generator reports are the hemisphere drops
    smp = res.samples
    for donor, rows in synth.mismatches.items():
        got = smp[(smp.donor == donor) & smp.reason.str.contains("hemisphere mismatch")]
        assert sorted(got["sample_id"] - 1) == sorted(rows)
    matched = smp[smp.status == "matched"]
    assert (matched["label"] > 0).all()
    counts = get_expression_data(st, ATLAS, INFO, return_counts=True, **FIXED).counts
    assert counts.to_numpy().sum() == len(matched)
    unmatched = smp[smp.status == "unmatched"]
    assert len(unmatched) and unmatched.reason.str.startswith("unmatched:").all()
    text = res.methods()
    assert "intensity above background in fewer than 50%" in text and "differential" in text
    prov = json.loads(json.dumps(res.provenance(), default=str))
    assert prov["params"]["probe_selection"] == "diff_stability"
    assert prov["counts"]["genes_kept"] == res.expression.shape[1]
    assert prov["store"]["url"] == st.url


def test_corrected_mni_applies_to_generated_well_ids(e2e):
    # the generated samples carry real well ids: the corrected coordinates replace theirs
    res = get_expression_data(e2e["store"], ATLAS, INFO, reannotated=False)
    assert res.samples["status"].eq("matched").any()


def test_bad_options(e2e):
    with pytest.raises(ConfigError, match="rnaseq"):
        get_expression_data(e2e["store"], ATLAS, INFO, probe_selection="rnaseq", **FIXED)
    with pytest.raises(ConfigError, match="return_donors"):
        get_expression_data(e2e["store"], ATLAS, INFO, region_agg="samples",
                            return_donors=True, **FIXED)
    with pytest.raises(ConfigError, match="not in the store"):
        get_expression_data(e2e["store"], ATLAS, INFO, donors=[1], **FIXED)
    for k in ("sample_norm", "gene_norm"):
        with pytest.raises(ConfigError, match="batch_correct"):
            get_expression_data(e2e["store"], ATLAS, INFO, **{k: "batch"}, **FIXED)


def test_reannotation_join():
    probes = pd.DataFrame({"probe_id": [30, 10, 20, 40],
                           "probe_name": ["p3", "p1", "p2", "p4"],
                           "gene_symbol": ["A", "B", "C", "D"],
                           "entrez_id": [1, 2, 3, 4], "chromosome": ["1", "2", "3", "4"]})
    table = pd.DataFrame({"probe_name": ["p1", "p2", "p3", "p9"],
                          "gene_symbol": ["X", "Y", "Z", "W"],
                          "entrez_id": [100.0, np.nan, 300.0, 900.0]})
    out = reannotate_probes(probes, table)
    assert out["probe_id"].tolist() == [10, 30]          # p2: no Entrez; p4: not in table
    assert out["gene_symbol"].tolist() == ["X", "Z"]
    assert out["entrez_id"].tolist() == [100, 300]
    assert out["chromosome"].tolist() == ["2", "1"]


def test_bundled_tables_cover_real_ids():
    real = reannotate_probes(pd.DataFrame({"probe_id": [1, 2], "probe_name":
                                           ["A_23_P20713", "not-a-probe"]}))
    assert real["probe_id"].tolist() == [1]
    ann = pd.DataFrame({"well_id": [126439333, 5], "mni_x": [0.0, 1.0], "mni_y": [0.0, 1.0],
                        "mni_z": [0.0, 1.0]})
    with pytest.raises(ConfigError, match=r"1 well id\(s\).*: 5;"):
        corrected_coordinates(ann)
    fixed = corrected_coordinates(ann.iloc[:1])
    assert fixed.loc[0, "mni_x"] == pytest.approx(-13.467692624176099)


def test_corrected_coordinates_join():
    table = pd.DataFrame({"mni_x": [1.0, 2.0], "mni_y": [3.0, 4.0], "mni_z": [5.0, 6.0]},
                         index=pd.Index([7, 8], name="well_id"))
    ann = pd.DataFrame({"well_id": [8, 7, 8], "mni_x": [0.0] * 3, "mni_y": [0.0] * 3,
                        "mni_z": [0.0] * 3, "other": ["a", "b", "c"]})
    out = corrected_coordinates(ann, table)
    assert out[["mni_x", "mni_y", "mni_z"]].to_numpy().tolist() == [[2, 4, 6], [1, 3, 5],
                                                                      [2, 4, 6]]
    assert out["other"].tolist() == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="9"):
        corrected_coordinates(pd.concat([ann, ann.assign(well_id=9)]), table)


@pytest.mark.filterwarnings("error::FutureWarning")  # pandas' downcasting warnings reach users
def test_cli_glue(e2e, tmp_path, golden):
    @click.command()
    @click.argument("store")
    @abagen_options
    def cmd(store, **opts):
        out = run_atlas_aggregate(store, ATLAS, INFO, str(tmp_path / "res.csv"), "all", True,
                                  **opts)
        click.echo(json.dumps(out))

    result = CliRunner().invoke(cmd, [e2e["store"].url, "--no-corrected-mni", "--no-reannotated",
                                      "--probe-selection", "max_variance", "--return-counts",
                                      "--sample-norm", "srs"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    frame = pd.read_csv(tmp_path / "res.csv", index_col="label")
    frame.columns.name = "gene_symbol"
    check_frame(frame, golden, "max_variance")
    assert summary["regions"] == frame.shape[0] and summary["genes"] == frame.shape[1]
    for suffix in ("probes.csv", "genes.csv", "samples.csv", "methods.txt",
                   "provenance.json", "counts.csv"):
        assert (tmp_path / f"res.{suffix}").stat().st_size > 0
    prov = json.loads((tmp_path / "res.provenance.json").read_text())
    assert prov["params"]["probe_selection"] == "max_variance"
    probes = pd.read_csv(tmp_path / "res.probes.csv")
    assert probes["selected"].dtype == bool
    assert probes.loc[probes["selected"], "gene_symbol"].nunique() == frame.shape[1]
    help_text = CliRunner().invoke(cmd, ["--help"]).output
    for opt in ("--ibf-threshold", "--donor-probes", "--lr-mirror", "--norm-matched",
                "--no-norm-structures", "--region-agg", "--return-donors"):
        assert opt in help_text


def test_rank_walk_spearman_matches_scipy():
    from scipy.stats import spearmanr

    from atlas_engine.kernels.ranks import row_order, spearman_pair

    rng = np.random.default_rng(5)
    a = rng.integers(0, 4, size=(50, 9)).astype(float)     # many ties
    b = rng.normal(size=(50, 7))
    b[:, 2] = b[:, 3]                                       # ties in b too
    a[3, 1] = np.nan                                        # NaN in an included column
    a[4, 8] = np.nan                                        # NaN in an excluded column
    a[5] = 1.0                                              # constant row
    cols_a, cols_b = np.array([0, 1, 2, 5, 6]), np.array([6, 0, 2, 3, 4])
    got = spearman_pair(a, row_order(a), cols_a, b, row_order(b), cols_b)
    for r in range(50):
        x, y = a[r, cols_a], b[r, cols_b]
        if np.isnan(x).any() or np.ptp(x) == 0:
            assert np.isnan(got[r])
        else:
            assert got[r] == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)


def test_srs_kernel_matches_numpy_version():
    from atlas_engine.kernels.srs import srs_columns
    from atlas_engine.pipeline.normalize import scaled_robust_sigmoid

    rng = np.random.default_rng(2)
    x = rng.normal(5, 2, size=(41, 12))
    x[:, 3] = 1.0                      # IQR 0
    x[:30, 4] = 2.0                    # IQR 0, not constant
    x[7, 5] = np.nan                   # NaN column
    x[:, 6] = np.round(x[:, 6])        # ties
    with np.errstate(all="ignore"):
        want = scaled_robust_sigmoid(x)
    np.testing.assert_allclose(srs_columns(x), want, rtol=0, atol=1e-12, equal_nan=True)
    with np.errstate(all="ignore"):  # an even number of rows: the median averages two values
        want_even = scaled_robust_sigmoid(x[:40])
    np.testing.assert_allclose(srs_columns(x[:40]), want_even, rtol=0, atol=1e-12,
                               equal_nan=True)


def test_srs_block_kernels_match_numpy_version():
    """Column and row kernels (row kernel over a column subset with repeats) against the
    numpy version, n = 1 … 40, with small blocks so several blocks are used."""
    from atlas_engine.kernels import srs as _srs
    from atlas_engine.pipeline.normalize import scaled_robust_sigmoid

    rng = np.random.default_rng(5)
    block = _srs.BLOCK_VALUES
    _srs.BLOCK_VALUES = 40
    try:
        for n in range(1, 41):
            x = rng.normal(3, 1, size=(n, 9))
            x[:, 1] = np.round(x[:, 1])
            x[:, 2] = 4.0
            x[min(2, n - 1), 5] = np.nan
            with np.errstate(all="ignore"):
                want = scaled_robust_sigmoid(x)
            for arr in (x, np.asfortranarray(x)):
                np.testing.assert_allclose(_srs.srs_columns(arr), want, rtol=0, atol=1e-12,
                                           equal_nan=True)
            g = np.ascontiguousarray(x.T)               # genes × samples
            cols = rng.integers(0, n, size=n + 3)       # a subset with repeated samples
            with np.errstate(all="ignore"):
                want_rows = scaled_robust_sigmoid(g[:, cols].T).T
            np.testing.assert_allclose(_srs.srs_rows(g, cols), want_rows, rtol=0, atol=1e-12,
                                       equal_nan=True)
        assert _srs.srs_rows(g, np.zeros(0, dtype=np.int64)).shape == (9, 0)
    finally:
        _srs.BLOCK_VALUES = block


def test_group_mean_rows_matches_pandas():
    from atlas_engine.kernels.blockgroups import group_mean_rows

    rng = np.random.default_rng(6)
    x = rng.normal(size=(30, 50))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[3, :] = np.nan
    codes = rng.integers(-1, 7, size=50)                # -1: left out; group 7 has no samples
    got = group_mean_rows(x, codes, 8)
    frame = pd.DataFrame(x.T[codes >= 0])
    want = frame.groupby(codes[codes >= 0]).mean().reindex(range(8)).to_numpy().T
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, equal_nan=True)


def test_failed_run_leaves_no_temporary_cache_entry(e2e, tmp_path, monkeypatch):
    """An error after the cache entries were started (here in the gene normalisation): no
    half-written entry, temporary or final, stays in the store."""
    import shutil

    from atlas_engine.pipeline import expression as expr
    from atlas_engine.pipeline import matrix_passes

    path = tmp_path / "s.zarr"
    shutil.copytree(e2e["store"].url, path, ignore=shutil.ignore_patterns("cache"))

    def fail(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(expr, "srs_region_means", fail)     # rows in memory
    monkeypatch.setattr(matrix_passes, "srs_region_sums", fail)  # rows in the cache's files
    with pytest.raises(RuntimeError, match="interrupted"):
        get_expression_data(str(path), ATLAS, INFO, ibf_threshold=0.33, **FIXED)
    left = [q.name for q in (path / "cache").iterdir()] if (path / "cache").exists() else []
    assert not any(n.startswith(".tmp") for n in left), left
    assert not any(n.startswith("samplenorm") for n in left), left


def test_cache_entry_roundtrip_and_file_backed_arrays(tmp_path):
    from atlas_engine.pipeline.cache import StoreCache

    cache = StoreCache(str(tmp_path), {"attrs": {"dtype": "float64"}})
    key = cache.key("selection", {"a": 1})
    assert key != cache.key("selection", {"a": 2})
    assert cache.load(key) is None
    w = cache.writer(key)
    w.add("small", np.arange(5))
    mm = w.create("big", (3, 4))
    mm[...] = np.arange(12.0).reshape(3, 4)
    del mm
    assert cache.load(key) is None                 # nothing visible before commit
    assert w.commit({"params": {"a": 1}})
    entry = cache.load(key)
    np.testing.assert_array_equal(entry["small"], np.arange(5))
    np.testing.assert_array_equal(entry["big"], np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(entry.get("big", mapped=True), entry["big"])
    assert "big" in entry and "other" not in entry
    assert entry.meta["params"] == {"a": 1}
    with pytest.raises(KeyError):
        entry["other"]
    assert cache.entries() == [key]
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "cache").iterdir())
    aborted = cache.writer(cache.key("selection", {"a": 3}))
    aborted.add("x", np.zeros(2))
    aborted.abort()
    assert cache.entries() == [key]


def test_damaged_cache_entry_is_a_miss(tmp_path):
    cache = StoreCache(str(tmp_path), {"attrs": {}})
    key = cache.key("selection", {"a": 1})
    assert cache.save(key, {"x": np.arange(1000.0)}, {"params": {}})
    assert cache.load(key) is not None
    f = tmp_path / "cache" / key / "x.npy"
    data = bytearray(f.read_bytes())
    data[-3] ^= 1                       # one bit of one value
    f.write_bytes(bytes(data))
    assert cache.load(key) is None and not (tmp_path / "cache" / key).exists()


def test_damaged_cached_product_is_recomputed(e2e, tmp_path):
    st = e2e["store"]
    opts = dict(ibf_threshold=0.35, probe_selection="max_variance", **FIXED)
    want = get_expression_data(st, ATLAS, INFO, cache=False, **opts).expression
    get_expression_data(st, ATLAS, INFO, **opts)
    cache_dir = Path(st.url) / "cache"
    for f in sorted(cache_dir.glob("samplenorm-*/*_0.npy")):
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x40
        f.write_bytes(bytes(data))
    again = get_expression_data(st, ATLAS, INFO, **opts)
    assert again.computed["sample_norm"] is True
    pd.testing.assert_frame_equal(again.expression, want, check_exact=True)


def test_mean_pair_spearman_matches_scipy():
    """Every donor pair of a row at once (different structure sets, ties, a NaN) against the
    mean of scipy's Spearman correlations."""
    from itertools import combinations

    from scipy.stats import spearmanr

    from atlas_engine.kernels.ranks import mean_pair_spearman

    rng = np.random.default_rng(9)
    ids = [np.sort(rng.choice(30, size=k, replace=False)) for k in (20, 25, 14)]
    means = [np.round(rng.normal(size=(40, len(i))), 1) for i in ids]
    means[1][5, 3] = np.nan
    pairs, cols = [], []
    for a, b in combinations(range(3), 2):
        _, ia, ib = np.intersect1d(ids[a], ids[b], return_indices=True)
        pairs.append((a, b))
        cols.append((ia, ib))
    got = mean_pair_spearman(means, pairs, cols)
    for r in range(40):
        rs = []
        for (a, b), (ia, ib) in zip(pairs, cols, strict=True):
            x, y = means[a][r, ia], means[b][r, ib]
            bad = np.isnan(x).any() or np.isnan(y).any() or np.ptp(x) == 0 or np.ptp(y) == 0
            rs.append(np.nan if bad else spearmanr(x, y).statistic)
        if np.isnan(rs).any():
            assert np.isnan(got[r])
        else:
            assert got[r] == pytest.approx(np.mean(rs), abs=1e-12)


@pytest.mark.parametrize("method", ["diff_stability", "average"])
def test_nan_in_chosen_rows_takes_the_per_atlas_path(e2e, tmp_path, method):
    """NaN in a donor's expression: the sample normalisation is not cached (with a NaN it
    would depend on the matched samples); cached, repeated and uncached runs agree."""
    import shutil

    import zarr

    from atlas_engine.store import layout as L

    path = tmp_path / "nan.zarr"
    shutil.copytree(e2e["store"].url, path, ignore=shutil.ignore_patterns("cache"))
    st = open_store(path)
    arr = zarr.open_array(str(path), path=f"{L.donor_path(st.donors[0])}/{L.EXPRESSION}",
                          mode="r+")
    values = np.asarray(arr[:])
    values[::3, 1] = np.nan
    arr[:] = values
    opts = dict(probe_selection=method, **FIXED)
    first = get_expression_data(str(path), ATLAS, INFO, **opts)
    assert first.expression.shape[1] > 0
    assert first.computed["sample_norm"] is True
    assert not any(p.name.startswith("samplenorm") for p in (path / "cache").iterdir())
    again = get_expression_data(str(path), ATLAS, INFO, **opts)
    assert again.computed == {"ibf": False, "selection": False, "rows": True,
                              "sample_norm": True}
    plain = get_expression_data(str(path), ATLAS, INFO, cache=False, **opts)
    for res in (first, again):
        pd.testing.assert_frame_equal(res.expression, plain.expression, check_exact=True)


def test_normalize_blocks_skips_all_nan_samples_and_genes_like_numpy():
    """The srs fast path leaves out samples that are NaN for every gene (gene norm) and genes
    NaN in every sample (sample norm), as the numpy version does."""
    from atlas_engine.pipeline.expression import normalize_blocks
    from atlas_engine.pipeline.normalize import normalize_donor

    rng = np.random.default_rng(4)
    x = rng.normal(5, 1, size=(30, 12))
    x[4] = np.nan            # a sample without values
    x[:, 7] = np.nan         # a gene without values
    with np.errstate(all="ignore"):
        want = normalize_donor(x, "srs", "srs")
    got = normalize_blocks(x.copy(), "srs", "srs")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)
    assert np.isfinite(got[np.arange(30) != 4][:, np.arange(12) != 7]).all()


def test_region_means_of_all_donors_in_one_computation_equal_the_per_donor_passes(
        e2e, tmp_path, monkeypatch):
    """With the sample-normalised rows in the cache's files, the donors' region means run as
    one computation (tasks over blocks of genes, each through every donor); without the
    cache the rows are in memory and each donor is its own pass. The same matrix bit for
    bit, cold and cached."""
    import shutil

    from atlas_engine.pipeline import matrix_passes

    path = tmp_path / "s.zarr"
    shutil.copytree(e2e["store"].url, path, ignore=shutil.ignore_patterns("cache"))
    batched = []
    real = matrix_passes.srs_region_sums

    def counting(*args, **kwargs):
        batched.append(len(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(matrix_passes, "srs_region_sums", counting)
    per_donor = get_expression_data(str(path), ATLAS, INFO, cache=False, **FIXED).expression
    assert batched == []
    cold = get_expression_data(str(path), ATLAS, INFO, **FIXED).expression
    cached = get_expression_data(str(path), ATLAS, INFO, **FIXED).expression
    assert batched == [len(e2e["store"].donors)] * 2    # every donor in one computation
    pd.testing.assert_frame_equal(cold, per_donor, check_exact=True)
    pd.testing.assert_frame_equal(cached, per_donor, check_exact=True)
