"""GTEx: GCT reading (and refusing), the tissue map, per-gene crossref against scipy, the
generated files and the mirror."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from atlas_engine.cli import cli
from atlas_engine.errors import FormatError
from atlas_engine.gtex.crossref import (
    AllenTissues,
    crossref,
    load_tissue_map,
    match_genes,
    plot_gene,
    row_correlations,
)
from atlas_engine.gtex.gct import read_gct, write_gct
from atlas_engine.sources.gtex import BRAIN_TISSUES, GTEX_FILES, TISSUES

GOOD = ("#1.2\n3\t2\nName\tDescription\tA\tB\n"
        "ENSG00000000003.14\tTSPAN6\t1.5\t0\n"
        "ENSG00000000005.5\tTNMD\t0.25\t3e-2\n"
        "ENSG00000000419.12\tDPM1\t100\t7.125\n")


def _write(tmp_path, text, name="t.gct.gz"):
    p = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(p, "wt") as fh:
            fh.write(text)
    else:
        p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["t.gct", "t.gct.gz"])
def test_read_gct_matches_pandas(tmp_path, name):
    p = _write(tmp_path, GOOD, name)
    t = read_gct(p)
    oracle = pd.read_csv(p, sep="\t", skiprows=2)
    assert t.tissues == ["A", "B"]
    assert t.genes["name"].tolist() == oracle["Name"].tolist()
    assert t.genes["ensembl"].tolist() == ["ENSG00000000003", "ENSG00000000005",
                                           "ENSG00000000419"]
    assert t.genes["symbol"].tolist() == oracle["Description"].tolist()
    np.testing.assert_array_equal(t.values.to_numpy(), oracle[["A", "B"]].to_numpy())


@pytest.mark.parametrize("text,line,what", [
    (GOOD.replace("#1.2", "#1.3"), 1, "first line"),
    (GOOD.replace("3\t2\n", "4\t2\n"), 6, "3 data rows, line 2 says 4"),
    (GOOD.replace("3\t2\n", "2\t2\n"), 6, "3 data rows, line 2 says 2"),
    (GOOD.replace("3\t2\n", "3\tx\n"), 2, "dimensions line"),
    (GOOD.replace("3\t2\n", "3\t3\n"), 3, "header has 2 data columns, line 2 says 3"),
    (GOOD.replace("Name\t", "Id\t"), 3, "header starts"),
    (GOOD.replace("ENSG00000000005.5", "ENSG00000000003.14"), 5, "appears again"),
    (GOOD.replace("ENSG00000000005.5", "ENSG00000000003.9"), 5, "another version"),
    (GOOD.replace("0.25", "abc"), 5, "value 'abc'"),
    (GOOD.replace("0.25", "-1"), 5, "value '-1'"),
    (GOOD.replace("\t7.125", ""), 6, "3 fields"),
    (GOOD.replace("Description\tA\tB", "Description\tA\tA"), 3, "appears twice"),
])
def test_malformed_gct_refused(tmp_path, text, line, what):
    p = _write(tmp_path, text)
    with pytest.raises(FormatError, match=what) as exc:
        read_gct(p)
    assert exc.value.line == line and str(p) in str(exc.value)


def test_value_error_names_the_column(tmp_path):
    p = _write(tmp_path, GOOD.replace("7.125", "nan"))
    with pytest.raises(FormatError) as exc:
        read_gct(p)
    assert (exc.value.line, exc.value.column) == (6, 4)


def test_write_gct_round_trip(tmp_path):
    genes = pd.DataFrame({"name": ["ENSG1.1", "ENSG2.3"], "symbol": ["A", "B"]})
    v = np.array([[0.0, 1.25], [3.5, 1e-3]])
    t = read_gct(write_gct(tmp_path / "x.gct.gz", genes, v, ["T1", "T2"]))
    np.testing.assert_allclose(t.values.to_numpy(), v)


def test_tissue_map_covers_every_brain_tissue(tmp_path):
    tm = load_tissue_map()
    assert sorted(tm["gtex_tissue"]) == sorted(BRAIN_TISSUES)
    assert len(TISSUES) == 54 and len(BRAIN_TISSUES) == 13
    assert tm.set_index("gtex_tissue").loc["Brain - Substantia nigra", "ahba"] == [
        "substantia nigra, pars compacta", "substantia nigra, pars reticulata"]
    bad = tmp_path / "m.csv"
    bad.write_text("gtex_tissue,ahba_structures,brainspan_structures,note\nA,x,,\nA,y,,\n")
    with pytest.raises(FormatError, match="appears again") as exc:
        load_tissue_map(bad)
    assert exc.value.line == 3


# -- correlations --------------------------------------------------------------------------------
def test_row_correlations_match_scipy():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 9))
    y = x * rng.uniform(-1, 1, (40, 1)) + rng.normal(size=(40, 9))
    x[3, 2] = np.nan          # a missing tissue: the row uses the other 8
    y[7, :7] = np.nan         # too few tissues
    x[9] = 1.0                # constant
    x[11, :4] = x[11, 4]      # ties
    sp, pe, n = row_correlations(x, y)
    for i in range(40):
        ok = np.isfinite(x[i]) & np.isfinite(y[i])
        assert n[i] == ok.sum()
        if ok.sum() < 3 or np.ptp(x[i, ok]) == 0:
            assert np.isnan(sp[i]) and np.isnan(pe[i])
            continue
        assert sp[i] == pytest.approx(stats.spearmanr(x[i, ok], y[i, ok]).statistic, abs=1e-12)
        assert pe[i] == pytest.approx(stats.pearsonr(x[i, ok], y[i, ok]).statistic, abs=1e-12)


def _gct(tmp_path):
    genes = pd.DataFrame({
        "name": ["ENSG00000000001.3", "ENSG00000000002.1", "ENSG00000000003.7",
                 "ENSG00000000004.2", "ENSG00000000005.1"],
        "symbol": ["AAA", "BBB", "DUP", "DUP", "EEE"]})
    rng = np.random.default_rng(1)
    v = rng.uniform(0, 50, (5, len(TISSUES)))
    return read_gct(write_gct(tmp_path / "g.gct.gz", genes, v, list(TISSUES), digits=17))


def test_match_by_ensembl_then_symbol(tmp_path):
    g = _gct(tmp_path)
    allen = pd.DataFrame({"symbol": ["AAA", "renamed", "DUP", "ZZZ", "EEE"],
                          "ensembl": ["", "ENSG00000000002", "", "ENSG00000009999", ""]})
    m = match_genes(allen, g.genes)
    assert m["gtex_row"].tolist() == [0, 1, -1, -1, 4]
    assert m["matched_by"].tolist() == ["symbol", "ensembl", "", "", "symbol"]
    assert m["reason"][2].startswith("symbol names 2 GTEx genes (ENSG00000000003.7")
    assert m["reason"][3] == "Ensembl id and symbol not in GTEx"


def test_crossref_values_against_scipy(tmp_path):
    g = _gct(tmp_path)
    tissues = list(BRAIN_TISSUES[:6])
    rng = np.random.default_rng(2)
    vals = rng.normal(6, 1, (4, 6))
    vals[1, 0] = np.nan
    allen = AllenTissues(
        values=pd.DataFrame(vals, columns=tissues, index=["AAA", "BBB", "DUP", "QQQ"]),
        genes=pd.DataFrame({"gene": ["AAA", "BBB", "DUP", "QQQ"],
                            "symbol": ["AAA", "BBB", "DUP", "QQQ"], "ensembl": ""}),
        tissues=load_tissue_map(), source="ahba")
    res = crossref(allen, g)
    assert res.genes["gene"].tolist() == ["AAA", "BBB"]
    assert res.unmatched["gene"].tolist() == ["DUP", "QQQ"]
    assert res.unmatched["reason"][1] == "symbol not in GTEx (no Ensembl id on the Allen side)"
    for k, row in res.genes.iterrows():
        x = vals[k]
        y = np.log2(g.values.iloc[k][tissues].to_numpy() + 1)
        ok = np.isfinite(x)
        assert row["n_tissues"] == ok.sum()
        assert row["spearman"] == pytest.approx(stats.spearmanr(x[ok], y[ok]).statistic)
        assert row["pearson"] == pytest.approx(stats.pearsonr(x[ok], y[ok]).statistic)
    assert res.summary["genes_matched"] == 2 and res.summary["genes_unmatched"] == 2
    assert res.summary["spearman_median"] == pytest.approx(res.genes["spearman"].median())
    paths = res.write(tmp_path / "x.csv")
    assert [p.name for p in paths] == ["x.csv", "x.unmatched.csv", "x.tissues.csv",
                                       "x.summary.json"]
    p = plot_gene(res, "AAA", tmp_path / "a.png")
    assert p.read_bytes()[:4] == b"\x89PNG"


# -- generated data, end to end ----------------------------------------------------------------
def test_generated_gtex_is_consistent_with_ahba_and_brainspan(synth_small):
    assert set(synth_small.gtex) == {"v8", "v10"}
    for v, path in synth_small.gtex.items():
        assert path.name == GTEX_FILES[v]
        t = read_gct(path)
        assert t.tissues == list(TISSUES)
    t = read_gct(synth_small.gtex["v8"])
    probes = synth_small.probes
    ahba = set(probes.loc[probes.entrez_id.notna(), "gene_symbol"])
    gsyms = set(t.genes["symbol"])
    share = len(ahba & gsyms) / len(ahba)
    assert 0.9 < share < 1.0       # most AHBA genes, a few left out on purpose
    import zipfile

    with zipfile.ZipFile(synth_small.brainspan) as zf:
        rows = pd.read_csv(zf.open("rows_metadata.csv"), keep_default_na=False, dtype=str)
    in_ahba = rows["gene_symbol"].isin(ahba)
    assert in_ahba.sum() >= len(rows) - 2 - (rows["gene_symbol"].str.startswith(
        ("LOC", "BSG"))).sum()
    assert rows["ensembl_gene_id"].isin(t.genes["ensembl"]).mean() > 0.9


def test_crossref_cli_on_generated_data(synth_small, tmp_path):
    from atlas_engine.convert.donor import convert_microarray

    store = tmp_path / "ahba.zarr"
    convert_microarray(synth_small.dest, store, donors=["9861", "10021"])
    out = tmp_path / "x.csv"
    sym = read_gct(synth_small.gtex["v8"]).genes["symbol"]
    res = CliRunner().invoke(cli, ["crossref", str(store), str(synth_small.gtex["v8"]),
                                   "--out", str(out), "--plot-gene", "TSPAN6"])
    # TSPAN6 is BrainSpan's fixture gene: not an AHBA gene here, so plotting it fails clearly
    assert res.exit_code != 0 and "not in the cross-reference" in str(res.exception or
                                                                        res.output)
    genes = pd.read_csv(out)
    gene = genes.dropna(subset=["spearman"])["gene"].iloc[0]
    res = CliRunner().invoke(cli, ["crossref", str(store), str(synth_small.gtex["v8"]),
                                   "--out", str(out), "--plot-gene", gene])
    assert res.exit_code == 0, res.output
    assert (tmp_path / f"x.{gene}.png").is_file()
    summary = json.loads((tmp_path / "x.summary.json").read_text())
    assert summary["matched_by"] == {"symbol": summary["genes_matched"]}
    un = pd.read_csv(tmp_path / "x.unmatched.csv")
    assert len(un) == summary["genes_unmatched"] > 0
    assert un["reason"].str.startswith(("symbol not in GTEx (no Ensembl id on the Allen side)",
                                        "symbol names 2 GTEx genes (")).all()
    assert not set(un["gene"]) & set(sym[~sym.duplicated(keep=False)])
    tissues = pd.read_csv(tmp_path / "x.tissues.csv")
    spinal = tissues.set_index("gtex_tissue").loc["Brain - Spinal cord (cervical c-1)"]
    assert spinal["status"] == "no AHBA structure mapped"


def test_crossref_brainspan_matches_by_ensembl(synth_small, tmp_path):
    from atlas_engine.convert.brainspan import convert_brainspan
    from atlas_engine.gtex.crossref import brainspan_tissues

    store = tmp_path / "bs.zarr"
    convert_brainspan(synth_small.dest, store)
    allen = brainspan_tissues(store, load_tissue_map(), min_years=0)
    res = crossref(allen, synth_small.gtex["v10"])
    assert res.summary["matched_by"].get("ensembl", 0) > 0.9 * res.summary["genes_matched"]


def test_mirror_serves_gtex_and_fetch_gets_it(synth_small, tmp_path):
    from atlas_engine.fetch.ahba import fetch_ahba
    from atlas_engine.testing.server import serving

    with serving(synth_small.dest) as srv:
        rep = fetch_ahba(tmp_path, what="gtex,gtex-v10", base_url=srv.url)
        import urllib.request

        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{srv.url}/adult-gtex/bulk-gex/v8/rna-seq/"
                                   f"{GTEX_FILES['v10']}")
    assert rep.ok, rep.summary()
    for v in ("v8", "v10"):
        assert (tmp_path / GTEX_FILES[v]).read_bytes() == synth_small.gtex[v].read_bytes()
