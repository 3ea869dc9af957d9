"""Result tables to CSV or Parquet, wide or long, written by columnar libraries.

Region × gene results are short and very wide (94 regions × 58,692 genes): pandas writes such
a CSV at ~1 M values/s, and every columnar writer pays a per-column cost. For CSV the values are
formatted by polars on the transposed block (one column per output row, so the per-column cost
is paid per row), and each row's strings are joined there; Parquet is written by pyarrow from
zero-copy slices of one buffer, with per-column statistics and the Arrow schema copy off. Both give the shortest representation that reads back to the same
float (float32 values to the same float32), and empty cells for NaN, as pandas does.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pandas as pd

from ..atomic import atomic_output
from ..errors import ConfigError

__all__ = ["LAYOUTS", "split_frame", "write_frame", "write_table"]

LAYOUTS = ("wide", "long")
#: Output rows formatted per polars pass on the CSV path (bounds the strings held at once).
#: Measured on a 279 × 58,692 float32 table: 256 rows a pass took 1.3–1.5 s and +530 MiB,
#: 8 rows 0.69–0.71 s and no measurable extra memory (4: 0.83–0.87 s); same bytes.
ROWS_PER_PASS = 8


def split_frame(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The leading columns that label a row (anything before the first float column, plus any
    non-float column) and the float value columns."""
    is_float = [getattr(t, "kind", "") == "f" for t in frame.dtypes]
    ids = [str(c) for c, f in zip(frame.columns, is_float, strict=True) if not f]
    values = [str(c) for c, f in zip(frame.columns, is_float, strict=True) if f]
    return ids, values


def _header(names: Sequence[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(names)
    return buf.getvalue()


def _id_lines(frame: pd.DataFrame, ids: Sequence[str]) -> list[str]:
    """The CSV text of the id columns, one string per row (quoted as needed; missing values
    empty, as pandas writes them)."""
    if not ids:
        return [""] * len(frame)
    sub = frame[list(ids)].astype(object)
    sub = sub.where(sub.notna(), "")
    return [_header(row).rstrip("\n") for row in sub.itertuples(index=False, name=None)]


def _value_lines(block: np.ndarray, prefixes: Sequence[str]) -> object:
    """``block`` (rows × columns, float) as a polars string Series, one CSV line per row:
    ``prefixes[i]`` (the row's id text and a comma), the comma-joined values, a newline.
    The values never leave polars until they are written."""
    import polars as pl

    cols = pl.from_numpy(np.ascontiguousarray(block.T))
    joined = cols.select(
        pl.concat_str([pl.lit(prefix),
                       pl.col(name).fill_nan(None).cast(pl.String).fill_null("").str.join(","),
                       pl.lit("\n")]).alias(name)
        for prefix, name in zip(prefixes, cols.columns, strict=True)
    )
    return joined.transpose(column_names=["line"])["line"]


def _write_strings(fh: BinaryIO, lines: object) -> None:
    """Write a polars string Series back to back: the bytes of its Arrow data buffer, no
    copy through Python strings."""
    import pyarrow as pa

    arr = lines.to_arrow()  # type: ignore[attr-defined]
    if isinstance(arr, pa.ChunkedArray):
        chunks = arr.chunks
    else:
        chunks = [arr]
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        if not pa.types.is_large_string(chunk.type):
            chunk = chunk.cast(pa.large_string())
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[
            chunk.offset: chunk.offset + len(chunk) + 1]
        fh.write(memoryview(chunk.buffers()[2])[offsets[0]:offsets[-1]])


def _polars_csv(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` as it is (columns in order, no index) by polars' CSV writer; NaN and missing
    values as empty cells, as pandas writes them."""
    import polars as pl

    pl.from_pandas(frame.rename(columns=str), nan_to_null=True).write_csv(path, null_value="")


def write_frame(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write any table as it is — columns in their order, no index — by polars, atomically:
    ``.csv`` (NaN and missing values as empty cells) or ``.parquet`` (NaN kept). For tables
    that are not a result's ids + values block, e.g. explanation tables or extracted rows.

    Returns
    -------
    Path
        The file written.
    """
    import polars as pl

    path, suffix = _table_path(path)
    if suffix == ".csv":
        return atomic_output(path, lambda p: _polars_csv(frame, p))
    table = pl.from_pandas(frame.rename(columns=str))
    return atomic_output(path, lambda p: table.write_parquet(p))


def _table_path(path: str | os.PathLike) -> tuple[Path, str]:
    """``(path, ".csv" | ".parquet")``; any other suffix refused."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"{path}: unknown table format {suffix!r} (use .csv or .parquet)")
    return path, suffix


def _write_wide_csv(frame: pd.DataFrame, path: Path) -> None:
    ids, values = split_frame(frame)
    if len(values) <= len(frame) or not values:
        # tall or narrow: polars' own writer is fastest
        _polars_csv(frame, path)
        return
    order = ids + values
    id_set = set(ids)
    if [str(c) for c in frame.columns] != order:
        frame = frame[[c for c in frame.columns if str(c) in id_set]
                      + [c for c in frame.columns if str(c) not in id_set]]
    dtype = np.result_type(*frame.dtypes.iloc[len(ids):].unique())
    block = frame.iloc[:, len(ids):].to_numpy(dtype=dtype)
    prefixes = [f"{text}," for text in _id_lines(frame, ids)] if ids else [""] * len(frame)
    with open(path, "wb") as fh:
        fh.write(_header(order).encode("utf-8"))
        for r0 in range(0, len(frame), ROWS_PER_PASS):
            r1 = min(len(frame), r0 + ROWS_PER_PASS)
            _write_strings(fh, _value_lines(block[r0:r1], prefixes[r0:r1]))


def _long(frame: pd.DataFrame, var_name: str, value_name: str) -> object:
    """The tidy form: id columns, ``var_name``, ``value_name``; one row per cell, row-major."""
    import polars as pl

    ids, values = split_frame(frame)
    n, m = len(frame), len(values)
    block = frame[values].to_numpy()
    row = np.repeat(np.arange(n), m)
    cols = {}
    base = pl.from_pandas(frame[ids]) if ids else None
    if base is not None:
        taken = base[row]
        cols.update({c: taken[c] for c in ids})
    cols[var_name] = pl.Series(var_name, values, dtype=pl.String).to_frame()[
        np.tile(np.arange(m), n)][var_name]
    cols[value_name] = pl.Series(value_name, block.reshape(-1)).fill_nan(None)
    return pl.DataFrame(cols)


def write_table(
    frame: pd.DataFrame,
    path: str | os.PathLike,
    *,
    layout: Literal["wide", "long"] = "wide",
    var_name: str = "feature",
    value_name: str = "value",
) -> Path:
    """Write a result table by ``path``'s suffix (``.csv`` or ``.parquet``), atomically.

    Parameters
    ----------
    frame
        Id columns (structure id, acronym, name, donor …) then float value columns (one per
        gene or probe).
    path
        Output file; ``.csv`` or ``.parquet``.
    layout
        ``"wide"``: the frame as it is (one row per group, one column per feature);
        ``"long"``: one row per group and feature, with the id columns, ``var_name`` and
        ``value_name`` (the tidy form most plotting and database tools expect).
    var_name, value_name
        Column names of the long layout.

    Returns
    -------
    Path
        The file written.
    """
    path, suffix = _table_path(path)
    if layout not in LAYOUTS:
        raise ConfigError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if layout == "long":
        tidy = _long(frame, var_name, value_name)
        if suffix == ".csv":
            return atomic_output(path, lambda p: tidy.write_csv(p, null_value=""))
        return atomic_output(path, lambda p: tidy.write_parquet(p))
    if suffix == ".csv":
        return atomic_output(path, lambda p: _write_wide_csv(frame, p))
    return atomic_output(path, lambda p: _write_wide_parquet(frame, p))


def _value_columns(frame: pd.DataFrame, positions: Sequence[int],
                   dtype: np.dtype) -> np.ndarray:
    """The value columns at ``positions`` as one C-contiguous (columns × rows) block.

    When the positions are one run (id columns first, as results are built) this is a view of
    pandas' own float block, so no copy is made; otherwise the columns are gathered once."""
    run = bool(positions) and list(positions) == list(range(positions[0],
                                                           positions[0] + len(positions)))
    cols = (frame.iloc[:, positions[0]:positions[0] + len(positions)] if run
            else frame.iloc[:, list(positions)])
    return np.ascontiguousarray(cols.to_numpy(dtype=dtype).T)


def _float_arrays(block: np.ndarray) -> list:
    """One Arrow array per row of ``block`` (columns × rows), each a zero-copy slice of one
    buffer: NaN stays NaN (no validity bitmap), as ``pyarrow.array`` of a numpy column gives."""
    import pyarrow as pa

    n_cols, n_rows = block.shape
    kind = pa.from_numpy_dtype(block.dtype)
    buf = pa.py_buffer(block)
    width = n_rows * block.dtype.itemsize
    return [pa.Array.from_buffers(kind, n_rows, [None, buf.slice(j * width, width)])
            for j in range(n_cols)]


def _write_wide_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Id columns then value columns, one row group, as pyarrow writes it.

    Tens of thousands of float columns: the per-column work is kept to what a reader needs.
    The value arrays are slices of one buffer; dictionaries and statistics only for the id
    columns; and the Arrow schema (a base64 copy of every column's name and type, ~4 MB for
    58,692 columns) is stored only when an id column has a type Parquet cannot say by itself
    (a dictionary, i.e. a pandas categorical) — pandas and polars read the same table either
    way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids, _ = split_frame(frame)
    id_set = set(ids)
    names = [str(c) for c in frame.columns]
    id_pos = [i for i, c in enumerate(names) if c in id_set]
    value_pos = [i for i, c in enumerate(names) if c not in id_set]
    arrays = [pa.Array.from_pandas(frame.iloc[:, i]) for i in id_pos]
    exotic = any(pa.types.is_dictionary(a.type) for a in arrays)
    if value_pos:
        dtype = np.result_type(*frame.dtypes.iloc[value_pos].unique())
        arrays += _float_arrays(_value_columns(frame, value_pos, dtype))
    table = pa.Table.from_arrays(arrays, names=[names[i] for i in id_pos + value_pos])
    pq.write_table(table, path, use_dictionary=list(ids), write_statistics=list(ids),
                   compression="snappy", store_schema=exotic)
