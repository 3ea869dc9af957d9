"""Every pass runs through :mod:`atlas_engine.aggregate.rowtasks`: under an active
``dask.distributed`` client its task functions run on the cluster's workers (as the scheduler
counts them, per task prefix), and the results are bit for bit those of Dask's threads.

Covers store aggregation, the Cell Types order statistics and merged waves, BrainSpan
aggregation and trajectories, the engine's per-block-label path (voxel counts), the store-backed
``HumanBrainAtlas`` and ``verify``; and that ``verify`` reports a damaged chunk and a chunk whose
values differ from conversion with the same lines, in chunk order, wherever its tasks run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _cluster import executed_on_workers

from atlas_engine.aggregate.api import aggregate
from atlas_engine.aggregate.brainspan import aggregate_brainspan, select_genes
from atlas_engine.aggregate.trajectory import trajectory_table
from atlas_engine.convert.brainspan import convert_brainspan
from atlas_engine.convert.donor import convert_microarray
from atlas_engine.errors import DamagedStoreError
from atlas_engine.store import layout as L
from atlas_engine.store.atlas_api import StoreHumanBrainAtlas
from atlas_engine.store.blockread import read_rows
from atlas_engine.store.brainspan import open_brainspan
from atlas_engine.store.integrity import repair_hint
from atlas_engine.store.open import open_store
from atlas_engine.store.verify import verify_store
from atlas_engine.testing.synth_brainspan import write_brainspan

distributed = pytest.importorskip("distributed")

#: chunk rows of the test store's matrices (several per donor, so every pass has many tasks)
PROBE_CHUNK = 64


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two single-threaded workers in this process (their tasks still go through the
    scheduler, which counts them)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as lc:
        yield lc


@contextmanager
def on_workers(cluster: Any, prefixes: tuple[str, ...]) -> Iterator[dict[str, int]]:
    """A client of ``cluster`` is active while the block runs; yields, filled in when the
    block ends, how many tasks of each function in ``prefixes`` its workers computed."""
    ran: dict[str, int] = {}
    with distributed.Client(cluster) as client:
        before = executed_on_workers(client, prefixes)
        yield ran
        after = executed_on_workers(client, prefixes)
    ran.update({p: after[p] - before[p] for p in prefixes})


def _assert_ran(ran: dict[str, int]) -> None:
    assert ran and all(n > 0 for n in ran.values()), ran


@pytest.fixture(scope="module")
def store(synth_small: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("one_path") / "s.zarr"
    convert_microarray(synth_small.dest, path, probe_chunk=PROBE_CHUNK, sample_chunk=8)
    return path


@pytest.fixture(scope="module")
def bs_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("one_path_bs")
    pool = pd.DataFrame({"gene_symbol": ["AAA1", "BDNF", "COMT", "ZZZ9", "DRD2"],
                         "entrez_id": [11, 627, 1312, 99, 1813]})
    zpath = write_brainspan(root / "raw", genes=60, samples=160, seed=3, gene_pool=pool)
    path = root / "bs.zarr"
    convert_brainspan(zpath, path, gene_chunk=16, sample_chunk=50)
    return path


# -- store aggregation ------------------------------------------------------------------------
def test_aggregate_runs_on_the_workers(store: Path, cluster: Any) -> None:
    kw = dict(by="depth:4", combine="combined", collapse="max_variance", block_bytes=1 << 16)
    threads = aggregate(store, **kw)
    with on_workers(cluster, ("_reduce_rows",)) as ran:
        got = aggregate(store, **kw)
    _assert_ran(ran)
    np.testing.assert_array_equal(got.values, threads.values)
    np.testing.assert_array_equal(got.n_values, threads.n_values)
    assert got.values.dtype == threads.values.dtype
    pd.testing.assert_frame_equal(got.features, threads.features)


# -- Cell Types: merged waves and order statistics --------------------------------------------
def test_cell_aggregate_runs_on_the_workers(tmp_path: Path, cluster: Any) -> None:
    pytest.importorskip("anndata")
    from atlas_engine.celltypes.aggregate import aggregate_cells
    from atlas_engine.celltypes.convert import convert_celltypes
    from atlas_engine.testing.synth_celltypes import CellTypeWorldSpec, write_dataset

    _, files = write_dataset(tmp_path, "human-m1",
                             CellTypeWorldSpec(n_cells=260, n_genes=150, n_clusters=7, seed=3,
                                               depth=1.0))
    cells = tmp_path / "cells.zarr"
    convert_celltypes(files[0] if files[0].suffix == ".zip" else files[0].parent, cells,
                      block_rows=37)
    kw = dict(block_cells=50, band_genes=33, spill_dir=str(tmp_path / "spill"))
    threads = aggregate_cells(cells, "cluster", "all", **kw)
    with on_workers(cluster, ("groupby-chunk", "_spill_block", "_band_task")) as ran:
        got = aggregate_cells(cells, "cluster", "all", **kw)
    _assert_ran(ran)
    assert got.stats.keys() == threads.stats.keys()
    for name, values in threads.stats.items():
        np.testing.assert_array_equal(got.stats[name], values, err_msg=name)
        assert got.stats[name].dtype == values.dtype


# -- BrainSpan --------------------------------------------------------------------------------
@pytest.mark.parametrize("combine", ["combined", "each"])
def test_brainspan_aggregate_runs_on_the_workers(bs_store: Path, cluster: Any,
                                                 combine: str) -> None:
    threads = aggregate_brainspan(bs_store, by="period", combine=combine, stat="median")
    with on_workers(cluster, ("_reduce_block",)) as ran:
        got = aggregate_brainspan(bs_store, by="period", combine=combine, stat="median")
    _assert_ran(ran)
    np.testing.assert_array_equal(got.values, threads.values)
    np.testing.assert_array_equal(got.n_values, threads.n_values)


def test_trajectory_points_are_read_by_row_tasks(bs_store: Path, cluster: Any) -> None:
    genes = "COMT,BDNF,COMT,NOPE"       # out of store order, and a repeat
    bs = open_brainspan(bs_store)
    rows, _ = select_genes(bs.genes, genes)
    # the rows as the lazy matrix gives them (what the points were read from before)
    lazy = np.asarray(bs.expression[rows].compute(), dtype=np.float64)
    table, points, missing = trajectory_table(bs_store, genes, transform="none")
    assert missing == ["NOPE"]
    np.testing.assert_array_equal(points["value"].to_numpy(), lazy.reshape(-1))
    # (the table's BrainSpan pass is counted above; small, its blocks may be fused)
    with on_workers(cluster, ("take_task",)) as ran:
        got_table, got_points, _ = trajectory_table(bs_store, genes, transform="none")
    _assert_ran(ran)
    pd.testing.assert_frame_equal(got_table, table, check_exact=True)
    pd.testing.assert_frame_equal(got_points, points, check_exact=True)


# -- blocks with their own labels (voxel counts) ----------------------------------------------
def test_lazy_voxel_counts_run_on_the_workers(tmp_path: Path, cluster: Any) -> None:
    from atlas_engine.store.graph import graph_table
    from atlas_engine.store.ontology import Ontology
    from atlas_engine.testing.synth_mouse import build_mouse_ontology, mouse_structure_graph
    from atlas_engine.volumes import open_volume
    from atlas_engine.volumes.counts import voxel_counts
    from atlas_engine.volumes.nrrd import write_nrrd

    mouse = Ontology(graph_table(mouse_structure_graph(build_mouse_ontology())))
    rng = np.random.default_rng(3)
    labels = rng.choice(np.r_[0, 0, 0, mouse.ids], size=(23, 17, 29)).astype(np.uint32)
    p = write_nrrd(tmp_path / "a.nrrd", [labels[:, :, i:i + 5] for i in range(0, 29, 5)],
                   labels.shape, np.uint32, (25, 25, 25), encoding="raw")
    vol = open_volume(p)
    slab = 4 * 23 * 17 * 2          # 2 planes per slab: 15 blocks, two levels of merges
    threads = voxel_counts(vol, mouse, lazy=True, slab_bytes=slab)
    with on_workers(cluster, ("_chunk_task", "_merge_task", "_finalize_task")) as ran:
        got = voxel_counts(vol, mouse, lazy=True, slab_bytes=slab)
    _assert_ran(ran)
    pd.testing.assert_frame_equal(got, threads, check_exact=True)
    assert threads.loc[997, "voxels"] == int((labels > 0).sum())


# -- the store-backed HumanBrainAtlas ---------------------------------------------------------
def test_store_atlas_expression_is_read_by_row_tasks(store: Path, cluster: Any) -> None:
    atlas = StoreHumanBrainAtlas(store)
    genes = atlas.get_genes()
    # genes whose probes lie in different chunk rows, in no particular order
    symbols = list(genes["acronym"].iloc[[len(genes) - 1, 0, len(genes) // 2, 5]])
    donors = [15496, 9861]
    expr, samples, probes = atlas.get_microarray_expression(symbols, donors=donors)
    # the rows as the donors' xarray datasets give them (what they were read from before)
    st = open_store(store)
    row_of = {int(pid): i for i, pid in enumerate(st.probes["probe_id"])}
    rows = np.array([row_of[int(p)] for p in probes["id"]], dtype=np.int64)
    assert len(set(rows // PROBE_CHUNK)) > 1 and not (np.diff(rows) > 0).all()
    want = np.concatenate([np.asarray(st.donor(d)["expression"].data[rows].compute(),
                                      dtype=np.float64)
                           for d in pd.unique(samples["donor_id"])], axis=1)
    assert expr.to_numpy().dtype == np.float64
    np.testing.assert_array_equal(expr.to_numpy(), want)
    with on_workers(cluster, ("take_task",)) as ran:
        got, got_samples, got_probes = atlas.get_microarray_expression(symbols, donors=donors)
    _assert_ran(ran)
    pd.testing.assert_frame_equal(got, expr, check_exact=True)
    pd.testing.assert_frame_equal(got_samples, samples)
    pd.testing.assert_frame_equal(got_probes, probes)


# -- verify -----------------------------------------------------------------------------------
def test_verify_runs_on_the_workers(store: Path, cluster: Any) -> None:
    threads = verify_store(store)
    assert threads.ok, threads.problems
    with on_workers(cluster, ("_check_chunk_rows",)) as ran:
        got = verify_store(store)
    _assert_ran(ran)
    n_rows = open_store(store).probes.shape[0]
    # one task per chunk row of every donor's expression and pacall
    assert ran["_check_chunk_rows"] == 2 * len(open_store(store).donors) * (
        -(-n_rows // PROBE_CHUNK))
    assert got.ok and got.problems == threads.problems
    assert json.dumps(got.summary, sort_keys=True, default=str) == \
        json.dumps(threads.summary, sort_keys=True, default=str)


def test_verify_reports_damaged_chunks_in_chunk_order(store: Path, tmp_path: Path,
                                                      cluster: Any) -> None:
    damaged = tmp_path / "d.zarr"
    shutil.copytree(store, damaged)
    donor = open_store(damaged).donors[1]
    group = L.donor_path(donor)
    path = f"{group}/{L.EXPRESSION}"
    # chunk (2, 0) no longer matches its own CRC-32C; chunk (3, 1)'s values no longer match
    # the checksum recorded at conversion
    chunk = damaged / path / "c" / "2" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    meta_file = damaged / group / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["checksums"][L.EXPRESSION][3][1] ^= 1
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DamagedStoreError) as info:
        read_rows(str(damaged), path, 2 * PROBE_CHUNK, 3 * PROBE_CHUNK)
    expected = [str(info.value),
                f"donor {donor} expression: chunk (3, 1) values differ from conversion; "
                f"{repair_hint(str(damaged), path)}"]
    threads = verify_store(damaged)
    with on_workers(cluster, ("_check_chunk_rows",)) as ran:
        got = verify_store(damaged)
    _assert_ran(ran)
    for report in (threads, got):
        assert not report.ok
        assert [p for p in report.problems if p in expected] == expected, report.problems
        assert f"array {path}" in expected[0] and "chunk (2" in expected[0]
    assert got.problems == threads.problems


def test_ordered_tasks_run_in_a_fixed_order_on_threads():
    """Tasks named in order run in the same order in every run (Dask's threads: last to
    first), not in one drawn from random key names."""
    import threading

    from atlas_engine.aggregate.rowtasks import compute, ordered_tasks

    seen: list[int] = []
    lock = threading.Lock()

    def note(i: int) -> int:
        with lock:
            seen.append(i)
        return i

    import dask

    orders = []
    with dask.config.set(num_workers=1):     # one thread: the order taken is the order run
        for _ in range(3):
            seen.clear()
            assert compute(ordered_tasks(note, [(i,) for i in range(30)])) == list(range(30))
            orders.append(list(seen))
    assert orders[0] == orders[1] == orders[2]
    assert sorted(orders[0]) == list(range(30))


def test_matrix_check_counts_nan_inf_and_negative_values_in_one_pass(tmp_path):
    """verify's matrix check (one task per chunk row) counts NaN, inf and negative values
    while it compares the chunks with the checksums conversion recorded."""
    import zarr

    from atlas_engine.convert import writer
    from atlas_engine.store.verify import VerifyReport, _check_matrix

    url = str(tmp_path / "m.zarr")
    zarr.open_group(url, mode="w", zarr_format=3)
    x = np.arange(70 * 9, dtype=np.float32).reshape(70, 9) - 100.0   # 100 negative values,
    x[3, 4], x[50, 0], x[69, 8] = np.nan, np.inf, -np.inf              # one now NaN, one -inf
    arr = writer.create_matrix(url, "expression", x.shape, (16, 4), np.float32,
                               ("probe", "sample"))
    bw = writer.BlockWriter(arr)
    recorded = [bw.write(r0, x[r0:r0 + 16]) for r0 in range(0, 70, 16)]
    report = VerifyReport()
    got = _check_matrix(url, "expression", recorded, (16, 4), "m", report)
    assert got == (1, 2, 100) and report.ok, report.problems


def total(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.sum() + b.sum())


def test_large_task_arguments_reach_a_cluster_scattered_not_in_the_graph(cluster):
    """On a client, an argument of ``SHARE_BYTES`` or more goes to the workers ahead of the
    graph (the scheduler holds only a reference); on Dask's threads, and on a client that a
    Dask config overrules, tasks take the objects themselves. Results are the same."""
    import pickle

    import dask

    from atlas_engine.aggregate import rowtasks

    big = np.arange(rowtasks.SHARE_BYTES // 8 + 1, dtype=np.float64)
    small = np.arange(10.0)
    want = float(big.sum() + small.sum())

    def graph_bytes(t: Any) -> int:
        return len(pickle.dumps(dict(t.__dask_graph__())))

    assert rowtasks.share(big) is big
    alone = rowtasks.task(total, big, small)
    assert graph_bytes(alone) > big.nbytes
    assert rowtasks.compute([alone]) == [want]
    with distributed.Client(cluster):
        shared = rowtasks.share(big)
        assert isinstance(shared, distributed.Future)
        assert rowtasks.share(small) is small
        t = rowtasks.task(total, big, small)
        assert graph_bytes(t) < 10_000
        assert rowtasks.compute([t, rowtasks.task(total, shared, small)]) == [want, want]
        with dask.config.set(scheduler="threads"):
            assert rowtasks.share(big) is big
            assert rowtasks.compute([rowtasks.task(total, big, small)]) == [want]
