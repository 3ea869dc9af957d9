"""Cell Types: generator, count parser, conversion (both layouts), aggregation parity."""

from __future__ import annotations

import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from atlas_engine.celltypes.aggregate import aggregate_cells
from atlas_engine.celltypes.convert import convert_celltypes
from atlas_engine.convert.countparse import iter_count_blocks
from atlas_engine.errors import ConfigError, FormatError
from atlas_engine.kernels.sparse import csr_group_stats
from atlas_engine.testing.synth_celltypes import (
    CellTypeWorldSpec,
    log2cpm,
    write_dataset,
)

ad = pytest.importorskip("anndata")
SPEC = CellTypeWorldSpec(n_cells=260, n_genes=150, n_clusters=7, seed=3)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    root = tmp_path_factory.mktemp("ctw")
    out = {}
    for name in ("human-m1", "human-mca", "mouse-ctx-hpf-10x", "human-mtg", "mouse-visp"):
        depth = 1.0 if name in ("human-m1", "mouse-ctx-hpf-10x") else 30.0
        world, files = write_dataset(root, name, CellTypeWorldSpec(**{**SPEC.__dict__,
                                                                      "depth": depth}))
        store = root / f"{name}.zarr"
        convert_celltypes(files[0] if files[0].suffix == ".zip" else files[0].parent, store,
                          block_rows=37)
        out[name] = (world, files, store)
    return out


# ------------------------------------------------------------------------------------------
# parser
# ------------------------------------------------------------------------------------------
def test_count_parser_matches_dense_rows() -> None:
    rng = np.random.default_rng(0)
    dense = rng.poisson(0.4, (53, 17)).astype(np.int32)
    text = "".join(f"c{i}," + ",".join(map(str, r)) + "\n" for i, r in enumerate(dense))
    raw = text.encode()
    pieces = [raw[i:i + 97] for i in range(0, len(raw), 97)]
    blocks = list(iter_count_blocks(pieces, 17, 10, nnz_capacity=8))
    got = sparse.vstack([sparse.csr_matrix((b.data, b.indices, b.indptr), shape=(b.n_rows, 17))
                         for b in blocks]).toarray()
    np.testing.assert_array_equal(got, dense)
    assert [n for b in blocks for n in b.names] == [f"c{i}" for i in range(53)]
    assert blocks[-1].end_offset == len(raw)


@pytest.mark.parametrize("line, col, what", [
    ('c1,1,2\nc2,1,x\n', 3, "bad count token 'x'"),
    ('c1,1,2\nc2,1\n', 3, "ragged row"),
    ('c1,1,2\nc2,1,2,3\n', 4, "too many"),
    ('c1,1,2\nc2,1,-2\n', 3, "bad count token '-2'"),
    ('c1,1,2\nc2,1.5,2\n', 2, "bad count token '1.5'"),
    ('c1,1,2\nc2,,2\n', 2, "bad count token ''"),
    ('c1,1,2\nc2,99999999999,2\n', 2, "too large"),
])
def test_count_parser_names_file_line_column(line: str, col: int, what: str) -> None:
    with pytest.raises(FormatError) as exc:
        list(iter_count_blocks([line.encode()], 2, 4, name="m.csv"))
    msg = str(exc.value)
    assert msg.startswith(f"m.csv, line 3, column {col}:"), msg
    assert what in msg


# ------------------------------------------------------------------------------------------
# conversion
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["human-m1", "human-mca", "mouse-ctx-hpf-10x", "human-mtg",
                                  "mouse-visp"])
def test_store_opens_in_anndata_with_exact_counts(worlds: dict, name: str) -> None:
    world, _, store = worlds[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = ad.read_zarr(store)
    assert sparse.issparse(a.X) and a.X.format == "csr"
    assert np.issubdtype(a.X.dtype, np.integer)
    assert (a.X != world.counts()).nnz == 0
    clusters = world.clusters["cluster"].to_numpy()[world.cell_cluster]
    np.testing.assert_array_equal(a.obs["cluster"].astype(str).to_numpy(), clusters)
    assert isinstance(a.obs["cluster"].dtype, pd.CategoricalDtype)
    assert list(a.var_names) == list(world.genes["gene"])
    if name not in ("human-mtg", "mouse-visp"):
        # categories follow Allen's _order column; colours in scanpy's uns convention
        assert list(a.obs["cluster"].cat.categories) == [
            c for c in world.clusters["cluster"] if c in set(clusters)]
        assert len(a.uns["cluster_colors"]) == len(a.obs["cluster"].cat.categories)
    else:
        np.testing.assert_array_equal(a.layers["exon"].toarray() + a.layers["intron"].toarray(),
                                      a.X.toarray())
    assert {"donor", "region"} <= set(a.obs.columns)
    from anndata.experimental import read_lazy

    lazy = read_lazy(store)
    assert lazy.shape == a.shape


def test_mca_quirks(worlds: dict) -> None:
    a = ad.read_zarr(worlds["human-mca"][2])
    # empty class labels (outliers) are missing values, not a "" category
    assert "" not in list(a.obs["class"].cat.categories)
    assert a.obs["class"].isna().sum() > 0
    assert "cell_type_alias" in a.obs.columns  # order column was called cell_type_order


def test_metadata_mismatches_are_reported(worlds: dict, tmp_path: Path) -> None:
    _, files, _ = worlds["human-m1"]
    src = tmp_path / "m1"
    shutil.copytree(files[0].parent, src)
    meta = pd.read_csv(src / "metadata.csv", dtype=str, keep_default_na=False)
    dropped = meta["sample_name"].iloc[:3].tolist()
    extra = meta.iloc[:2].copy()
    extra["sample_name"] = ["ghost-1", "ghost-2"]
    pd.concat([meta.iloc[3:], extra]).to_csv(src / "metadata.csv", index=False)
    rep = convert_celltypes(src, tmp_path / "m1.zarr")
    assert rep["cells_without_metadata"] == 3
    assert rep["cells_without_metadata_first"] == dropped
    assert rep["metadata_rows_without_cells"] == 2
    a = ad.read_zarr(tmp_path / "m1.zarr")
    assert a.n_obs == 260 and a.obs.loc[dropped, "cluster"].isna().all()
    assert int(a.uns["conversion"]["cells_without_metadata"]) == 3


def test_bad_matrix_row_named_and_store_not_published(worlds: dict, tmp_path: Path) -> None:
    _, files, _ = worlds["human-m1"]
    src = tmp_path / "m1"
    shutil.copytree(files[0].parent, src)
    lines = (src / "matrix.csv").read_bytes().split(b"\n")
    fields = lines[100].split(b",")
    fields[5] = b"NA"
    lines[100] = b",".join(fields)
    (src / "matrix.csv").write_bytes(b"\n".join(lines))
    with pytest.raises(FormatError, match=r"matrix.csv, line 101, column 6: bad count token 'NA'"):
        convert_celltypes(src, tmp_path / "bad.zarr", block_rows=16)
    assert not (tmp_path / "bad.zarr").exists()


def test_portal_conversion_resumes(worlds: dict, tmp_path: Path) -> None:
    world, files, _ = worlds["human-m1"]
    seen = []

    class Crash(Exception):
        pass

    def crash_at_96(rows: int) -> None:
        seen.append(rows)
        if rows >= 96:
            raise Crash

    with pytest.raises(Crash):
        convert_celltypes(files[0].parent, tmp_path / "r.zarr", block_rows=32,
                          progress=crash_at_96)
    assert not (tmp_path / "r.zarr").exists()
    rep = convert_celltypes(files[0].parent, tmp_path / "r.zarr", block_rows=32,
                            progress=seen.append)
    assert rep["resumed_at_row"] == 96
    assert seen[3] == 128  # the second run started after the third block
    a = ad.read_zarr(tmp_path / "r.zarr")
    assert (a.X != world.counts()).nnz == 0
    assert list(a.obs_names) == list(ad.read_zarr(worlds["human-m1"][2]).obs_names)


def test_zip_row_ids_checked(worlds: dict, tmp_path: Path) -> None:
    _, files, _ = worlds["human-mtg"]
    src = tmp_path / files[0].name
    with zipfile.ZipFile(files[0]) as zin, zipfile.ZipFile(src, "w") as zout:
        for info in zin.infolist():
            body = zin.read(info)
            if info.filename.endswith("_exon-matrix.csv"):
                rows = body.split(b"\n")
                rows[4] = b'"12345678"' + rows[4][rows[4].index(b","):]
                body = b"\n".join(rows)
            zout.writestr(info, body)
    with pytest.raises(FormatError, match=r"exon-matrix.csv, line 5, column 1: row id '12345678'"):
        convert_celltypes(src, tmp_path / "z.zarr")


# ------------------------------------------------------------------------------------------
# kernels against numpy
# ------------------------------------------------------------------------------------------
def test_csr_kernels_match_numpy() -> None:
    rng = np.random.default_rng(1)
    dense = rng.poisson(0.6, (90, 30)).astype(np.int32)
    labels = rng.integers(-1, 5, 90)
    m = sparse.csr_matrix(dense)
    totals = dense.sum(axis=1).astype(float)
    got = csr_group_stats(m.indptr, m.indices, m.data, labels, totals, 5, 4, 25)
    cpm = np.where(totals[:, None] > 0, dense / np.where(totals > 0, totals, 1)[:, None] * 1e6, 0)
    for g in range(5):
        sel = dense[labels == g][:, 4:25].astype(float)
        assert got["cells"][g] == sel.shape[0]
        np.testing.assert_array_equal(got["nnz"][g], (sel != 0).sum(0))
        np.testing.assert_allclose(got["sum"][g], sel.sum(0))
        np.testing.assert_allclose(got["m2"][g], ((sel - sel.mean(0)) ** 2).sum(0), atol=1e-9)
        np.testing.assert_allclose(got["cpm"][g], cpm[labels == g][:, 4:25].sum(0))
        np.testing.assert_allclose(got["lcpm"][g], np.log2(cpm[labels == g][:, 4:25] + 1).sum(0))


# ------------------------------------------------------------------------------------------
# aggregation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["human-m1", "human-mtg"])
@pytest.mark.parametrize("by", ["cluster", "subclass", "class", "donor", "cluster,donor"])
def test_aggregate_matches_scanpy(worlds: dict, name: str, by: str) -> None:
    sc = pytest.importorskip("scanpy")
    store = worlds[name][2]
    if name == "human-mtg" and by == "subclass":
        with pytest.raises(ConfigError, match="not an obs column"):
            aggregate_cells(store, by)
        return
    res = aggregate_cells(store, by, ["sum", "mean", "var", "nnz"], block_cells=41,
                          band_genes=40)
    a = ad.read_zarr(store)
    cols = by.split(",")
    if len(cols) > 1:
        a.obs["_key"] = a.obs[cols].astype(str).agg("|".join, axis=1)
        key = "_key"
    else:
        key = cols[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sc.get.aggregate(a, by=key, func=["sum", "mean", "count_nonzero", "var"])
    ref = ref[res.groups.index.astype(str)]
    for ours, theirs in (("sum", "sum"), ("mean", "mean"), ("nnz", "count_nonzero"),
                         ("var", "var")):
        np.testing.assert_allclose(res.stats[ours], np.asarray(ref.layers[theirs]),
                                   rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(res.groups["n_cells"],
                                  a.obs[key].value_counts()[res.groups.index.astype(str)])


def test_aggregate_reproduces_allen_tables_and_oracles(worlds: dict) -> None:
    world, files, store = worlds["human-m1"]
    res = aggregate_cells(store, "cluster", "all", block_cells=50, band_genes=33)
    tm = pd.read_csv(files[0].parent / "trimmed_means.csv", index_col=0)
    med = pd.read_csv(files[0].parent / "medians.csv", index_col=0)
    np.testing.assert_allclose(res.table("trimmed_mean")[tm.columns].to_numpy(), tm.to_numpy(),
                               atol=1e-12)
    np.testing.assert_allclose(res.table("median")[med.columns].to_numpy(), med.to_numpy(),
                               atol=1e-12)
    counts = world.counts().toarray().astype(float)
    logv = log2cpm(world.counts())
    cpm = counts / counts.sum(1, keepdims=True) * 1e6
    for i, label in enumerate(res.groups.index):
        rows = world.clusters["cluster"].to_numpy()[world.cell_cluster] == label
        np.testing.assert_allclose(res.stats["cpm"][i], cpm[rows].mean(0), rtol=1e-12)
        np.testing.assert_allclose(res.stats["logcpm"][i], logv[rows].mean(0), rtol=1e-12)
        np.testing.assert_allclose(res.stats["frac"][i], (counts[rows] > 0).mean(0))
    assert (res.groups["n_cells"] <= 3).any()  # tiny clusters: plain mean (nothing trimmed)


def test_aggregate_gene_subset_and_outputs(worlds: dict, tmp_path: Path) -> None:
    world, _, store = worlds["human-m1"]
    genes = list(world.genes["gene"].iloc[[3, 70, 71, 149]]) + ["NOT_A_GENE"]
    res = aggregate_cells(store, "cluster", ["mean", "trimmed_mean"], genes=genes)
    full = aggregate_cells(store, "cluster", ["mean", "trimmed_mean"])
    np.testing.assert_allclose(res.stats["trimmed_mean"], full.stats["trimmed_mean"][:, [3, 70, 71, 149]])
    assert res.missing_genes == ["NOT_A_GENE"]
    from atlas_engine.celltypes.aggregate import write_cell_aggregate

    write_cell_aggregate(res, str(tmp_path / "o.zarr"))
    back = ad.read_zarr(tmp_path / "o.zarr")
    np.testing.assert_allclose(back.layers["mean"], res.stats["mean"])
    paths = write_cell_aggregate(res, str(tmp_path / "o.csv"))
    assert [Path(p).name for p in paths] == ["o.mean.csv", "o.trimmed_mean.csv", "o.groups.csv"]
    assert pd.read_csv(paths[0]).columns[0] == "feature"


# ------------------------------------------------------------------------------------------
# fetch -> convert -> aggregate against the mirror
# ------------------------------------------------------------------------------------------
def test_fetch_convert_aggregate_from_mirror(worlds: dict, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from atlas_engine.cli import cli as main
    from atlas_engine.testing.server import Faults, serving

    mirror = worlds["human-m1"][1][0].parent.parent  # every generated set shares one root
    runner = CliRunner()
    with serving(mirror) as server:
        server.faults = Faults(drop_after=20_000, drop_first=2)  # two bodies cut short
        res = runner.invoke(main, ["fetch", "--dest", str(tmp_path / "raw"), "--base-url",
                                   server.url, "--what", "celltypes:human-m1,celltypes:human-mtg",
                                   "--quiet"])
        assert res.exit_code == 0, res.output
        ranged = [r for r in server.log if r.range]
        assert ranged, "dropped bodies resume with Range"
    raw = tmp_path / "raw"
    m1 = raw / "aibs_human_m1_10x"
    assert {p.name for p in m1.iterdir()} >= {"matrix.csv", "metadata.csv", "trimmed_means.csv",
                                               "medians.csv", "manifest.json"}
    assert (m1 / "matrix.csv").read_bytes() == (mirror / "aibs_human_m1_10x/matrix.csv").read_bytes()
    for src, name in ((m1, "m1"), (raw / worlds["human-mtg"][1][0].name, "mtg")):
        res = runner.invoke(main, ["convert", str(src), str(tmp_path / f"{name}.zarr"),
                                   "--quiet"])
        assert res.exit_code == 0, res.output
        res = runner.invoke(main, ["aggregate", str(tmp_path / f"{name}.zarr"), "--by",
                                   "cluster", "--stat", "mean,trimmed_mean", "--out",
                                   str(tmp_path / f"{name}.csv"), "--quiet"])
        assert res.exit_code == 0, res.output
    ours = pd.read_csv(tmp_path / "m1.trimmed_mean.csv", index_col=0)
    allen = pd.read_csv(m1 / "trimmed_means.csv", index_col=0)
    np.testing.assert_allclose(ours[allen.columns].to_numpy(), allen.to_numpy(), atol=1e-12)


def test_fetch_unknown_celltypes_set_is_refused(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from atlas_engine.cli import cli as main

    res = CliRunner().invoke(main, ["fetch", "--dest", str(tmp_path), "--what",
                                    "celltypes:human-xyz", "--base-url", "http://127.0.0.1:9"])
    assert res.exit_code != 0
    assert "unknown cell-types data set 'human-xyz'" in str(res.exception)


# ------------------------------------------------------------------------------------------
# marker signatures across AHBA regions
# ------------------------------------------------------------------------------------------
def test_marker_rule_picks_planted_markers(worlds: dict) -> None:
    from atlas_engine.celltypes.markers import marker_signatures

    world, _, store = worlds["human-m1"]
    agg = aggregate_cells(store, "cluster", ["logcpm", "frac"])
    sigs = marker_signatures(agg, n=5, min_frac=0.5)
    big = agg.groups.index[agg.groups["n_cells"] >= 10]
    for t in big:
        assert sigs[t], t
        # every signature gene is higher in its type than in any other type
        g = list(agg.groups.index).index(t)
        cols = [list(agg.genes.index).index(s) for s in sigs[t]]
        lc = agg.stats["logcpm"][:, cols]
        assert (lc[g] > np.delete(lc, g, axis=0).max(axis=0)).all()
        assert set(sigs[t]) & set(world.markers[t])  # the planted markers are found


def test_score_regions_is_mean_z() -> None:
    from atlas_engine.celltypes.markers import score_regions

    regions = pd.DataFrame({"A": [1.0, 2.0, 3.0], "B": [3.0, 3.0, 6.0], "C": [0.0, 1.0, 0.0]},
                           index=["r1", "r2", "r3"])
    res = score_regions(regions, {"t1": ["a", "B", "ZZZ"], "t2": ["ZZZ"]})
    z = (regions - regions.mean()) / regions.std(ddof=1)
    np.testing.assert_allclose(res.scores["t1"], z[["A", "B"]].mean(axis=1))
    assert res.scores["t2"].isna().all()
    assert res.found["t1"] == ["A", "B"] and res.missing["t1"] == ["ZZZ"]


def test_markers_command_on_shared_genes(synth_small, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from atlas_engine.cli import cli
    from atlas_engine.convert.donor import convert_microarray
    from atlas_engine.store.open import open_store

    ahba = tmp_path / "ahba.zarr"
    convert_microarray(synth_small.dest, ahba, donors=["9861", "10021"])
    probes = open_store(ahba).probes
    # genes the AHBA gene collapse keeps (probes with an Entrez id)
    genes = probes.dropna(subset=["gene_symbol", "entrez_id"]).drop_duplicates("gene_symbol")
    genes = genes[genes["entrez_id"] > 0].drop_duplicates("entrez_id")
    world, files = write_dataset(tmp_path / "ct", "human-m1", CellTypeWorldSpec(
        n_cells=400, n_genes=min(120, len(genes)), n_clusters=5, seed=4), symbols=genes)
    convert_celltypes(files[0].parent, tmp_path / "m1.zarr")
    res = CliRunner().invoke(cli, ["markers", str(tmp_path / "m1.zarr"), str(ahba), "--n", "5",
                                   "--regions", "depth:3", "--out", str(tmp_path / "s.csv"),
                                   "--heatmap", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    scores = pd.read_csv(tmp_path / "s.csv", index_col=0)
    sigs = pd.read_csv(tmp_path / "s.signatures.csv")
    assert set(scores.columns) == set(sigs["cell_type"])
    assert sigs["in_ahba"].all()  # the two worlds share their genes
    assert scores.notna().any().all() and (tmp_path / "s.png").stat().st_size > 0


def test_order_stats_read_the_store_once_in_many_bands(
        worlds: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import atlas_engine.celltypes.orderstats as os_mod

    store = worlds["human-m1"][2]
    one = aggregate_cells(store, "cluster", ["trimmed_mean", "median"])
    reads: list[tuple[int, int]] = []
    real = os_mod.read_csr_rows

    def spy(path: str, start: int, stop: int) -> tuple:
        reads.append((start, stop))
        return real(path, start, stop)

    monkeypatch.setattr(os_mod, "BAND_VALUES", 50)  # dozens of fine bands
    monkeypatch.setattr(os_mod, "read_csr_rows", spy)
    many = aggregate_cells(store, "cluster", ["trimmed_mean", "median"], block_cells=29,
                           spill_dir=str(tmp_path))
    # every cell read exactly once, in blocks of 29
    assert sorted(reads) == [(a, min(a + 29, 260)) for a in range(0, 260, 29)]
    for s in ("trimmed_mean", "median"):
        np.testing.assert_array_equal(many.stats[s], one.stats[s])
    assert list(tmp_path.iterdir()) == []  # the spill is gone


def test_order_stats_spill_removed_on_error(worlds: dict, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    import atlas_engine.celltypes.orderstats as os_mod

    def boom(*args: object) -> None:
        raise RuntimeError("band failed")

    monkeypatch.setattr(os_mod, "_band_task", boom)
    with pytest.raises(RuntimeError, match="band failed"):
        aggregate_cells(worlds["human-m1"][2], "cluster", ["trimmed_mean"],
                        spill_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_order_stats_refuse_a_full_disk(worlds: dict, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    import shutil as sh

    import atlas_engine.celltypes.orderstats as os_mod

    monkeypatch.setattr(os_mod.shutil, "disk_usage",
                        lambda p: sh._ntuple_diskusage(100, 100, 10))  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="spill about .* GiB .*--spill-dir"):
        aggregate_cells(worlds["human-m1"][2], "cluster", ["median"], spill_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_plan_fine_bands_bounds() -> None:
    from atlas_engine.celltypes.orderstats import plan_fine_bands

    assert plan_fine_bands(50_281, 127, 337_600_000, 4_000_000) == (592, 85)
    assert plan_fine_bands(10, 3, 5, 4_000_000) == (10, 1)
    width, n = plan_fine_bands(100, 2**28, 10**9, 1)
    assert width * 2**28 < 2**31 and width * n >= 100


def test_waves_give_the_same_result(worlds: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import atlas_engine.celltypes.aggregate as agg_mod

    store = worlds["human-mtg"][2]
    one = aggregate_cells(store, "cluster", "all", block_cells=4096)  # one wave
    waves = []
    real = agg_mod.cell_blocks

    def spy(*args: object, **kw: object) -> object:
        waves.append(kw["rows"])
        return real(*args, **kw)

    monkeypatch.setattr(agg_mod, "cell_blocks", spy)
    many = aggregate_cells(store, "cluster", "all", block_cells=32)
    assert waves == [(a, min(a + 64, 260)) for a in range(0, 260, 64)]  # two blocks a wave
    waves.clear()
    banded = aggregate_cells(store, "cluster", "all", block_cells=32, band_genes=40)
    assert len(waves) == 9  # several bands: one block a wave
    for s in one.stats:
        np.testing.assert_allclose(banded.stats[s], one.stats[s], rtol=1e-12, atol=1e-12)
    for s in one.stats:
        np.testing.assert_allclose(many.stats[s], one.stats[s], rtol=1e-12, atol=1e-12)


def test_engine_intermediates_merge_to_the_same_statistics() -> None:
    import dask.array as da

    from atlas_engine.aggregate import specs
    from atlas_engine.aggregate.engine import groupby_reduce

    rng = np.random.default_rng(5)
    x = rng.normal(size=(7, 40))
    labels = rng.integers(-1, 4, 40)
    want = groupby_reduce(x, labels, axis=1, n_groups=4, stats=["mean", "var"])
    a = groupby_reduce(da.from_array(x[:, :25], chunks=(4, 10)), labels[:25], axis=1,
                       n_groups=4, stats=["mean", "var"], finalize=False)
    b = groupby_reduce(x[:, 25:], labels[25:], axis=1, n_groups=4, stats=["mean", "var"],
                       finalize=False)
    import dask

    parts_a = dask.compute(*a["intermediates"])
    top = np.concatenate([p["sum"] for p in parts_a], axis=0)
    assert top.shape == (7, 4)
    merged = {k: np.concatenate([p[k] for p in parts_a], axis=0) for k in parts_a[0]}
    got = specs.finalize(specs.merge([merged, b["intermediates"][0]]),
                         specs.resolve(["mean", "var"]), 1)
    for s in ("mean", "var", "count"):
        np.testing.assert_allclose(got[s], want[s], rtol=1e-12, equal_nan=True)


def test_store_with_unsorted_rows_aggregates_the_same(worlds: dict, tmp_path: Path) -> None:
    """A store written by another tool with columns out of order in its rows: the bands are
    split by copy instead of viewed in place, with the same numbers."""
    from atlas_engine.celltypes.store import open_cell_store, read_rows
    from atlas_engine.kernels.sparse import csr_band_pointers

    store = worlds["human-m1"][2]
    a = ad.read_zarr(store)
    x = a.X.tocsr()
    indices, data = x.indices.copy(), x.data.copy()
    for r in range(x.shape[0]):  # reverse each row's entries
        lo, hi = x.indptr[r], x.indptr[r + 1]
        indices[lo:hi], data[lo:hi] = indices[lo:hi][::-1], data[lo:hi][::-1]
    shuffled = sparse.csr_matrix((data, indices, x.indptr), shape=x.shape)
    assert not shuffled.has_sorted_indices
    b = ad.AnnData(X=shuffled, obs=a.obs, var=a.var)
    with ad.settings.override(zarr_write_format=3, auto_shard_zarr_v3=False), \
            warnings.catch_warnings():          # a Zarr v3 store, as ours are
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        b.write_zarr(tmp_path / "unsorted.zarr")
    got = read_rows(str(tmp_path / "unsorted.zarr"), 0, 50, (0, 60, 150))
    assert got[0].row_end is None  # split, not viewed
    assert csr_band_pointers(x.indptr[:51], x.indices, x.data, np.array([0, 60, 150])) \
        is not None  # the store as converted: viewed
    assert csr_band_pointers(shuffled.indptr[:51], shuffled.indices, shuffled.data,
                             np.array([0, 60, 150])) is None
    want = aggregate_cells(store, "cluster", "all", band_genes=60)
    other = aggregate_cells(open_cell_store(tmp_path / "unsorted.zarr"), "cluster", "all",
                            band_genes=60)
    for s in want.stats:
        np.testing.assert_allclose(other.stats[s], want.stats[s], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stat", ["mean", "trimmed_mean"])
def test_damaged_count_chunk_is_refused(worlds: dict, tmp_path: Path, stat: str) -> None:
    from atlas_engine.errors import DamagedStoreError

    store = tmp_path / "m1.zarr"
    shutil.copytree(worlds["human-m1"][2], store)
    chunk = store / "X" / "data" / "c" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[40] ^= 0xFF  # one flipped byte: the CRC-32C no longer matches
    chunk.write_bytes(bytes(raw))
    with pytest.raises(DamagedStoreError, match=r"X/data, chunk \(0\).*checksum"):
        aggregate_cells(store, "cluster", [stat])
    (store / "X" / "indices" / "c" / "0").unlink()
    chunk.write_bytes(bytes(raw[:10]))
    with pytest.raises(DamagedStoreError, match="X/indices, chunk \\(0\\).*missing"):
        aggregate_cells(store, "cluster", [stat])


def test_writer_records_whether_rows_are_sorted(worlds: dict, tmp_path: Path) -> None:
    import zarr

    from atlas_engine.celltypes.writer import SORTED_ATTR, CsrWriter

    for name in ("human-m1", "human-mtg"):  # both layouts convert to sorted rows
        assert zarr.open_group(worlds[name][2], mode="r")["X"].attrs[SORTED_ATTR] is True
    root = zarr.open_group(tmp_path / "w.zarr", mode="w", zarr_format=3)
    w = CsrWriter(root, "X", 5)
    w.append(np.array([0, 2]), np.array([1, 3], np.int32), np.array([4, 5], np.int32))
    assert root["X"].attrs[SORTED_ATTR] is True
    w.append(np.array([0, 2]), np.array([3, 1], np.int32), np.array([4, 5], np.int32))
    assert root["X"].attrs[SORTED_ATTR] is False
    w.append(np.array([0, 1]), np.array([0], np.int32), np.array([1], np.int32))
    assert root["X"].attrs[SORTED_ATTR] is False  # once unsorted, always
