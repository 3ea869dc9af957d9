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

``local_cluster_tasks``: what the local cluster of a ``--workers N`` command ran, read from
its scheduler and workers before the command closes it (:class:`LocalClusterTasks`).

Hypothesis runs with the ``atlas_engine`` profile: derandomized (the examples drawn depend on
the test alone, not on a seed or on earlier failures), 100 examples unless a test says
otherwise.

``e2e_source``: the dataset of the abagen end-to-end goldens and its float64 store, made once
(see the fixture); ``_golden.store_copy`` gives a module its own copy of that store.

``voxel_atlas_path``: a voxel-level atlas (every labelled voxel its own region) made from the
goldens' interpolation atlas, for the streamed-output tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from atlas_engine.convert.donor import convert_microarray
from atlas_engine.testing.synth import SynthResult, write_all

#: the same examples on every run: derandomized, no example database replayed first, and
#: Hypothesis' default number of examples (tests with their own ``@settings`` keep theirs)
settings.register_profile("atlas_engine", derandomize=True, database=None, max_examples=100)
settings.load_profile("atlas_engine")

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


class LocalClusterTasks:
    """The tasks run by the local clusters (``--workers N``) that ``get_client`` started
    during a test, counted before each cluster closed.

    Attributes
    ----------
    executed : int
        Tasks the clusters' workers executed (their ``WorkerState.executed_count``).
    by_prefix : dict of str to int
        Tasks each scheduler computed (reached ``memory`` on a worker), by task prefix.
    clusters : int
        Local clusters started.
    """

    def __init__(self) -> None:
        self.executed = 0
        self.by_prefix: dict[str, int] = {}
        self.clusters = 0

    def record(self, client: Any) -> None:
        """Add what ``client``'s cluster has run so far."""
        def count(dask_scheduler: Any) -> dict[str, int]:
            return {name: int(tp.state_counts.get("memory", 0))
                    for name, tp in dask_scheduler.task_prefixes.items()}

        self.clusters += 1
        self.executed += sum(client.run(
            lambda dask_worker: dask_worker.state.executed_count).values())
        for name, n in client.run_on_scheduler(count).items():
            self.by_prefix[name] = self.by_prefix.get(name, 0) + n

    def ran(self, funcs: Iterable[str]) -> dict[str, int]:
        """How many tasks of each function name in ``funcs`` (e.g. ``"_reduce_rows"``) the
        workers computed (as :func:`_cluster.executed_on_workers` counts them)."""
        from dask.utils import key_split

        return {f: self.by_prefix.get(key_split(f"{f}-00000000-0000-0000-0000-000000000000"), 0)
                for f in funcs}


@pytest.fixture
def local_cluster_tasks(monkeypatch: pytest.MonkeyPatch) -> LocalClusterTasks:
    """What the ``--workers N`` local clusters of the test ran (see module docstring):
    ``get_client`` is wrapped so that each cluster is counted before it closes."""
    import atlas_engine.aggregate.cluster as cluster

    seen = LocalClusterTasks()
    real = cluster.get_client

    @contextmanager
    def counting(scheduler: str | None = None, workers: int | None = None,
                 memory_limit: int | str | None = None) -> Iterator[Any]:
        with real(scheduler, workers, memory_limit) as client:
            yield client
            if client is not None and workers is not None:
                seen.record(client)

    monkeypatch.setattr(cluster, "get_client", counting)
    return seen


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


@pytest.fixture(scope="session")
def voxel_atlas_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A voxel-level atlas (every labelled voxel its own region) of the abagen goldens'
    interpolation atlas, as a NIfTI file, for the streamed-output tests."""
    import sys

    import nibabel as nib
    import numpy as np

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks" / "abagen_oracle"))
    from synth_atlas import voxel_atlas

    img = nib.load(Path(__file__).parent / "data" / "abagen_golden" / "e2e_interp_atlas.nii.gz")
    path = tmp_path_factory.mktemp("vox") / "voxels.nii.gz"
    nib.save(nib.Nifti1Image(voxel_atlas(np.asarray(img.dataobj)), img.affine), str(path))
    return str(path)
