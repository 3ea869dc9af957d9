"""The small 1-D tables of a store (probe, sample, ontology, gene columns) written as a Zarr v3
group laid out exactly as ``xarray.Dataset.to_zarr`` lays it out, without xarray.

xarray's writer cost the six-donor conversion ~0.6 s of its ~5.5 s on 2 cores (importing
xarray and, through it, ``dask.array``; then ~0.2 s a donor before its streams could start:
benchmarks/RESULTS.md, "Store tables written without xarray"); these tables need only a
handful of its conventions, followed here for the column types the tables hold:

* every column is a 1-D array named after itself with ``dimension_names`` = its dimension;
  chunks are Zarr's automatic choice for its shape and type, as xarray leaves them;
* floating-point columns have ``fill_value`` NaN and the attribute ``_FillValue`` (NaN as the
  base64 of its little-endian double), xarray's CF mask encoding; integers Zarr's default fill
  (0) and no attributes; text columns Zarr's variable-length UTF-8 strings (fill ``""``);
* coordinates that are not dimension coordinates are named in a ``coordinates`` attribute:
  on each data column that has their dimension, and on the group for the others (names
  sorted, space-separated), so ``xarray.open_zarr`` gives back the same Dataset.

``tests/test_tablegroup.py`` writes tables of every column type both ways and compares every
file byte for byte, so a change in xarray's conventions shows up there.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr
import zarr.api.asynchronous
from zarr.core.sync import sync

__all__ = ["Column", "write_table_group"]

#: a column: its dimension name and its values (1-D)
Column = tuple[str, Any]

#: the ``_FillValue`` attribute of floating-point columns (NaN, as xarray encodes it)
_NAN_FILL = base64.standard_b64encode(struct.pack("<d", float("nan"))).decode()


def _values(values: Any) -> np.ndarray:
    """A column's values as a 1-D array: integers, floats, or text as an object array of
    ``str`` (numpy's fixed-width strings, which xarray writes otherwise, are refused)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"a table column is 1-D, got shape {arr.shape}")
    # the element types once each (``map(type, …)`` runs in C: 1.8 ms instead of 5.1 ms
    # for an ``isinstance`` per value on one of Probes.csv's 58,692-row text columns)
    if arr.dtype.kind not in "iufO" or (arr.dtype.kind == "O" and not all(
            issubclass(t, str) for t in set(map(type, arr)))):
        raise TypeError(f"table columns are integers, floats or text (an object array of "
                        f"str), not {arr.dtype}")
    return arr


def _coordinates_attrs(coords: Mapping[str, Column], data_vars: Mapping[str, Column]
                       ) -> tuple[dict[str, str], str | None]:
    """xarray's ``coordinates`` attributes: per data column, and the group's (or None)."""
    non_dim = {name for name, (dim, _) in coords.items() if name != dim}
    per_var: dict[str, str] = {}
    written: set[str] = set()
    for name, (dim, _) in data_vars.items():
        mine = sorted(c for c in non_dim if coords[c][0] == dim)
        if mine:
            per_var[name] = " ".join(mine)
            written.update(mine)
    rest = non_dim - written
    return per_var, (" ".join(sorted(rest)) if rest else None)


def write_table_group(url: str, coords: Mapping[str, Column],
                      data_vars: Mapping[str, Column] | None = None, *, compressors: Any,
                      mode: str = "w") -> None:
    """Write 1-D columns as a Zarr v3 group at ``url``, laid out as xarray's ``to_zarr``
    would write ``xarray.Dataset(data_vars, coords=coords)``.

    Parameters
    ----------
    url
        The group's location (a path or an fsspec URL).
    coords, data_vars
        ``name → (dimension, values)``; a coordinate named after its dimension is that
        dimension's index.
    compressors
        The Zarr compressors of every column.
    mode
        ``"w"``: the group is replaced; ``"a"``: the columns are added to an existing group
        (its other arrays and attributes stay).
    """
    data_vars = dict(data_vars or {})
    columns = {**data_vars, **coords}
    sizes: dict[str, int] = {}
    arrays = {}
    for name, (dim, values) in columns.items():
        arr = _values(values)
        if sizes.setdefault(dim, len(arr)) != len(arr):
            raise ValueError(f"column {name!r} has {len(arr)} values; dimension {dim!r} "
                             f"has {sizes[dim]}")
        arrays[name] = (dim, arr)
    per_var, group_coords = _coordinates_attrs(coords, data_vars)
    sync(_write(url, mode, group_coords, arrays, per_var, compressors))


async def _write(url: str, mode: str, group_coords: str | None,
                 arrays: dict[str, tuple[str, np.ndarray]], per_var: dict[str, str],
                 compressors: Any) -> None:
    """The group, then every column created and written at once on zarr's event loop (one
    round trip instead of two per column: ~3x faster for a donor's 16 columns)."""
    group = await zarr.api.asynchronous.open_group(url, mode=mode, zarr_format=3)
    if group_coords is not None:
        await group.update_attributes({"coordinates": group_coords})

    async def one(name: str, dim: str, arr: np.ndarray) -> None:
        attrs: dict[str, Any] = {}
        if name in per_var:
            attrs["coordinates"] = per_var[name]
        kind = arr.dtype.kind
        if kind == "O" and not len(arr):
            # xarray infers float64 for an empty text column (NaN fill, no _FillValue)
            arr, kind = np.zeros(0), "f"
        elif kind == "f":
            attrs["_FillValue"] = _NAN_FILL
        out = await group.create_array(
            name, shape=arr.shape, dtype=str if kind == "O" else arr.dtype,
            chunks="auto", dimension_names=(dim,), compressors=compressors,
            fill_value=np.nan if kind == "f" else None, attributes=attrs or None,
            config={"write_empty_chunks": True}, overwrite=True)
        await out.setitem(..., arr)

    await asyncio.gather(*(one(name, dim, arr) for name, (dim, arr) in arrays.items()))
