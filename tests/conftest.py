"""Shared fixtures.

``synth_small``: one small generated Allen dataset for the whole session (all six donor zips with
300 probes and 3% of the real sample counts, ``structure_graph_10.json`` and a small BrainSpan
zip), written once into a session temporary directory. Tests must treat it as read-only; copy
files elsewhere before modifying them.

``synth_store``: ``synth_small``'s microarray donors converted once with the default chunks, for
the session; read-only like ``synth_small`` (copy it before writing into it).

``dask_cluster``: the address of a `dask scheduler` with two single-threaded `dask worker`
processes on loopback, started once for the session (``_cluster.executed`` /
``_cluster.count_tasks`` count the tasks its workers ran, so a test can show that they did its
work).

``e2e_source``: the dataset of the abagen end-to-end goldens and its float64 store, made once
(see the fixture); ``_golden.store_copy`` gives a module its own copy of that store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from atlas_engine.convert.donor import convert_microarray
from atlas_engine.testing.synth import SynthResult, write_all

SYNTH_SMALL = {"probes": 300, "samples_fraction": 0.03, "seed": 0,
               "brainspan_genes": 200, "brainspan_samples": 40}


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """A small generated raw directory (see module docstring); returns its SynthResult."""
    dest = tmp_path_factory.mktemp("synth_small")
    return write_all(dest, quiet=True, **SYNTH_SMALL)


@pytest.fixture(scope="session")
def synth_store(synth_small: SynthResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``synth_small`` converted (see module docstring); returns the store's path."""
    path = tmp_path_factory.mktemp("synth_store") / "s.zarr"
    convert_microarray(synth_small.dest, path)
    return path


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A subprocess Dask cluster (see module docstring); yields the scheduler address."""
    from _cluster import subprocess_cluster

    with subprocess_cluster(tmp_path_factory.mktemp("dask_cluster")) as address:
        yield address


GOLDEN = Path(__file__).parent / "data" / "abagen_golden"


@pytest.fixture(scope="session")
def e2e_source(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The dataset behind the abagen end-to-end goldens (``e2e_params.json``; the
    interpolation and RNA-seq goldens use the same one), generated once with its RNA-seq
    zips, and its microarray donors converted once to a float64 store. Read-only: tests that
    write into a store (the pipeline caches its products there) use ``_golden.store_copy``."""
    params = json.loads((GOLDEN / "e2e_params.json").read_text())
    root = tmp_path_factory.mktemp("e2e_source")
    synth = write_all(root / "raw", probes=params["probes"],
                      samples_fraction=params["samples_fraction"], seed=params["seed"],
                      quiet=True, brainspan=False)
    convert_microarray(root / "raw", root / "store.zarr", dtype="float64")
    return {"raw": root / "raw", "store": root / "store.zarr", "synth": synth}
