"""The pipeline's passes for options other than abagen's defaults are Dask tasks too: under a
``dask.distributed`` client the cluster's workers run them — the streamed output's spill and
write (``out=``), the other normalisations, the region values with their pseudo-samples, the
pooled samples, the combination over donors and the per-gene means of
``probe_selection='average'`` — and the results are those of Dask's threads, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _cluster import executed_on_workers
from _golden import store_copy

from atlas_engine import open_store
from atlas_engine.pipeline import matrix_passes
from atlas_engine.pipeline import output as output_mod
from atlas_engine.pipeline.donor_norm import normalize_blocks
from atlas_engine.pipeline.expression import get_expression_data

GOLDEN = Path(__file__).parent / "data" / "abagen_golden"
PARAMS = json.loads((GOLDEN / "e2e_interp_params.json").read_text())
ATLAS = str(GOLDEN / "e2e_interp_atlas.nii.gz")
INFO = str(GOLDEN / "e2e_interp_atlas_info.csv")
#: every run computes its passes (no cache entry from an earlier run)
FIXED = dict(corrected_mni=False, reannotated=False, cache=False)


@pytest.fixture(scope="module")
def store(e2e_source, tmp_path_factory):
    return open_store(store_copy(e2e_source, tmp_path_factory.mktemp("tasks") / "store.zarr"))


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few genes / regions, so every pass is many tasks on this small dataset."""
    monkeypatch.setattr(matrix_passes, "TASK_BYTES", 64 * 1024)
    monkeypatch.setattr(output_mod, "GENE_BLOCK", 32)
    monkeypatch.setattr(output_mod, "BLOCK_BYTES", 2000 * 8 * 60)


def _on_workers(address: str, run, names: tuple[str, ...]) -> tuple[object, dict[str, int]]:
    """``run()`` with a client of the cluster at ``address`` active, and how many tasks of
    each function ``names`` its workers computed meanwhile."""
    from distributed import Client

    with Client(address, timeout="10s") as client:
        before = executed_on_workers(client, names)
        res = run()
        after = executed_on_workers(client, names)
    return res, {n: after[n] - before[n] for n in names}


def _same_frames(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())


@pytest.mark.parametrize(("kw", "names"), [
    (dict(probe_selection="average", sample_norm="zscore", gene_norm="zscore"),
     ("_gene_sums_task", "_normalize_task", "_group_means_task")),
    (dict(region_agg="samples", agg_metric="median", missing="interpolate"),
     ("_pseudo_task", "_region_values_task")),
    (dict(agg_metric="median", missing="interpolate", norm_matched=False,
          sample_norm="minmax"),
     ("_region_values_task", "_combine_task", "_normalize_task")),
    (dict(missing="centroids", norm_structures=True),
     ("_group_means_task", "_combine_task", "_normalize_task")),
], ids=["average-zscore", "samples-median-interpolate", "median-interpolate-minmax",
        "centroids-structures"])
def test_other_options_run_on_the_workers(store, dask_cluster, small_blocks, kw, names):
    threads = get_expression_data(store, ATLAS, INFO, **FIXED, **kw)
    res, ran = _on_workers(dask_cluster,
                           lambda: get_expression_data(store, ATLAS, INFO, **FIXED, **kw), names)
    assert all(n > 0 for n in ran.values()), ran
    assert threads.expression.notna().any().any()
    _same_frames(res.expression, threads.expression)


def test_donor_frames_and_normalisation_blocks_on_the_workers(store, dask_cluster,
                                                              small_blocks):
    kw = dict(missing="interpolate", return_donors=True, agg_metric="median")
    threads = get_expression_data(store, ATLAS, None, **FIXED, **kw)
    res, ran = _on_workers(dask_cluster,
                           lambda: get_expression_data(store, ATLAS, None, **FIXED, **kw),
                           ("_region_values_task",))
    assert ran["_region_values_task"] > 0
    assert sorted(res.donors) == sorted(threads.donors)
    for d, frame in threads.donors.items():
        _same_frames(res.donors[d], frame)
    # both normalisation steps of a donor's samples × genes, a block of samples / genes a task
    rng = np.random.default_rng(2)
    x = rng.normal(8, 2, size=(90, 70))
    x[rng.random(x.shape) < 0.02] = np.nan
    x[4] = np.nan
    classes = rng.choice(np.array(["cortex", "subcortex"]), len(x))
    want = normalize_blocks(x.copy(), "zscore", "rs", classes, block=16)
    got, ran = _on_workers(dask_cluster,
                           lambda: normalize_blocks(x.copy(), "zscore", "rs", classes,
                                                    block=16), ("_normalize_task",))
    assert ran["_normalize_task"] >= len(range(0, 90, 2)) + len(range(0, 70, 16))
    np.testing.assert_array_equal(got, want)


# each block's genes (spilling) and its share of the donors' interpolation weights (writing)
# reach the workers scattered, not inside the graph: no warning of a large graph
@pytest.mark.filterwarnings("error:Sending large graph:UserWarning")
@pytest.mark.parametrize("kw", [
    dict(missing="interpolate"),
    dict(missing="centroids", region_agg="samples", gene_norm="zscore"),
    dict(missing="interpolate", agg_metric="median", norm_matched=False),
], ids=["interpolate", "centroids-samples-zscore", "interpolate-median"])
def test_voxel_stream_runs_on_the_workers(store, voxel_atlas_path, dask_cluster, small_blocks,
                                          tmp_path, kw):
    threads = get_expression_data(store, voxel_atlas_path, None, out=tmp_path / "threads.zarr",
                                  **FIXED, **kw)
    res, ran = _on_workers(
        dask_cluster,
        lambda: get_expression_data(store, voxel_atlas_path, None,
                                    out=tmp_path / "workers.zarr", **FIXED, **kw),
        ("_spill_genes", "_write_block"))
    assert all(n > 0 for n in ran.values()), ran
    want = threads.expression.to_pandas()
    assert want.shape[0] > 1000 and want.notna().to_numpy().all()
    _same_frames(res.expression.to_pandas(), want)
    pd.testing.assert_frame_equal(res.genes, threads.genes)
    # nothing but the two outputs is left next to them (no spill, no temporary output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["threads.zarr", "workers.zarr"]
