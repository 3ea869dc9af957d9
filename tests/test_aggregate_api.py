"""Store-level aggregation against a plain pandas oracle on generated data."""

import warnings

import numpy as np
import pandas as pd
import pytest

from atlas_engine import open_store
from atlas_engine.aggregate.api import aggregate
from atlas_engine.aggregate.inputs import parse_genes
from atlas_engine.convert.donor import convert_microarray
from atlas_engine.errors import ConfigError


@pytest.fixture(scope="module")
def store(synth_small, tmp_path_factory):
    path = tmp_path_factory.mktemp("agg") / "s.zarr"
    # odd chunk sizes so blocks do not line up with anything
    convert_microarray(synth_small.dest, path, probe_chunk=37, sample_chunk=5)
    return open_store(path)


def _oracle_frames(st):
    x = np.asarray(st.expression.values, dtype=np.float64)  # (P, S)
    samples = st.samples.reset_index(drop=True)
    return x, samples


def _depth_labels(st, samples, depth):
    return pd.Series(st.ontology.ancestor_at_depth(samples.structure_id, depth), index=samples.index)


def _group_stat(x, samples, labels, how):
    df = pd.DataFrame(x.T)
    df["g"] = labels.to_numpy()
    df["donor"] = samples.donor.to_numpy()
    df = df[df.g >= 0]
    return df, how


def test_combined_mean_matches_mean_of_donor_means(store):
    x, samples = _oracle_frames(store)
    labels = _depth_labels(store, samples, 4)
    res = aggregate(store, by="depth:4", stat="mean", combine="combined")
    df = pd.DataFrame(x.T)
    df["g"] = labels.to_numpy()
    df["donor"] = samples.donor.to_numpy()
    df = df[df.g >= 0]
    per_donor = df.groupby(["donor", "g"]).mean()            # NaN-skipping donor means
    oracle = per_donor.groupby(level="g").mean()             # mean over donors having the group
    got = pd.DataFrame(res.values, index=res.groups.structure_id).loc[oracle.index]
    np.testing.assert_allclose(got.to_numpy(), oracle.to_numpy(), rtol=1e-6, atol=1e-9)
    # groups without samples are reported, with NaN values and zero counts
    empty = res.groups[res.groups.n_samples == 0]
    assert len(empty) > 0
    assert np.isnan(res.values[empty.index]).all()
    counts = df.groupby(["g", "donor"]).size().unstack(fill_value=0)
    n = res.n_samples.loc[counts.index, [str(d) for d in counts.columns]]
    np.testing.assert_array_equal(n.to_numpy(), counts.to_numpy())


@pytest.mark.parametrize("stat", ["mean", "std", "min", "max", "median", "sum", "count"])
def test_pooled_stats_match_pandas(store, stat):
    x, samples = _oracle_frames(store)
    res = aggregate(store, by="structure", stat=stat, combine="pooled")
    df = pd.DataFrame(x.T)
    df["g"] = samples.structure_id.to_numpy()
    oracle = getattr(df.groupby("g"), stat)()
    got = pd.DataFrame(res.values, index=res.groups.structure_id).loc[oracle.index]
    if stat in ("sum",):
        oracle = oracle.where(df.groupby("g").count() > 0)
    np.testing.assert_allclose(got.to_numpy(), oracle.to_numpy(), rtol=1e-6, atol=1e-9)


def test_each_and_named_structures_with_descendants(store):
    x, samples = _oracle_frames(store)
    onto = store.ontology
    res = aggregate(store, by="4008,4275", stat="mean", combine="each")
    assert res.values.shape == (6, 2, x.shape[0])
    for k, d in enumerate(res.donors):
        for j, g in enumerate([4008, 4275]):
            cols = [i for i, s in enumerate(samples.structure_id)
                    if samples.donor[i] == d and g in onto.path(s)]
            want = np.nanmean(x[:, cols], axis=1) if cols else np.full(x.shape[0], np.nan)
            np.testing.assert_allclose(res.values[k, j], want, rtol=1e-6)
    frame = res.to_frame()
    assert frame.columns[:4].tolist() == ["donor", "structure_id", "acronym", "name"]


def test_collapse_to_genes(store):
    x, samples = _oracle_frames(store)
    probes = store.probes.reset_index(drop=True)
    res_p = aggregate(store, by="depth:3", combine="pooled")
    refseq = probes.entrez_id.to_numpy() != -1
    assert 0 < (~refseq).sum() < len(probes)
    for method in ("mean", "max_intensity", "max_variance"):
        res = aggregate(store, by="depth:3", combine="pooled", collapse=method,
                        keep_non_refseq=True)
        assert list(res.features.index) == sorted(probes.gene_symbol.unique())
        for gene in res.features.index[:15]:
            rows = np.flatnonzero(probes.gene_symbol.to_numpy() == gene)
            j = res.feature_names.index(gene)
            if method == "mean":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN regions
                    want = np.nanmean(res_p.values[:, rows], axis=1)
            else:
                score = (np.nanmean(x[rows], axis=1) if method == "max_intensity"
                         else np.nanvar(x[rows], axis=1, ddof=1))
                order = np.lexsort((probes.probe_id.to_numpy()[rows], -score))
                best = rows[order[0]]
                assert res.features.loc[gene, "chosen_probe"] == probes.probe_id[best]
                want = res_p.values[:, best]
            np.testing.assert_allclose(res.values[:, j], want, rtol=1e-6)


def test_non_refseq_probes_are_left_out_of_gene_collapse(store):
    probes = store.probes
    res = aggregate(store, by="depth:3", collapse="mean")
    want = sorted(probes.loc[probes.entrez_id != -1, "gene_symbol"].unique())
    assert list(res.features.index) == want
    assert res.params["non_refseq_probes_left_out"] == int((probes.entrez_id == -1).sum())


def test_combined_collapse_scores_pool_all_samples(store):
    x, _ = _oracle_frames(store)
    probes = store.probes.reset_index(drop=True)
    res = aggregate(store, by="depth:3", combine="combined", collapse="max_variance",
                    keep_non_refseq=True)
    var = np.nanvar(x, axis=1, ddof=1)
    for gene, row in res.features.iterrows():
        rows = np.flatnonzero(probes.gene_symbol.to_numpy() == gene)
        assert row.chosen_probe == probes.probe_id[rows[np.argmax(var[rows])]]


def test_gene_selection_reports_missing(store, tmp_path):
    p = store.probes
    genes = p.loc[p.entrez_id != -1, "gene_symbol"].unique()[:3].tolist()
    f = tmp_path / "genes.txt"
    f.write_text("# a gene list\n" + "\n".join(genes) + "\nNOT_A_GENE\n")
    assert parse_genes(f"@{f}") == [*genes, "NOT_A_GENE"]
    res = aggregate(store, by="depth:3", genes=f"@{f}", collapse="mean")
    assert sorted(res.feature_names) == sorted(genes)
    assert res.missing_genes == ["NOT_A_GENE"]
    with pytest.raises(ConfigError, match="none of the genes"):
        aggregate(store, genes="NOT_A_GENE")


def test_bad_options(store):
    with pytest.raises(ConfigError, match="--stat"):
        aggregate(store, stat="mode")
    with pytest.raises(ConfigError, match="--combine"):
        aggregate(store, combine="some")
    with pytest.raises(ConfigError, match="unknown donor 'some'"):
        aggregate(store, donors="some")
    # the old meaning of donors= (the combine mode) is explained, not guessed
    with pytest.raises(ConfigError, match=r"combine='pooled'"):
        aggregate(store, donors="pooled")
    with pytest.raises(ConfigError, match="collapse"):
        aggregate(store, collapse="pc1")


def test_dataset_cube_round_trip(store, tmp_path):
    import xarray as xr

    res = aggregate(store, by="depth:3", combine="each", collapse="mean")
    ds = res.to_dataset()
    path = tmp_path / "cube.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    back = xr.open_dataset(path, engine="h5netcdf")
    np.testing.assert_allclose(back.value.values, res.values)
    assert back.value.dims == ("donor", "group", "gene")


def test_collapse_probes_matches_pandas(store):
    from atlas_engine.aggregate.collapse import collapse_probes

    x, samples = _oracle_frames(store)
    probes = store.probes.reset_index(drop=True)
    got = collapse_probes(store, donors=[12876, 9861])
    cols = np.concatenate([np.flatnonzero(samples.donor == d) for d in (12876, 9861)])
    keep = probes.entrez_id.to_numpy() != -1
    frame = pd.DataFrame(x[keep][:, cols])
    want = frame.groupby(probes.gene_symbol.to_numpy()[keep]).mean()
    assert list(got.gene.values) == list(want.index)
    np.testing.assert_allclose(got.values, want.to_numpy(), rtol=1e-6)
    assert got.donor.values.tolist() == samples.donor.to_numpy()[cols].tolist()


def test_genes_by_symbol_give_gene_columns(store):
    """Asking for genes by symbol gives one column per gene (their probes averaged) without
    --collapse; collapse=None still gives the probes."""
    symbols = store.probes.loc[store.probes.entrez_id != -1, "gene_symbol"]
    genes = symbols.drop_duplicates().iloc[:3].tolist()
    res = aggregate(store, by="depth:3", genes=genes)
    assert sorted(res.feature_names) == sorted(genes)
    assert res.params["collapse"] == "mean"
    want = aggregate(store, by="depth:3", genes=genes, collapse="mean")
    np.testing.assert_array_equal(res.values, want.values)
    probes = aggregate(store, by="depth:3", genes=genes, collapse=None)
    assert set(probes.features.gene_symbol) == set(genes)
    assert aggregate(store, by="depth:3").params["collapse"] == ""  # all probes


def test_cube_indexes_select_by_acronym_name_and_gene(store, tmp_path):
    from atlas_engine.aggregate.result import open_cube
    from atlas_engine.report.tables import write_result

    res = aggregate(store, by="depth:3", collapse=None)
    ds = res.to_dataset()
    g = res.groups.iloc[1]
    one = ds.sel(group=int(g.structure_id))
    assert one.acronym.item() == g.acronym
    by_acr = ds.sel(acronym=g.acronym)
    assert g.structure_id in np.atleast_1d(by_acr.structure_id.values)
    by_name = ds.sel(name=g["name"])
    assert int(by_name.structure_id) == g.structure_id
    sym = res.features.gene_symbol.iloc[0]
    probes_of = res.features.index[res.features.gene_symbol == sym]
    sel = ds.sel(gene_symbol=sym)
    assert sorted(np.atleast_1d(sel.probe.values)) == sorted(probes_of)
    for suffix in (".nc", ".zarr"):
        out = tmp_path / f"cube{suffix}"
        write_result(res, out)
        back = open_cube(out)
        np.testing.assert_array_equal(back.sel(acronym=g.acronym).value.values,
                                      by_acr.value.values)
        np.testing.assert_array_equal(back.sel(gene_symbol=sym).value.values, sel.value.values)


@pytest.mark.parametrize("method", ["max_intensity", "max_variance"])
def test_collapse_keeps_the_best_finite_probe_ties_to_the_smallest_probe_id(method):
    """The gene's probe with the highest finite score; NaN and inf skipped; a tie goes to the
    smallest probe_id whatever the row order (a plain loop as the oracle)."""
    from atlas_engine.aggregate.collapse import _collapse

    rng = np.random.default_rng(7)
    n = 60
    probes = pd.DataFrame({"probe_id": rng.permutation(np.arange(1000, 1000 + n)),
                           "gene_symbol": rng.choice(list("ABCDEFGH"), n)})
    score = rng.integers(0, 4, n).astype(float)          # many ties
    score[rng.random(n) < 0.15] = np.nan
    score[rng.random(n) < 0.05] = np.inf
    score[(probes.gene_symbol == "H").to_numpy()] = np.nan   # a gene without a finite score
    values = rng.normal(size=(3, n))
    counts = rng.integers(1, 9, size=(3, n))
    out, nv, info = _collapse(values, counts, probes, method, score, score)
    genes = sorted(set(probes.gene_symbol))
    for k, g in enumerate(genes):
        best, pick = -np.inf, -1
        for r in sorted(np.flatnonzero(probes.gene_symbol == g), key=lambda r: probes.probe_id[r]):
            if np.isfinite(score[r]) and score[r] > best:
                best, pick = score[r], r
        if pick < 0:
            assert np.isnan(out[:, k]).all() and info.chosen_probe.iloc[k] == -1
        else:
            np.testing.assert_array_equal(out[:, k], values[:, pick])
            np.testing.assert_array_equal(nv[:, k], counts[:, pick])
            assert info.chosen_probe.iloc[k] == probes.probe_id[pick]
