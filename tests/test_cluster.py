"""The same graph on threads, a LocalCluster of processes and a `dask scheduler`/`dask worker`
cluster started as subprocesses on loopback: results must agree."""

from __future__ import annotations

import subprocess
import sys

import dask
import dask.array as da
import numpy as np
import pytest
from _cluster import executed

from atlas_engine.aggregate.cluster import get_client
from atlas_engine.aggregate.engine import groupby_reduce
from atlas_engine.errors import ConfigError

STATS = ("mean", "var", "min", "max", "sum", "count")


def _case():
    rng = np.random.default_rng(42)
    values = rng.normal(7, 2, (90, 120)).astype(np.float32)
    values[rng.random(values.shape) < 0.1] = np.nan
    labels = rng.integers(-1, 9, 120)
    return values, labels


def _lazy(values, labels):
    return groupby_reduce(da.from_array(values, chunks=(30, 50)), labels, axis="sample",
                          n_groups=9, stats=STATS)


def _assert_same(got, exp):
    for k in exp:
        np.testing.assert_allclose(got[k], exp[k], rtol=1e-6, err_msg=k)


def test_no_scheduler_means_threads(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with get_client() as client:
        assert client is None
    with pytest.raises(ConfigError, match="workers"), get_client(workers=0):
        pass


def test_local_cluster_matches_threads():
    values, labels = _case()
    exp = dask.compute(_lazy(values, labels), scheduler="threads")[0]
    with get_client(workers=2, memory_limit="1GB") as client:
        assert len(client.scheduler_info()["workers"]) == 2
        got = client.compute(_lazy(values, labels)).result()
        assert executed(client) > 0   # the local workers ran the graph
    _assert_same(got, exp)
    np.testing.assert_allclose(exp["mean"], groupby_reduce(values, labels, axis=1, n_groups=9)["mean"],
                               rtol=1e-6)


def test_subprocess_cluster_matches_threads(dask_cluster, monkeypatch):
    values, labels = _case()
    exp = dask.compute(_lazy(values, labels), scheduler="threads")[0]
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", dask_cluster)
    with get_client() as client:
        assert client is not None and client.scheduler.address == dask_cluster
        before = executed(client)
        got = client.compute(_lazy(values, labels)).result()
        assert executed(client) > before  # the workers ran the graph
        seen = client.run(lambda: "atlas_engine.kernels._jit" in sys.modules)
        assert len(seen) == 2 and any(seen.values())
    _assert_same(got, exp)


def test_compute_without_a_client_runs_on_threads_without_importing_distributed():
    """No client can exist before distributed is imported: the aggregation then names Dask's
    threaded scheduler itself (Dask's own check would import distributed, ~0.3 s); a Dask
    config naming a scheduler is left to Dask."""
    code = ("import sys, dask, dask.threaded\n"
            "from atlas_engine.scheduler import scheduler_for_compute\n"
            "print(scheduler_for_compute() is dask.threaded.get)\n"
            "with dask.config.set(scheduler='synchronous'):\n"
            "    print(scheduler_for_compute() is None)\n"
            "print('distributed' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "True", "False"]


def test_an_active_client_is_left_to_dask(dask_cluster):
    from distributed import Client

    from atlas_engine.scheduler import client_active, scheduler_for_compute

    with Client(dask_cluster):
        assert client_active() and scheduler_for_compute() is None
    assert not client_active()
