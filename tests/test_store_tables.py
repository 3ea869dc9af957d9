"""The store's probe / sample / ontology tables: zarr read and the plain-array table cache."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import xarray as xr

from atlas_engine import open_store
from atlas_engine.convert.donor import convert_microarray
from atlas_engine.store import open as open_mod


def _oracle(path, group: str) -> dict[str, np.ndarray]:
    """Every 1-D variable of ``group`` as xarray decodes it."""
    ds = xr.open_zarr(path, group=group, consolidated=True, chunks=None)
    return {k: np.asarray(v.values) for k, v in ds.variables.items() if v.ndim == 1}


def _same(frame: pd.DataFrame, oracle: dict[str, np.ndarray], rename=None) -> None:
    for col in frame.columns:
        want = oracle[(rename or {}).get(col, col)]
        got = frame[col].to_numpy()
        if want.dtype.kind in "fiub":
            assert np.array_equal(got, want, equal_nan=want.dtype.kind == "f"), col
        else:
            assert [str(x) for x in got] == [str(x) for x in want], col


def test_tables_match_xarray_and_cache(synth_small, tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    convert_microarray(synth_small.dest, path, donors=[12876, 15496])
    plain = open_store(path)
    _same(plain.probes, _oracle(path, "probes"))
    for d in plain.donors:
        part = plain.samples[plain.samples["donor"] == d].drop(columns="donor")
        _same(part, _oracle(path, f"donors/{d}"), rename={"sample_id": "sample"})
    assert not (path / "cache").exists()        # nothing written without cache_tables

    first = open_store(path)
    first.cache_tables()
    frames = (first.probes, first.samples, first.ontology.table)
    files = sorted(p.name for p in (path / "cache").iterdir())
    assert len(files) == 4 and all(f.endswith(".npz") for f in files)   # 2 donors

    # the second store reads the files only (the zarr reader would fail)
    def boom(*a, **k):
        raise AssertionError("read from zarr")

    monkeypatch.setattr(open_mod, "_read_columns", boom)
    again = open_store(path)
    again.cache_tables()
    for a, b in zip(frames, (again.probes, again.samples, again.ontology.table), strict=True):
        pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(plain.probes, again.probes)
    pd.testing.assert_frame_equal(plain.samples, again.samples)

    # a store whose metadata changed (e.g. a donor added) gets new files
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["atlas_engine"]["note"] = "changed"
    (path / "zarr.json").write_text(json.dumps(meta))
    monkeypatch.undo()
    changed = open_store(path)
    changed.cache_tables()
    pd.testing.assert_frame_equal(changed.probes, plain.probes)
    assert len(list((path / "cache").iterdir())) == 5


def test_cached_tables_need_neither_zarr_nor_xarray(synth_small, tmp_path):
    path = tmp_path / "s.zarr"
    convert_microarray(synth_small.dest, path, donors=[12876])
    st = open_store(path)
    st.cache_tables()
    n = len(st.probes), len(st.samples)
    assert len(st.ontology.table)
    code = ("import sys; from atlas_engine import open_store; "
            f"st = open_store({str(path)!r}); st.cache_tables(); "
            "n = len(st.probes), len(st.samples); st.ontology; "
            "print(n, 'zarr' in sys.modules, 'xarray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [f"({n[0]},", f"{n[1]})", "False", "False"]
