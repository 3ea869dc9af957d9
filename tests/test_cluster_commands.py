"""Every computing command on a real `dask scheduler` + 2 `dask worker` processes (the session's
``dask_cluster``): the same output as on threads, and the workers ran the tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _cluster import count_tasks
from click.testing import CliRunner

from atlas_engine.cli import cli
from atlas_engine.convert.donor import convert_microarray

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def ahba(synth_small, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cl_ahba") / "ahba.zarr"
    convert_microarray(synth_small.dest, path, donors=["9861", "10021", "12876"],
                       probe_chunk=64, sample_chunk=8)
    return path


@pytest.fixture(scope="module")
def brainspan(synth_small, tmp_path_factory) -> Path:
    from atlas_engine.convert.brainspan import convert_brainspan

    path = tmp_path_factory.mktemp("cl_bs") / "bs.zarr"
    convert_brainspan(synth_small.brainspan, path, gene_chunk=32, sample_chunk=16)
    return path


@pytest.fixture(scope="module")
def cells(ahba, tmp_path_factory) -> Path:
    from atlas_engine.celltypes.convert import convert_celltypes
    from atlas_engine.store.open import open_store
    from atlas_engine.testing.synth_celltypes import CellTypeWorldSpec, write_dataset

    root = tmp_path_factory.mktemp("cl_cells")
    probes = open_store(ahba).probes
    genes = probes.dropna(subset=["gene_symbol", "entrez_id"])
    genes = genes[genes["entrez_id"] > 0].drop_duplicates("gene_symbol")
    genes = genes.drop_duplicates("entrez_id")
    _, files = write_dataset(root, "human-m1", CellTypeWorldSpec(
        n_cells=300, n_genes=min(100, len(genes)), n_clusters=5, seed=4), symbols=genes)
    convert_celltypes(files[0].parent, root / "m1.zarr", block_rows=37)
    return root / "m1.zarr"


def _both(args: list[str], address: str, out: Path, name: str = "out.csv",
          ) -> tuple[Path, Path, dict[str, int]]:
    """Run ``args`` on threads, then on the cluster; the two outputs and the tasks each worker
    ran for the second."""
    runner = CliRunner()
    a, b = out / "threads", out / "cluster"
    a.mkdir(parents=True, exist_ok=True)
    b.mkdir(parents=True, exist_ok=True)
    r = runner.invoke(cli, [*args, "--out", str(a / name)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with count_tasks(address) as ran:
        r = runner.invoke(cli, [*args, "--out", str(b / name), "--scheduler", address],
                          catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert sum(ran.values()) > 0, f"the workers ran no task: {ran}"
    return a / name, b / name, ran


def _same_csv(a: Path, b: Path, **kw) -> None:
    pd.testing.assert_frame_equal(pd.read_csv(a, **kw), pd.read_csv(b, **kw), rtol=1e-6)


@pytest.mark.parametrize("by,extra", [
    ("structure", ["--combine", "pooled"]),
    ("depth:3", ["--stat", "median", "--combine", "combined"]),
    ("broad", ["--stat", "std", "--combine", "each"]),
    ("4008,4249", ["--collapse", "gene:max_variance"]),
    ("depth:4", ["--collapse", "gene:mean", "--stat", "max"]),
])
def test_aggregate_microarray(ahba, dask_cluster, tmp_path, by, extra):
    a, b, ran = _both(["aggregate", str(ahba), "--by", by, *extra], dask_cluster, tmp_path)
    _same_csv(a, b)
    assert len(pd.read_csv(a)) > 0


@pytest.mark.parametrize("by,extra", [
    ("period", ["--transform", "log2"]),
    ("period,region", ["--stat", "median", "--combine", "pooled"]),
])
def test_aggregate_brainspan(brainspan, dask_cluster, tmp_path, by, extra):
    a, b, _ = _both(["aggregate", str(brainspan), "--by", by, *extra], dask_cluster, tmp_path)
    _same_csv(a, b)


@pytest.mark.parametrize("by,stat", [("cluster", "mean,frac,median"),
                                     ("class,subclass", "trimmed_mean,cpm")])
def test_aggregate_cell_types(cells, dask_cluster, tmp_path, by, stat):
    a, b, _ = _both(["aggregate", str(cells), "--by", by, "--stat", stat], dask_cluster,
                    tmp_path)
    for part in ["groups", *stat.split(",")]:   # one table per statistic
        _same_csv(a.with_name(f"out.{part}.csv"), b.with_name(f"out.{part}.csv"))


def test_trajectory(brainspan, dask_cluster, tmp_path):
    from atlas_engine.store.brainspan import open_brainspan

    genes = open_brainspan(brainspan).genes["gene_symbol"].astype(str).iloc[:3].tolist()
    a, b, _ = _both(["trajectory", str(brainspan), *genes], dask_cluster, tmp_path)
    _same_csv(a, b)
    _same_csv(a.with_name("out.samples.csv"), b.with_name("out.samples.csv"))


@pytest.mark.parametrize("kind", ["ahba", "brainspan"])
def test_crossref(ahba, brainspan, synth_small, dask_cluster, tmp_path, kind):
    store = ahba if kind == "ahba" else brainspan
    a, b, _ = _both(["crossref", str(store), str(synth_small.gtex["v8"])], dask_cluster,
                    tmp_path)
    _same_csv(a, b)
    assert pd.read_csv(a)["spearman"].notna().any()


def test_markers(cells, ahba, dask_cluster, tmp_path):
    a, b, _ = _both(["markers", str(cells), str(ahba), "--n", "5", "--regions", "depth:3"],
                    dask_cluster, tmp_path)
    _same_csv(a, b, index_col=0)
    _same_csv(a.with_name("out.signatures.csv"), b.with_name("out.signatures.csv"))


def test_voxels(synth_small, dask_cluster, tmp_path):
    from atlas_engine.store.graph import ontology_from_structure_graph
    from atlas_engine.volumes.nifti import write_nifti

    onto = ontology_from_structure_graph(synth_small.structure_graph)
    rng = np.random.default_rng(5)
    ids = np.r_[0, 0, np.asarray(onto.ids)[:40]]
    labels = rng.choice(ids, size=(21, 19, 37)).astype(np.int32)
    vol = write_nifti(tmp_path / "ann.nii", (labels[:, :, k:k + 5] for k in range(0, 37, 5)),
                      labels.shape, np.int32, np.eye(4))
    a, b, _ = _both(["voxels", str(vol), str(synth_small.structure_graph)], dask_cluster,
                    tmp_path)
    _same_csv(a, b, index_col=0)
    got = pd.read_csv(b, index_col=0)["voxels_self"]
    own = pd.Series(labels[labels > 0]).value_counts()
    assert got[own.index].tolist() == own.tolist()
    assert got.drop(own.index).eq(0).all()


def test_maps_says_it_runs_here():
    r = CliRunner().invoke(cli, ["maps", "--help"])
    assert "no --workers/--scheduler" in " ".join(r.output.split())
    from atlas_engine.cli.maps import maps_cmd

    # refused as an unknown option, never accepted and ignored
    assert not {"workers", "scheduler"} & {p.name for p in maps_cmd.params}


def test_bench_cluster_variant(ahba, dask_cluster, tmp_path):
    with count_tasks(dask_cluster) as ran:
        r = CliRunner().invoke(cli, ["bench", "--variant", "structure-cluster", "--scheduler",
                                     dask_cluster, str(ahba)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "| structure-cluster |" in r.output and "failed" not in r.output, r.output
    assert sum(ran.values()) > 0, ran


def test_workers_option_starts_a_local_cluster(ahba, tmp_path, local_cluster_tasks):
    """--workers N: a LocalCluster of processes whose workers ran the aggregation's tasks,
    same numbers as threads."""
    args = ["aggregate", str(ahba), "--by", "depth:3", "--collapse", "gene:mean"]
    runner = CliRunner()
    r1 = runner.invoke(cli, [*args, "--out", str(tmp_path / "t.csv")], catch_exceptions=False)
    assert local_cluster_tasks.clusters == 0
    r2 = runner.invoke(cli, [*args, "--workers", "2", "--out", str(tmp_path / "w.csv")],
                       catch_exceptions=False)
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    assert local_cluster_tasks.clusters == 1
    assert local_cluster_tasks.executed > 0, "the workers ran no task"
    ran = local_cluster_tasks.ran(["_reduce_rows"])
    assert all(n > 0 for n in ran.values()), ran
    _same_csv(tmp_path / "t.csv", tmp_path / "w.csv")


def test_verify_runs_its_chunk_checks_on_the_cluster(ahba, dask_cluster):
    """`verify --scheduler` checks the matrices on the workers and reports as on threads."""
    import json

    runner = CliRunner()
    r = runner.invoke(cli, ["verify", str(ahba), "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with count_tasks(dask_cluster) as ran:
        r2 = runner.invoke(cli, ["verify", str(ahba), "--json", "--scheduler", dask_cluster],
                           catch_exceptions=False)
    assert r2.exit_code == 0, r2.output
    assert sum(ran.values()) > 0, f"the workers ran no task: {ran}"
    assert json.loads(r2.output) == json.loads(r.output)
