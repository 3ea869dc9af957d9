"""The abagen-grade pipeline on a dask.distributed cluster: its passes over the store are Dask
tasks, so on a LocalCluster of processes and on `dask scheduler` / `dask worker` subprocesses
(through the CLI's --scheduler) the workers run them, and the table is abagen's golden, the
same as on threads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _cluster import executed_on_workers, subprocess_cluster
from _golden import check_frame, load_golden
from click.testing import CliRunner

from atlas_engine.aggregate.cluster import get_client
from atlas_engine.cli import cli
from atlas_engine.convert.donor import convert_microarray
from atlas_engine.pipeline.expression import get_expression_data
from atlas_engine.testing.synth import write_all

GOLDEN = Path(__file__).parent / "data" / "abagen_golden"
PARAMS = json.loads((GOLDEN / "dk_params.json").read_text())
DK = "desikan-killiany"
#: the passes of a cold run with abagen's defaults, and of a run from the cache
COLD = ("_ibf_task", "_ds_task", "_stripe_task", "_srs_region_sums_task")
WARM = ("_srs_region_sums_task",)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("dk-cluster")
    write_all(root / "raw", probes=PARAMS["probes"], samples_fraction=PARAMS["samples_fraction"],
              seed=PARAMS["seed"], quiet=True, brainspan=False, rnaseq=False)
    return root / "raw"


def _store(raw, dest):
    # small chunks: several chunk rows and columns per donor, so every pass has many tasks
    convert_microarray(raw, dest, dtype="float64", probe_chunk=64, sample_chunk=16)
    return dest


def test_local_cluster_runs_the_pipeline_tasks(raw, tmp_path):
    golden = load_golden("dk")
    threads = get_expression_data(_store(raw, tmp_path / "a.zarr"), DK, DK).expression
    store = _store(raw, tmp_path / "b.zarr")
    with get_client(workers=2, memory_limit="1GB") as client:
        assert len(client.scheduler_info()["workers"]) == 2
        cold = get_expression_data(store, DK, DK)
        ran = executed_on_workers(client, COLD)
        assert all(n > 0 for n in ran.values()), ran
        warm = get_expression_data(store, DK, DK)
        again = executed_on_workers(client, COLD)
    assert not any(warm.computed.values())
    assert again["_srs_region_sums_task"] > ran["_srs_region_sums_task"]  # the cached run's region means
    assert again["_ibf_task"] == ran["_ibf_task"]           # ... and no IBF pass
    for res in (cold, warm):
        check_frame(res.expression, golden, "defaults")
        pd.testing.assert_frame_equal(res.expression, threads, check_exact=True)


def test_cli_on_subprocess_cluster_matches_threads(raw, tmp_path, local_cluster_tasks):
    from distributed import Client

    args = ["aggregate", None, "--by", f"atlas:{DK}", "--atlas-info", DK, "--quiet"]
    outs = {}
    for name in ("threads", "workers", "scheduler"):
        args[1] = str(_store(raw, tmp_path / f"{name}.zarr"))
        outs[name] = [*args, "--out", str(tmp_path / f"{name}.csv")]
    outs["workers"] += ["--workers", "2"]
    for name in ("threads", "workers"):
        r = CliRunner().invoke(cli, outs[name])
        assert r.exit_code == 0, r.output
        assert "note:" not in r.output
    # --workers 2: a local cluster of processes, whose workers ran the pipeline's passes
    assert local_cluster_tasks.clusters == 1
    ran_local = local_cluster_tasks.ran(COLD)
    assert all(n > 0 for n in ran_local.values()), ran_local
    with subprocess_cluster(tmp_path) as address:
        r = CliRunner().invoke(cli, [*outs["scheduler"], "--scheduler", address])
        assert r.exit_code == 0, r.output
        with Client(address, timeout="10s") as client:
            ran = executed_on_workers(client, COLD)
    assert all(n > 0 for n in ran.values()), ran
    frames = {name: pd.read_csv(tmp_path / f"{name}.csv", index_col="label") for name in outs}
    check_frame(frames["threads"], load_golden("dk"), "defaults")
    for name in ("workers", "scheduler"):
        pd.testing.assert_frame_equal(frames[name], frames["threads"], check_exact=True)
        np.testing.assert_array_equal(frames[name].columns, frames["threads"].columns)


def test_average_over_many_chunk_rows_matches_one_chunk_row(raw, tmp_path):
    """probe_selection='average' sums each gene's probes over every block holding them (a
    gene absent from a block adds nothing): the same means with 64-row chunks as with one
    chunk row for all probes."""
    one = tmp_path / "one.zarr"
    convert_microarray(raw, one, dtype="float64", probe_chunk=1 << 16, sample_chunk=16)
    many = _store(raw, tmp_path / "many.zarr")
    kw = dict(probe_selection="average", cache=False)
    want = get_expression_data(one, DK, DK, **kw).expression
    got = get_expression_data(many, DK, DK, **kw).expression
    assert want.notna().any().any()
    pd.testing.assert_frame_equal(got, want, rtol=1e-12)
