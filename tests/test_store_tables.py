"""The store's probe / sample / ontology tables: zarr read and the plain-array table cache."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from atlas_engine import open_store
from atlas_engine.convert.donor import convert_microarray
from atlas_engine.store import open as open_mod
from atlas_engine.store import tables


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


def test_column_reader_matches_zarr_on_every_layout(tmp_path):
    """``blockread.read_column`` against zarr on 1-D arrays of each codec chain it decodes
    (numbers and strings; zstd, Blosc or none; with and without the CRC-32C codec; a short
    last chunk; an absent chunk), and None for one it leaves to zarr."""
    import zarr
    from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec

    from atlas_engine.errors import DamagedStoreError
    from atlas_engine.store.blockread import read_column

    rng = np.random.default_rng(5)
    root = zarr.open_group(tmp_path / "t.zarr", mode="w", zarr_format=3)
    words = np.array([f"g{i}-é{'x' * (i % 7)}" for i in range(103)], dtype=object)
    cases = {}
    for comp_name, comp in [("zstd", ZstdCodec()), ("blosc", BloscCodec()), ("none", None)]:
        for crc in (True, False):
            post = ([Crc32cCodec()] if crc else [])
            compressors = [comp] if comp is not None else []
            name = f"f_{comp_name}_{crc}"
            a = root.create_array(name, shape=(103,), chunks=(40,), dtype="float64",
                                  compressors=compressors + post, fill_value=np.nan)
            a[:] = rng.normal(size=103)
            cases[name] = a
            name = f"i_{comp_name}_{crc}"
            a = root.create_array(name, shape=(103,), chunks=(40,), dtype="int64",
                                  compressors=compressors + post)
            a[:] = rng.integers(-9, 9, 103)
            cases[name] = a
            if comp_name != "blosc":
                name = f"s_{comp_name}_{crc}"
                a = root.create_array(name, shape=(103,), chunks=(40,), dtype=str,
                                      compressors=compressors + post)
                a[:] = words
                cases[name] = a
    url = str(tmp_path / "t.zarr")
    for name, arr in cases.items():
        meta = json.loads((tmp_path / "t.zarr" / name / "zarr.json").read_text())
        got = read_column(url, name, meta)
        assert got is not None, name
        want = np.asarray(arr[:])
        if want.dtype.kind in "fi":
            assert got.dtype == want.dtype and np.array_equal(got, want), name
        else:
            assert got.dtype == object and got.tolist() == want.tolist(), name
    # an absent chunk: the fill value without a checksum, an error with one
    for name in ("f_zstd_False", "s_none_False", "f_zstd_True"):
        (tmp_path / "t.zarr" / name / "c" / "1").unlink()
        meta = json.loads((tmp_path / "t.zarr" / name / "zarr.json").read_text())
        if name.endswith("True"):
            with pytest.raises(DamagedStoreError, match="missing"):
                read_column(url, name, meta)
            continue
        got, want = read_column(url, name, meta), np.asarray(cases[name][:])
        assert [str(x) for x in got] == [str(x) for x in want]
    g = root.create_array("gz", shape=(5,), chunks=(5,), dtype="int64",
                          compressors=[GzipCodec()])
    g[:] = 1
    meta = json.loads((tmp_path / "t.zarr" / "gz" / "zarr.json").read_text())
    assert read_column(url, "gz", meta) is None
    raw = tmp_path / "t.zarr" / "i_zstd_True" / "c" / "0"
    data = bytearray(raw.read_bytes())
    data[3] ^= 1
    raw.write_bytes(bytes(data))
    meta = json.loads((tmp_path / "t.zarr" / "i_zstd_True" / "zarr.json").read_text())
    with pytest.raises(DamagedStoreError, match="checksum mismatch"):
        read_column(url, "i_zstd_True", meta)


def test_pipeline_tables_need_no_zarr(synth_store):
    """Opening a store and reading its tables (the first step of every command on it) imports
    neither zarr nor xarray."""
    code = ("import sys\nfrom atlas_engine import open_store\n"
            f"st = open_store({str(synth_store)!r})\n"
            "n = len(st.probes), len(st.samples), len(st.ontology.table)\n"
            "print([m for m in ('zarr', 'xarray') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out


def test_table_columns_in_a_layout_left_to_zarr_are_read_by_zarr(tmp_path):
    """A table group mixing a column the direct reader decodes (zstd) and one it leaves to
    zarr (gzip): both come back, as zarr reads them; a dimension coordinate only when asked
    for as the index."""
    import zarr
    from zarr.codecs import GzipCodec, ZstdCodec

    root = zarr.open_group(tmp_path / "t.zarr", mode="w", zarr_format=3)
    g = root.create_group("tab")
    for name, comp, values in [("probe", ZstdCodec(), np.arange(7)),
                               ("a", ZstdCodec(), np.arange(7) * 2.5),
                               ("b", GzipCodec(), np.arange(7) - 3)]:
        arr = g.create_array(name, shape=(7,), chunks=(3,), dtype=values.dtype,
                             compressors=[comp], dimension_names=("probe",))
        arr[:] = values
    url = str(tmp_path / "t.zarr")
    cols = tables._read_columns(url, "tab", None)
    assert list(cols) == ["a", "b"]
    np.testing.assert_array_equal(cols["a"], np.arange(7) * 2.5)
    np.testing.assert_array_equal(cols["b"], np.arange(7) - 3)
    assert list(tables._read_columns(url, "tab", "probe")) == ["a", "b", "probe"]


def test_table_file_round_trip_and_refusals(tmp_path):
    """A frame of numbers and strings (empty ones and non-ASCII too) comes back equal; a
    string column holding the separator or a value that is not a string is not saved (the
    store's tables are read instead)."""
    frame = pd.DataFrame({"id": np.arange(4, dtype=np.int64), "x": [0.5, np.nan, 2.0, -1.0],
                          "name": ["A1BG", "", "Zürich", "a,b"], "empty": [""] * 4})
    tables._save_npz(tmp_path / "ok.npz", frame)
    pd.testing.assert_frame_equal(tables._frame_from_npz(tmp_path / "ok.npz"), frame)
    one = frame.iloc[:1].reset_index(drop=True)
    tables._save_npz(tmp_path / "one.npz", one)
    pd.testing.assert_frame_equal(tables._frame_from_npz(tmp_path / "one.npz"), one)
    for bad in (["a", "b\x00c", "d", "e"], ["a", None, "c", "d"], ["a", 3, "c", "d"]):
        path = tmp_path / "bad.npz"
        tables._save_npz(path, frame.assign(name=pd.Series(bad, dtype=object)))
        assert not path.exists(), bad
