"""The user-facing jobs end to end: demo, aggregate/expression commands, store-backed API."""

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from atlas_engine import open_store
from atlas_engine.aggregate.api import aggregate
from atlas_engine.cli import cli, main
from atlas_engine.convert.donor import convert_microarray
from atlas_engine.fetch.api import HumanBrainAtlas
from atlas_engine.job import MATRIX_NAME, run_demo
from atlas_engine.store.atlas_api import StoreHumanBrainAtlas
from atlas_engine.testing.server import MirrorServer

#: the passes over the store of a cold atlas run with --probe-selection max_variance
ATLAS_PASSES = ("_ibf_task", "_moments_task", "_stripe_task", "_srs_region_sums_task")


def test_demo_end_to_end_offline(tmp_path):
    out = tmp_path / "demo"
    res = run_demo(out=out, probes=300, samples_fraction=0.05, seed=3, flaky=True, quiet=True,
                   by="depth:4", collapse="mean")
    matrix = pd.read_csv(out / MATRIX_NAME)
    assert matrix.columns[:3].tolist() == ["structure_id", "acronym", "name"]
    groups = pd.read_csv(out / "regions_by_genes.groups.csv")
    assert len(groups) == len(matrix)
    # every region with samples has values; every region without has none
    has = groups.n_samples.to_numpy() > 0
    body = matrix.iloc[:, 3:].to_numpy()
    assert np.isfinite(body[has]).any(axis=1).all()
    assert np.isnan(body[~has]).all()
    # the written matrix is the aggregation of the converted store
    again = aggregate(res.store, by="depth:4", collapse="mean")
    np.testing.assert_allclose(body, again.values, rtol=1e-12, equal_nan=True)
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "provenance.json").read_text())
    assert summary["donors"] == [9861, 10021, 12876, 14380, 15496, 15697]
    # the flaky mirror dropped connections: some downloads needed several requests
    assert max(d["requests"] for d in summary["downloads"]) > 1
    text = (out / "summary.md").read_text()
    assert "depth:4" in text
    # samples per donor as converted, and those in a region at this level, with the reason
    st = open_store(res.store)
    in_store = st.samples["donor"].value_counts()
    assert summary["samples_per_donor"] == {str(d): int(in_store[d]) for d in st.donors}
    assert sum(summary["samples_per_donor"].values()) - \
        sum(summary["samples_in_regions_per_donor"].values()) == summary["unassigned_samples"]
    d = st.donors[0]
    assert (f"{d}: {summary['samples_per_donor'][str(d)]} → "
            f"{summary['samples_in_regions_per_donor'][str(d)]}") in text
    assert "fewer samples count here than `convert` reports" in text
    # a second demo serves the same files on another port: nothing downloaded or converted
    run_demo(out=out, probes=300, samples_fraction=0.05, seed=3, quiet=True, by="depth:4",
             collapse="mean")
    again = json.loads((out / "provenance.json").read_text())
    assert {d["status"] for d in again["downloads"]} == {"skipped"}
    assert again["converted"] == [] and again["skipped_conversion"] == summary["donors"]


@pytest.mark.parametrize("stat", ["sum", "var"])
def test_demo_matrix_is_the_store_aggregation_for_each_offered_stat(stat, tmp_path):
    out = tmp_path / "demo"
    res = run_demo(out=out, probes=200, samples_fraction=0.05, seed=5, quiet=True,
                   by="depth:4", collapse="mean", stat=stat)
    body = pd.read_csv(out / MATRIX_NAME).iloc[:, 3:].to_numpy()
    again = aggregate(res.store, by="depth:4", stat=stat, collapse="mean")
    np.testing.assert_allclose(body, again.values, rtol=1e-6, equal_nan=True)
    assert np.isfinite(body).any()
    assert f"Values: {stat} per region" in (out / "summary.md").read_text()


def test_expression_command_matches_raw_csv_tokens(synth_small, synth_store, tmp_path):
    st = open_store(synth_store)
    gene = st.probes.gene_symbol.value_counts().index[0]  # a gene with several probes
    out = tmp_path / "e.csv"
    r = CliRunner().invoke(cli, ["expression", str(synth_store), gene, "NOPE", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "not in the store: NOPE" in r.output
    table = pd.read_csv(out)
    donor = 12876
    with zipfile.ZipFile(synth_small.dest / f"normalized_microarray_donor{donor}.zip") as zf:
        raw = pd.read_csv(io.BytesIO(zf.read("MicroarrayExpression.csv")), header=None,
                          index_col=0, dtype=str)
    raw.index = raw.index.astype(np.int64)
    sub = table[table.donor == donor]
    for pid, rows in sub.groupby("probe_id"):
        want = np.array([np.float32(float(t)) for t in raw.loc[pid]], dtype=np.float32)
        got = rows.sort_values("sample_id").expression.to_numpy(dtype=np.float32)
        np.testing.assert_array_equal(got, want)


def test_aggregate_command_writes_table_and_side_tables(synth_store, tmp_path):
    out = tmp_path / "r.parquet"
    r = CliRunner().invoke(cli, ["aggregate", str(synth_store), "--by", "depth:3", "--collapse",
                                 "gene:max_intensity", "--drop-empty", "--out", str(out)])
    assert r.exit_code == 0, r.output
    t = pd.read_parquet(out)
    groups = pd.read_csv(tmp_path / "r.groups.csv")
    assert len(t) == int((groups.n_samples > 0).sum())
    genes = pd.read_csv(tmp_path / "r.genes.csv", index_col=0)
    assert set(genes.index) == set(t.columns[3:])
    assert (genes.chosen_probe > 0).all()


def test_cli_errors_are_one_line(synth_store, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["aggregate", str(synth_store), "--collapse", "gene:pc9", "--out",
              str(tmp_path / "x.csv")])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "collapse" in err and "\n" not in err
    with pytest.raises(SystemExit):
        main(["aggregate", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "x.csv")])
    assert not (tmp_path / "x.csv").exists()


def test_store_backed_atlas_matches_live_api(synth_small, synth_store):
    local = StoreHumanBrainAtlas(synth_store)
    gene = local.get_genes().acronym.iloc[0]
    with MirrorServer(synth_small.dest) as srv:
        live = HumanBrainAtlas(base_url=srv.url, cache=False)
        e_live, s_live, p_live = live.get_microarray_expression([gene], donors=[9861, 15496])
        e_loc, s_loc, p_loc = local.get_microarray_expression([gene], donors=[9861, 15496])
        donors_live = live.get_donors()
    assert list(e_live.index) == list(e_loc.index)
    np.testing.assert_allclose(e_loc.to_numpy(), e_live.to_numpy(), rtol=1e-6)
    assert s_live["sample_well"].tolist() == s_loc["sample_well"].tolist()
    assert s_live["structure_id"].tolist() == s_loc["structure_id"].tolist()
    assert sorted(p_loc["id"]) == sorted(p_live["id"])
    assert sorted(local.get_donors().id) == sorted(donors_live.id)


def test_aggregate_command_atlas_runs_the_abagen_pipeline(e2e_source, tmp_path,
                                                          local_cluster_tasks):
    """--by atlas:IMAGE goes through get_expression_data with abagen's options; with
    --workers 1 the pipeline's passes run on the local cluster's worker."""
    from _golden import GOLDEN as golden
    from _golden import store_copy

    from atlas_engine.pipeline.expression import get_expression_data

    store = store_copy(e2e_source, tmp_path / "s.zarr")
    atlas, info = golden / "e2e_atlas.nii.gz", golden / "e2e_atlas_info.csv"
    out = tmp_path / "dk.csv"
    r = CliRunner().invoke(cli, [
        "aggregate", str(store), "--by", f"atlas:{atlas}", "--atlas-info", str(info),
        "--no-corrected-mni", "--no-reannotated", "--probe-selection", "max_variance",
        "--return-counts", "--workers", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    # --workers 1: the pipeline's passes ran on a one-worker local cluster (no note any more)
    assert "note:" not in r.output
    assert local_cluster_tasks.clusters == 1 and local_cluster_tasks.executed > 0
    ran = local_cluster_tasks.ran(ATLAS_PASSES)
    assert all(n > 0 for n in ran.values()), (ran, local_cluster_tasks.by_prefix)
    got = pd.read_csv(out, index_col=0)
    want = get_expression_data(store, str(atlas), str(info), corrected_mni=False,
                               reannotated=False, probe_selection="max_variance").expression
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12)
    assert list(got.columns) == [str(c) for c in want.columns]
    for side in ("probes", "genes", "samples"):
        assert (tmp_path / f"dk.{side}.csv").exists()


def test_convert_reuses_fetch_manifest_sha256(synth_small, tmp_path):
    import hashlib
    import shutil

    import zarr

    from atlas_engine.fetch.manifest import Manifest

    raw = tmp_path / "raw"
    raw.mkdir()
    name = "normalized_microarray_donor12876.zip"
    shutil.copy2(synth_small.dest / name, raw / name)
    true_sha = hashlib.sha256((raw / name).read_bytes()).hexdigest()
    m = Manifest(raw)
    m.record(raw / name, url="http://x/1", sha256="f" * 64)  # what fetch recorded
    m.save()
    convert_microarray(raw, tmp_path / "a.zarr")
    prov = zarr.open_group(tmp_path / "a.zarr", mode="r")["donors/12876"].attrs["provenance"]
    assert prov["sha256"] == "f" * 64          # taken from the manifest, not re-hashed
    (raw / name).touch()                        # mtime no longer matches the manifest
    convert_microarray(raw, tmp_path / "b.zarr")
    prov = zarr.open_group(tmp_path / "b.zarr", mode="r")["donors/12876"].attrs["provenance"]
    assert prov["sha256"] == true_sha


@pytest.mark.parametrize("command", ["run", "demo"])
def test_run_and_demo_aggregate_on_the_scheduler(command, synth_small, dask_cluster, tmp_path):
    """--scheduler: the aggregate stage's tasks run on the cluster's workers (the session's
    `dask scheduler` + `dask worker` processes), and the matrix is the threaded run's."""
    from contextlib import ExitStack

    from _cluster import executed_on_workers
    from distributed import Client

    def aggregate_tasks() -> int:
        with Client(dask_cluster, timeout="10s") as client:
            return executed_on_workers(client, ["_reduce_rows"])["_reduce_rows"]

    args = [command, "--by", "depth:4", "--quiet"]
    with ExitStack() as stack:
        if command == "run":
            srv = stack.enter_context(MirrorServer(synth_small.dest))
            args += ["--base-url", srv.url, "--donors", "9861,10021",
                     "--data-dir", str(tmp_path / "data")]
        else:
            args += ["--probes", "300", "--samples-fraction", "0.03", "--seed", "3"]
        r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "threads")])
        assert r.exit_code == 0, r.output
        before = aggregate_tasks()
        r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "cluster"),
                                     "--scheduler", dask_cluster])
        assert r.exit_code == 0, r.output
        assert aggregate_tasks() > before, "the workers ran none of the aggregate's tasks"
    threads = pd.read_csv(tmp_path / "threads" / MATRIX_NAME)
    assert len(threads) > 0 and threads.shape[1] > 3
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "cluster" / MATRIX_NAME), threads,
                                  check_exact=True)
