"""Resumable zip2018 conversion: a subprocess convert SIGKILLed while spilling gene blocks, and a
run stopped while assembling cell bands, both resumed to the same store as an uninterrupted
run (tests/test_faults.py does the same for the AHBA donors)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from atlas_engine.celltypes import convert_zip as ctc
from atlas_engine.celltypes.convert import convert_celltypes
from atlas_engine.testing.synth_celltypes import CellTypeWorldSpec, write_dataset

ad = pytest.importorskip("anndata")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mtg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ctresume")
    _, files = write_dataset(root, "human-mtg", CellTypeWorldSpec(
        n_cells=1500, n_genes=1200, n_clusters=8, seed=11, depth=30.0))
    clean = root / "clean.zarr"
    convert_celltypes(files[0], clean, block_rows=64)
    return files[0], clean


def _same_store(got: Path, want: Path) -> None:
    a, b = ad.read_zarr(got), ad.read_zarr(want)
    assert a.shape == b.shape
    for x, y in ((a.X, b.X), (a.layers["exon"], b.layers["exon"]),
                 (a.layers["intron"], b.layers["intron"])):
        assert x.dtype == y.dtype and (x != y).nnz == 0
        np.testing.assert_array_equal(x.indptr, y.indptr)
    assert a.obs.equals(b.obs) and a.var.equals(b.var)


def test_killed_zip_convert_resumes_from_its_last_block(mtg, tmp_path: Path) -> None:
    zpath, clean = mtg
    store = tmp_path / "k.zarr"
    prog = tmp_path / "k.zarr.progress.json"
    code = ("from atlas_engine.celltypes.convert import convert_celltypes\n"
            f"convert_celltypes({str(zpath)!r}, {str(store)!r}, block_rows=2)\n")
    proc = subprocess.Popen([sys.executable, "-c", code],
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    state = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                state = json.loads(prog.read_text())
            except (OSError, ValueError):
                state = None
            if state and state["exon"]["blocks"] >= 20:
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert state is not None and not state["intron"]["done"], "the convert finished first"
    assert not store.exists()
    killed = json.loads(prog.read_text())
    rows = killed["exon"]["rows"] if not killed["exon"]["done"] else killed["intron"]["rows"]
    assert rows > 0
    rep = convert_celltypes(zpath, store, block_rows=64)  # the row blocking may differ
    assert rep["status"] == "converted"
    resumed = dict(item.rsplit(" ", 1) for item in rep["resumed_at"].split(", "))
    assert int(resumed["exon_rows"]) == killed["exon"]["rows"] > 0  # not from zero
    assert int(resumed["intron_rows"]) == killed["intron"]["rows"]
    _same_store(store, clean)
    assert not prog.exists() and not (tmp_path / "k.zarr.spill").exists()
    assert not (tmp_path / "k.zarr.partial").exists()


def test_zip_convert_stopped_in_the_cell_bands_resumes(mtg, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    zpath, clean = mtg
    monkeypatch.setattr(ctc, "BAND_NNZ", 80_000)  # many cell bands at this size
    store = tmp_path / "b.zarr"
    seen: list[int] = []

    class Stop(Exception):
        pass

    def stop_after_two(cells: int) -> None:
        seen.append(cells)
        if len(seen) == 2:
            raise Stop

    with pytest.raises(Stop):
        convert_celltypes(zpath, store, block_rows=64, progress=stop_after_two)
    stopped_at = seen[-1]
    assert 0 < stopped_at < 1500 and not store.exists()
    seen.clear()
    rep = convert_celltypes(zpath, store, block_rows=64, progress=seen.append)
    assert f"cells {stopped_at}" in rep["resumed_at"]
    assert seen[0] > stopped_at  # the first band written is the next one
    _same_store(store, clean)


def test_changed_zip_starts_over(mtg, tmp_path: Path) -> None:
    zpath, clean = mtg
    store = tmp_path / "c.zarr"
    prog = tmp_path / "c.zarr.progress.json"
    (tmp_path / "c.zarr.spill").mkdir()
    state = {"layout": "zip2018", "source": {"file": "elsewhere"}, "cells": 1500,
             "genes": 1200}
    prog.write_text(json.dumps(state))
    rep = convert_celltypes(zpath, store, block_rows=64)
    assert rep["resumed_at"] == "exon_rows 0, intron_rows 0, cells 0"
    _same_store(store, clean)
