"""Store-level aggregation on a LocalCluster of processes and on a `dask scheduler`/`dask worker`
cluster started as subprocesses (through the CLI's --scheduler): same numbers as threads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _cluster import executed
from click.testing import CliRunner

from atlas_engine.aggregate.api import aggregate
from atlas_engine.aggregate.cluster import get_client
from atlas_engine.aggregate.collapse import collapse_probes
from atlas_engine.cli import cli
from atlas_engine.convert.donor import convert_microarray


@pytest.fixture(scope="module")
def store(synth_small, tmp_path_factory):
    path = tmp_path_factory.mktemp("cluster") / "s.zarr"
    convert_microarray(synth_small.dest, path, probe_chunk=64, sample_chunk=8)
    return path


def test_local_cluster_matches_threads(store):
    kw = dict(by="depth:4", combine="combined", collapse="max_variance", block_bytes=1 << 16)
    exp = aggregate(store, **kw)
    exp_genes = collapse_probes(store)
    with get_client(workers=2, memory_limit="1GB") as client:
        assert len(client.scheduler_info()["workers"]) == 2
        before = executed(client)
        got = aggregate(store, **kw)
        mid = executed(client)
        got_genes = collapse_probes(store)
        after = executed(client)
    assert mid > before and after > mid, (before, mid, after)   # the workers did both
    np.testing.assert_allclose(got.values, exp.values, rtol=1e-6, equal_nan=True)
    assert got.features.equals(exp.features)
    np.testing.assert_allclose(got_genes.values, exp_genes.values, rtol=1e-6)


def _threads_then_cluster(args: list[str], tmp_path, address: str, suffix: str):
    """Run the command ``args`` on threads, then with ``--scheduler address`` (asserting the
    cluster's workers ran tasks); the two output paths."""
    from distributed import Client

    threads, cluster = tmp_path / f"threads{suffix}", tmp_path / f"cluster{suffix}"
    r = CliRunner().invoke(cli, [*args, "--out", str(threads)])
    assert r.exit_code == 0, r.output
    with Client(address) as watcher:
        before = executed(watcher)
        r = CliRunner().invoke(cli, [*args, "--scheduler", address, "--out", str(cluster)])
        assert r.exit_code == 0, r.output
        assert executed(watcher) > before  # the workers ran the tasks
    return threads, cluster


def test_cli_on_subprocess_cluster_matches_threads(store, tmp_path, dask_cluster):
    args = ["aggregate", str(store), "--by", "broad", "--stat", "std", "--combine", "pooled",
            "--collapse", "gene:mean"]
    threads, cluster = _threads_then_cluster(args, tmp_path, dask_cluster, ".csv")
    pd.testing.assert_frame_equal(pd.read_csv(threads), pd.read_csv(cluster), rtol=1e-6)


def test_expression_command_on_subprocess_cluster_matches_threads(store, tmp_path, dask_cluster):
    from atlas_engine.store.open import open_store

    genes = list(open_store(store).probes.gene_symbol.value_counts().index[:3])
    args = ["expression", str(store), *genes, "--layout", "wide"]
    threads, cluster = _threads_then_cluster(args, tmp_path, dask_cluster, ".parquet")
    a, b = pd.read_parquet(threads), pd.read_parquet(cluster)
    assert len(a) >= 3 and a.shape[1] > 3
    pd.testing.assert_frame_equal(a, b)
