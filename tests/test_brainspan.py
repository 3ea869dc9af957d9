"""BrainSpan as a store: developmental periods, verify, aggregate (pandas oracles), trajectories,
BrainSpan RMA metadata from the mirror."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import zarr
from click.testing import CliRunner

from atlas_engine.aggregate.brainspan import aggregate_brainspan, parse_keys
from atlas_engine.aggregate.trajectory import plot_trajectories, trajectory_table
from atlas_engine.cli import cli
from atlas_engine.convert.brainspan import convert_brainspan
from atlas_engine.errors import ConfigError, StoreError
from atlas_engine.sources.devtime import (
    BRAINSPAN_AGES,
    GROUP_OF_STRUCTURE,
    age_pcd,
    age_table,
    age_years,
    period_of,
)
from atlas_engine.store.brainspan import open_brainspan
from atlas_engine.store.open import open_store
from atlas_engine.store.verify import verify_store
from atlas_engine.testing.synth_brainspan import STRUCTURES, write_brainspan

POOL = pd.DataFrame({"gene_symbol": ["AAA1", "BDNF", "COMT", "ZZZ9", "DRD2"],
                     "entrez_id": [11, 627, 1312, 99, 1813]})


# -- periods ---------------------------------------------------------------------------------
def _oracle_periods(ages: list[str]) -> pd.DataFrame:
    """The ages as postnatal years with timefit's rule ((pcw - 38) * 7 / 365, months / 12) and
    Kang's bins (lower bound inclusive) by pandas.cut; the pcw/month bounds go through the same
    rule, so a value on a bound is compared like for like."""
    num = pd.Series([float(a.split(" ")[0]) for a in ages])
    unit = pd.Series([a.split(" ")[1] for a in ages])
    years = np.where(unit == "pcw", (num - 38) * 7 / 365, np.where(unit == "mos", num / 12, num))
    pcw_edges = [4, 8, 10, 13, 16, 19, 24, 38]
    edges = [(w - 38) * 7 / 365 for w in pcw_edges] + [m / 12 for m in (6, 12)] + \
        [6, 12, 20, 40, 60, np.inf]
    labels = [f"P{k}" for k in range(1, 16)]
    period = pd.cut(years, bins=edges, right=False, labels=labels)
    return pd.DataFrame({"age": ages, "years": years, "period": period.astype(str)})


def test_every_real_age_gets_its_kang_period():
    oracle = _oracle_periods(list(BRAINSPAN_AGES))
    got = [period_of(a).code for a in BRAINSPAN_AGES]
    assert got == oracle["period"].tolist()
    # the shared spec's table (more_datasets.md §3), written out
    spec = {"P2": ["8 pcw", "9 pcw"], "P3": ["12 pcw"], "P4": ["13 pcw"],
            "P5": ["16 pcw", "17 pcw"], "P6": ["19 pcw", "21 pcw"],
            "P7": ["24 pcw", "25 pcw", "26 pcw", "35 pcw", "37 pcw"], "P8": ["4 mos"],
            "P9": ["10 mos"], "P10": ["1 yrs", "2 yrs", "3 yrs", "4 yrs"],
            "P11": ["8 yrs", "11 yrs"], "P12": ["13 yrs", "15 yrs", "18 yrs", "19 yrs"],
            "P13": ["21 yrs", "23 yrs", "30 yrs", "36 yrs", "37 yrs"], "P14": ["40 yrs"]}
    assert {a: p for p, ages in spec.items() for a in ages} == dict(zip(BRAINSPAN_AGES, got,
                                                                         strict=True))
    np.testing.assert_allclose([age_years(a) for a in BRAINSPAN_AGES], oracle["years"])
    np.testing.assert_allclose([age_pcd(a) for a in BRAINSPAN_AGES],
                               38 * 7 + oracle["years"] * 365)


@pytest.mark.parametrize("age,code", [("4 pcw", "P1"), ("7 pcw", "P1"), ("10 pcw", "P3"),
                                      ("38 pcw", "P8"), ("0 mos", "P8"), ("6 mos", "P9"),
                                      ("12 mos", "P10"), ("6 yrs", "P11"), ("20 yrs", "P13"),
                                      ("59 yrs", "P14"), ("60 yrs", "P15"), ("95 yrs", "P15")])
def test_period_bounds_lower_inclusive(age, code):
    assert period_of(age).code == code


@pytest.mark.parametrize("age", ["8 weeks", "8pcw", "8  pcw", "eight pcw", "", "3 days",
                                 "-1 yrs", "8 PCW"])
def test_unknown_age_strings_refused(age):
    with pytest.raises(ConfigError, match="is not '<number> pcw"):
        period_of(age)


def test_age_before_p1_refused():
    with pytest.raises(ConfigError, match="before period P1"):
        period_of("3 pcw")


def test_age_table_is_ordered():
    t = age_table(reversed(BRAINSPAN_AGES))
    assert t["age"].astype(str).tolist() == list(BRAINSPAN_AGES)
    assert t["age"].cat.ordered


def test_every_structure_has_a_group():
    assert {s[1] for s in STRUCTURES} <= set(GROUP_OF_STRUCTURE)


# -- store -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bs_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("bs")
    zpath = write_brainspan(root / "raw", genes=60, samples=160, seed=3, gene_pool=POOL)
    store = root / "bs.zarr"
    convert_brainspan(zpath, store, gene_chunk=16, sample_chunk=50)
    return store


@pytest.fixture(scope="module")
def bs_long(bs_store):
    """Every value with its sample annotation (the oracle's input)."""
    bs = open_brainspan(bs_store)
    x = np.asarray(bs.expression.compute(), dtype=np.float64)
    s = bs.samples.reset_index(drop=True)
    frames = []
    for g in range(x.shape[0]):
        f = s.copy()
        f["gene"] = g
        f["value"] = x[g]
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def test_generated_genes_come_from_the_pool_priority_first(bs_store):
    genes = open_brainspan(bs_store).genes
    assert genes["gene_symbol"].tolist()[:2] == ["TSPAN6", "TNMD"]
    assert genes["gene_symbol"].tolist()[2:5] == ["BDNF", "COMT", "DRD2"]
    assert set(POOL["gene_symbol"]) <= set(genes["gene_symbol"])
    bdnf = genes[genes.gene_symbol == "BDNF"].iloc[0]
    assert bdnf["entrez_id"] == 627 and bdnf["ensembl_gene_id"] == "ENSG00000000627"


def test_samples_annotated(bs_store):
    s = open_brainspan(bs_store).samples
    assert {"period", "period_name", "age_years", "age_pcd", "region"} <= set(s.columns)
    assert s.groupby("donor_id")["age"].nunique().max() == 1
    # a donor is sampled once per structure (as in the real data) while structures last
    per = s.groupby(["donor_id", "structure_acronym"]).size()
    assert per.max() == 1


def test_verify_brainspan(bs_store, tmp_path):
    rep = verify_store(bs_store)
    assert rep.ok, rep.problems
    assert rep.summary["dataset"] == "brainspan" and rep.summary["samples"] == 160
    res = CliRunner().invoke(cli, ["verify", str(bs_store)])
    assert res.exit_code == 0, res.output
    assert "samples per period" in res.output and "OK" in res.output
    # damage one chunk: verify fails
    import shutil

    copy = tmp_path / "bad.zarr"
    shutil.copytree(bs_store, copy)
    arr = zarr.open_array(copy / "brainspan" / "expression", mode="r+")
    arr[0, 0] = arr[0, 0] + 1
    rep = verify_store(copy)
    assert not rep.ok and any("chunk (0, 0) values differ from conversion" in p
                              for p in rep.problems)


def test_microarray_opener_points_to_brainspan(bs_store):
    with pytest.raises(StoreError, match="BrainSpan store"):
        open_store(bs_store)


KEY_COLS = {"period": "period", "age": "age", "structure": "structure_acronym",
            "region": "region", "donor": "donor_id", "gender": "gender"}


def _oracle(long: pd.DataFrame, keys: list[str], mode: str, stat: str = "mean",
            log2: bool = False) -> pd.DataFrame:
    f = long.copy()
    if log2:
        f["value"] = np.log2(f["value"] + 1.0)
    cols = [KEY_COLS[k] for k in keys]
    if mode == "pooled":
        return f.groupby([*cols, "gene"])["value"].agg(stat)
    per = f.groupby([*cols, "donor_id", "gene"])["value"].agg(stat) if "donor" not in keys \
        else f.groupby([*cols, "gene"])["value"].agg(stat)
    if mode == "each" or "donor" in keys:
        return per
    per = per.reset_index()
    agg = "median" if stat == "median" else "mean"
    return per.groupby([*cols, "gene"])["value"].agg(agg)


def _result_series(res, keys: list[str]) -> pd.Series:
    long = res.to_long()
    names = dict(zip(res.feature_names, range(len(res.feature_names)), strict=True))
    long["gene"] = long["gene"].map(names)
    cols = ["donor_id" if k == "donor" else "structure" if k == "structure" else k for k in keys]
    long = long.rename(columns={"structure": "structure_acronym"} if "structure" in keys else {})
    cols = [KEY_COLS[k] for k in keys]
    if res.values.ndim == 3:
        long = long.rename(columns={"donor": "_d"})
        long["donor_id"] = long["_d"]
        cols = [*cols, "donor_id"] if "donor" not in keys else cols
    return long.set_index([*cols, "gene"])["value"].sort_index()


@pytest.mark.parametrize("by", ["period", "age", "structure", "region", "donor", "gender",
                                "period,structure", "region,gender"])
@pytest.mark.parametrize("mode", ["combined", "pooled"])
def test_group_means_match_pandas(bs_store, bs_long, by, mode):
    keys = parse_keys(by)
    res = aggregate_brainspan(bs_store, by=by, combine=mode)
    want = _oracle(bs_long, keys, mode)
    got = _result_series(res, keys)
    want.index = want.index.set_levels([lvl.astype(str) for lvl in want.index.levels])
    got.index = got.index.set_levels([lvl.astype(str) for lvl in got.index.levels])
    got = got.dropna()
    assert len(got) == len(want)
    np.testing.assert_allclose(got.loc[want.index].to_numpy(), want.to_numpy(), rtol=1e-5,
                               atol=1e-6)
    # counts: samples and donors per group
    g = res.groups
    cols = [("structure" if k == "structure" else KEY_COLS[k]) for k in keys]
    s = open_brainspan(bs_store).samples.rename(columns={"structure_acronym": "structure"})
    n = s.groupby(cols).size()
    idx = pd.MultiIndex.from_frame(g[cols].astype(str)) if len(cols) > 1 else \
        g[cols[0]].astype(str)
    n.index = (n.index.set_levels([lvl.astype(str) for lvl in n.index.levels])
               if len(cols) > 1 else n.index.astype(str))
    assert (g["n_samples"].to_numpy() == n.loc[idx].to_numpy()).all()


@pytest.mark.parametrize("stat", ["median", "std", "min", "max", "sum"])
def test_other_stats_pooled_and_combined(bs_store, bs_long, stat):
    for mode in ("pooled", "combined"):
        res = aggregate_brainspan(bs_store, by="period", combine=mode, stat=stat,
                                  transform="log2")
        want = _oracle(bs_long, ["period"], mode, stat=stat, log2=True)
        got = _result_series(res, ["period"])
        ok = want.notna()
        np.testing.assert_allclose(got.loc[want.index][ok].to_numpy(), want[ok].to_numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_each_donor(bs_store, bs_long):
    res = aggregate_brainspan(bs_store, by="structure", combine="each")
    assert res.values.ndim == 3 and res.values.shape[0] == len(res.donors)
    want = _oracle(bs_long, ["structure"], "each")
    got = _result_series(res, ["structure"]).dropna()
    got = got.reorder_levels(want.index.names)
    np.testing.assert_allclose(got.loc[want.index].to_numpy(), want.to_numpy(), rtol=1e-5)


def test_genes_by_symbol_entrez_ensembl(bs_store):
    res = aggregate_brainspan(bs_store, genes="BDNF,1312,ENSG00000001813.4,NOPE,12345678")
    assert res.feature_names == ["BDNF", "COMT", "DRD2"]
    assert res.missing_genes == ["NOPE", "12345678"]
    with pytest.raises(ConfigError, match="none of the genes"):
        aggregate_brainspan(bs_store, genes="NOPE")
    with pytest.raises(ConfigError, match="unknown BrainSpan --by"):
        aggregate_brainspan(bs_store, by="lobe")


def test_donor_subset_and_unknown(bs_store):
    s = open_brainspan(bs_store).samples
    d = int(s["donor_id"].iloc[0])
    res = aggregate_brainspan(bs_store, by="structure", donors=[d])
    assert res.donors == [d]
    assert res.groups["n_samples"].sum() == int((s.donor_id == d).sum())
    with pytest.raises(ConfigError, match="not in the BrainSpan store"):
        aggregate_brainspan(bs_store, donors=[1])


def test_aggregate_cli_on_brainspan(bs_store, tmp_path):
    out = tmp_path / "p.csv"
    res = CliRunner().invoke(cli, ["aggregate", str(bs_store), "--by", "period,region",
                                   "--genes", "BDNF,COMT", "--transform", "log2",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    t = pd.read_csv(out)
    assert list(t.columns[:2]) == ["period", "period_name"]
    assert {"BDNF", "COMT", "n_samples", "n_donors", "region"} <= set(t.columns)
    res = CliRunner().invoke(cli, ["aggregate", str(bs_store), "--by", "age", "--combine",
                                   "each", "--layout", "long", "--out", str(tmp_path / "e.csv")])
    assert res.exit_code == 0, res.output
    t = pd.read_csv(tmp_path / "e.csv")
    assert {"donor", "age", "age_years", "gene", "value"} <= set(t.columns)
    assert t.groupby("donor")["age"].nunique().max() == 1      # a donor has one age
    res = CliRunner().invoke(cli, ["aggregate", str(bs_store), "--collapse", "gene:max_variance",
                                   "--out", str(out)])
    assert res.exit_code != 0


# -- trajectories ------------------------------------------------------------------------------
def test_trajectory_table_and_plot(bs_store, bs_long, tmp_path):
    table, points, missing = trajectory_table(bs_store, "BDNF,COMT,NOPE", group_by="region")
    assert missing == ["NOPE"]
    f = bs_long.copy()
    genes = open_brainspan(bs_store).genes.reset_index(drop=True)
    f = f[f["gene"].isin(genes.index[genes.gene_symbol.isin(["BDNF", "COMT"])])]
    f["value"] = np.log2(f["value"] + 1)
    f["gene"] = genes["gene_symbol"].to_numpy()[f["gene"]]
    per = f.groupby(["gene", "region", "age", "donor_id"])["value"].mean()
    want = per.groupby(["gene", "region", "age"]).mean()
    got = table.set_index(["gene", "region", "age"])["value"]
    assert len(got) == len(want)
    np.testing.assert_allclose(got.loc[want.index].to_numpy(), want.to_numpy(), rtol=1e-5)
    # ordered by age within each line
    for _, t in table.groupby(["gene", "region"]):
        assert t["age_pcd"].is_monotonic_increasing
    assert len(points) == 2 * 160
    p = plot_trajectories(table, points, tmp_path / "t.png")
    assert p.read_bytes()[:4] == b"\x89PNG"
    p = plot_trajectories(table, None, tmp_path / "t.svg", log_age=False, groups=["neocortex"])
    assert b"<svg" in p.read_bytes()[:400]


def test_trajectory_cli(bs_store, tmp_path):
    res = CliRunner().invoke(cli, ["trajectory", str(bs_store), "BDNF", "1312", "--group-by",
                                   "structure", "--out", str(tmp_path / "t.csv"), "--plot",
                                   str(tmp_path / "t.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "t.samples.csv").is_file() and (tmp_path / "t.png").is_file()
    t = pd.read_csv(tmp_path / "t.csv")
    assert set(t["gene"]) == {"BDNF", "COMT"} and "structure" in t.columns
    res = CliRunner().invoke(cli, ["trajectory", str(bs_store), "BDNF", "--groups", "nowhere",
                                   "--out", str(tmp_path / "u.csv"), "--plot",
                                   str(tmp_path / "u.png")])
    assert res.exit_code != 0


# -- RMA metadata from the mirror ----------------------------------------------------------------
def test_brainspan_donors_and_specimens_from_mirror(bs_store, tmp_path):
    from atlas_engine.fetch.brainspan_meta import brainspan_metadata
    from atlas_engine.testing.server import serving

    raw = bs_store.parent / "raw"
    with zipfile.ZipFile(raw / "genes_matrix_csv.zip") as zf:
        cols = pd.read_csv(zf.open("columns_metadata.csv"))
    with serving(raw) as srv:
        donors, specimens = brainspan_metadata(srv.url)
        res = CliRunner().invoke(cli, ["query", "Donor", "--criteria", "products[id$eq24]",
                                       "--base-url", srv.url])
        res2 = CliRunner().invoke(cli, ["query", "Specimen", "--criteria",
                                        "donor[age$eq'8 pcw']", "--base-url", srv.url,
                                        "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)) == cols["donor_id"].nunique()
    assert sorted(donors["id"]) == sorted(cols["donor_id"].unique())
    assert set(donors["age"]) == set(cols["age"])
    assert len(specimens) == len(cols)
    joined = specimens.merge(donors, left_on="donor_id", right_on="id")
    assert sorted(joined["structure_id"]) == sorted(cols["structure_id"])
    assert res2.exit_code == 0, res2.output
    assert len(res2.output.strip().splitlines()) - 1 == int((cols["age"] == "8 pcw").sum())


def test_store_with_an_unknown_age_is_refused(bs_store, tmp_path):
    from atlas_engine.errors import FormatError

    src = bs_store.parent / "raw" / "genes_matrix_csv.zip"
    dst = tmp_path / "genes_matrix_csv.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "columns_metadata.csv":
                data = data.replace(b",12 pcw,", b",12 weeks,", 1)
            zout.writestr(item, data)
    store = tmp_path / "bad.zarr"
    convert_brainspan(dst, store)
    rep = verify_store(store)
    assert not rep.ok and any("'12 weeks'" in p for p in rep.problems)
    with pytest.raises(FormatError, match="12 weeks"):
        aggregate_brainspan(store)
