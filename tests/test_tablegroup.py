"""The table writer (convert/tablegroup.py) against xarray's own ``to_zarr``: every file the
same, byte for byte, and the same Dataset read back, for every column type the tables hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from atlas_engine.convert.tablegroup import write_table_group
from atlas_engine.convert.writer import TABLE_COMPRESSORS, create_matrix, write_dataset

RNG = np.random.default_rng(20261206)


def _xarray_write(url: Path, coords: dict, data_vars: dict | None = None, mode: str = "w"
                  ) -> None:
    ds = xr.Dataset(data_vars or {}, coords=coords)
    encoding = {name: {"compressors": TABLE_COMPRESSORS} for name in ds.variables}
    ds.to_zarr(url, mode=mode, zarr_format=3, consolidated=False, encoding=encoding,
               write_empty_chunks=True)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _text(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=object)


CASES = {
    # a donor's samples: indexes and SampleAnnot columns, all coordinates (a group attribute)
    "samples": ({
        "probe": ("probe", np.arange(40_000, dtype=np.int64) * 7 + 1_058_685),
        "sample": ("sample", np.arange(1, 301, dtype=np.int64)),
        "structure_id": ("sample", RNG.integers(4000, 13000, 300)),
        "structure_acronym": ("sample", _text(["SFG-i", "MTG, l", "é"] * 100)),
        "mni_x": ("sample", RNG.normal(0, 30, 300)),
        "well_id": ("sample", RNG.integers(1, 10**6, 300)),
    }, None),
    # the probe table: an index and data columns, text with quotes, commas and missing ids
    "probes": ({"probe": ("probe", np.arange(60_000))}, {
        "probe_name": ("probe", _text([f'A_23_P{i}"x' for i in range(60_000)])),
        "entrez_id": ("probe", np.where(RNG.random(60_000) < 0.1, -1, 5)),
        "gene_name": ("probe", _text(["", "a, b"] * 30_000)),
    }),
    # an ontology: a float column with NaN (the root has no parent), float32, small ints
    "ontology": ({"structure": ("structure", np.arange(456))}, {
        "parent_structure_id": ("structure", np.r_[np.nan, np.arange(455.0)]),
        "weight": ("structure", np.ones(456, np.float32)),
        "depth": ("structure", np.arange(456, dtype=np.uint8)),
        "name": ("structure", _text(["cortex"] * 456)),
    }),
    # RNA-seq / BrainSpan: a text index, two dimensions
    "text index": ({
        "gene": ("gene", _text(["A1BG", "A2M", "ZZZ3"])),
        "sample": ("sample", np.arange(1, 3)),
        "entrez_id": ("gene", np.arange(3)),
        "age": ("sample", _text(["8 pcw", "1 yrs"])),
    }, None),
    # data columns with coordinates of their own dimension (a per-column attribute)
    "per column": ({
        "s": ("s", np.arange(5)), "label": ("s", _text(list("abcde"))),
        "t": ("t", np.arange(2)),
    }, {"v": ("s", np.arange(5.0)), "w": ("t", np.arange(2))}),
    "empty": ({"s": ("s", np.arange(0)), "label": ("s", _text([]))}, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_files_as_xarray(tmp_path: Path, case: str) -> None:
    coords, data_vars = CASES[case]
    _xarray_write(tmp_path / "xr", coords, data_vars)
    write_table_group(str(tmp_path / "own"), coords, data_vars, compressors=TABLE_COMPRESSORS)
    assert _files(tmp_path / "own") == _files(tmp_path / "xr")
    a = xr.open_zarr(tmp_path / "xr", consolidated=False).load()
    b = xr.open_zarr(tmp_path / "own", consolidated=False).load()
    xr.testing.assert_identical(a, b)


def test_added_beside_matrices_as_xarray_adds_them(tmp_path: Path) -> None:
    """``mode="a"`` (a donor's table written beside its matrices) leaves the matrices and
    group attributes and writes what xarray's append mode writes."""
    coords, _ = CASES["samples"]
    for name, write in (("xr", lambda u: _xarray_write(u, coords, mode="a")),
                        ("own", lambda u: write_dataset(str(u), coords, mode="a"))):
        url = tmp_path / name
        arr = create_matrix(str(url), "expression", (40_000, 300), (4096, 256), "float32",
                            ("probe", "sample"), {"long_name": "expression"})
        arr[:4096, :] = 1.5
        write(url)
    assert _files(tmp_path / "own") == _files(tmp_path / "xr")
    ds = xr.open_zarr(tmp_path / "own", consolidated=False)
    assert ds["expression"].dims == ("probe", "sample")
    assert float(ds["expression"][0, 0]) == 1.5
    assert set(ds.coords) == set(coords)


def test_replaces_the_group(tmp_path: Path) -> None:
    url = str(tmp_path / "g")
    write_table_group(url, {"s": ("s", np.arange(3)), "old": ("s", np.arange(3))},
                      compressors=TABLE_COMPRESSORS)
    write_table_group(url, {"s": ("s", np.arange(2))}, compressors=TABLE_COMPRESSORS)
    ds = xr.open_zarr(url, consolidated=False)
    assert list(ds.variables) == ["s"] and ds.sizes["s"] == 2


def test_refuses_what_tables_do_not_hold(tmp_path: Path) -> None:
    url = str(tmp_path / "g")
    with pytest.raises(ValueError, match="dimension 's' has 3"):
        write_table_group(url, {"s": ("s", np.arange(3)), "x": ("s", np.arange(2))},
                          compressors=TABLE_COMPRESSORS)
    for values in (np.array([True, False]), np.array(["x", "y"]),
                   np.array(["x", np.nan], dtype=object)):
        with pytest.raises(TypeError, match="integers, floats or text"):
            write_table_group(url, {"s": ("s", values)}, compressors=TABLE_COMPRESSORS)
    with pytest.raises(ValueError, match="1-D"):
        write_table_group(url, {"s": ("s", np.zeros((2, 2)))}, compressors=TABLE_COMPRESSORS)


def test_text_may_hold_str_subclasses(tmp_path: Path) -> None:
    """Text columns are checked by the types of their values: instances of a ``str``
    subclass (numpy's ``str_``) are text as well, anything else beside them is not."""
    url = str(tmp_path / "g")
    values = np.array([np.str_("x"), "y"], dtype=object)
    write_table_group(url, {"s": ("s", values)}, compressors=TABLE_COMPRESSORS)
    assert list(zarr.open_array(f"{url}/s", mode="r")[:]) == ["x", "y"]
    with pytest.raises(TypeError, match="integers, floats or text"):
        write_table_group(url, {"s": ("s", np.array([np.str_("x"), b"y"], dtype=object))},
                          compressors=TABLE_COMPRESSORS)
