"""The store's tables (probes, samples, ontology) read into pandas, and their plain-array cache.

The 1-D arrays of a table group are read column by column
(:func:`~atlas_engine.store.blockread.read_column`, zarr only for a layout it leaves to zarr)
after listing them from their ``zarr.json`` files (:func:`_array_metadata`), and made into a
frame (:func:`_frame`; :func:`_to_frame` for an xarray Dataset). The table cache saves a frame
as one ``.npz`` of plain arrays (:func:`_save_npz`) and loads it back (:func:`_frame_from_npz`).
Also the root ``atlas_engine`` attributes of a local store read without zarr
(:func:`_root_attrs_local`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..atomic import atomic_output
from . import layout as L

if TYPE_CHECKING:
    import xarray as xr


def _local_dir(url: str) -> Path | None:
    """The directory of a local store, or None (other URLs)."""
    return Path(url) if "://" not in url and os.path.isdir(url) else None


def _to_frame(ds: xr.Dataset, index: str | None = None,
              order: tuple[str, ...] = ()) -> pd.DataFrame:
    cols = {}
    for name, var in ds.variables.items():
        if name in ds.dims and name != index:
            continue
        values = np.asarray(var.values)
        if values.dtype.kind in "TUO":
            values = values.astype(object)
        cols[name] = values
    frame = pd.DataFrame(cols)
    first = [c for c in order if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def _frame(cols: dict[str, np.ndarray], order: tuple[str, ...]) -> pd.DataFrame:
    """``cols`` as a frame (strings as object columns, as :func:`_to_frame`), the columns
    ``order`` first."""
    frame = pd.DataFrame({k: v.astype(object) if v.dtype.kind in "TUO" else v
                          for k, v in cols.items()})
    first = [c for c in order if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def _root_attrs_local(url: str) -> dict[str, Any] | None:
    """The root ``atlas_engine`` attributes of a local store read from its ``zarr.json``
    (no zarr import); None when that is not possible (zarr decides)."""
    root = _local_dir(url)
    if root is None:
        return None
    try:
        meta = json.loads((root / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3 \
            or meta.get("node_type") != "group":
        return None
    return dict((meta.get("attributes") or {}).get(L.ROOT_ATTR, {}))


def _read_columns(url: str, group: str, index: str | None) -> dict[str, np.ndarray] | None:
    """The 1-D arrays of ``group`` (xarray's variables in xarray's order: dimension
    coordinates left out unless named ``index``); None when one carries an encoding xarray
    would apply (other than a NaN fill of a float array). Each column is read by
    :func:`~atlas_engine.store.blockread.read_column` (no zarr import, ~0.2 s saved on a
    local store), through zarr only in a layout that reader leaves to it."""
    from .blockread import read_column

    metas = _array_metadata(url, group)
    dims = {d for m in metas.values() for d in (m.get("dimension_names") or ())}
    cols = {}
    for name, meta in sorted(metas.items()):
        if len(meta.get("shape") or ()) != 1 or (name in dims and name != index):
            continue
        enc = dict(meta.get("attributes") or {})
        fill = enc.pop("_FillValue", None)
        if enc or (fill is not None and meta.get("data_type") not in ("float32", "float64")):
            return None     # an encoding xarray applies
        values = read_column(url, f"{group}/{name}", meta)
        cols[name] = values if values is not None else _zarr_column(url, f"{group}/{name}")
    return cols


def _array_metadata(url: str, group: str) -> dict[str, dict[str, Any]]:
    """``{name: zarr.json}`` of the arrays directly in ``group``: read from the files of a
    local store, else (a remote store, or metadata these plain reads cannot take) listed by
    zarr, whose errors name what is damaged."""
    root = _local_dir(url)
    if root is not None:
        base = root / group
        try:
            own = json.loads((base / "zarr.json").read_text())
            metas = {p.name: json.loads((p / "zarr.json").read_text())
                     for p in base.iterdir() if (p / "zarr.json").is_file()}
        except (OSError, ValueError):
            metas, own = {}, None
        if isinstance(own, dict) and own.get("zarr_format") == 3 \
                and own.get("node_type") == "group" \
                and all(isinstance(m, dict) for m in metas.values()):
            return {n: m for n, m in metas.items() if m.get("node_type") == "array"}
    import zarr

    from .checked import checked_store

    grp = zarr.open_group(checked_store(url), path=group, mode="r", zarr_format=3)
    return {name: arr.metadata.to_dict() for name, arr in grp.arrays()}


def _zarr_column(url: str, path: str) -> np.ndarray:
    """The 1-D array ``path`` read through zarr (each chunk checked)."""
    import zarr

    from .checked import checked_store

    return np.asarray(zarr.open_array(checked_store(url), path=path, mode="r")[:])


_SEP = "\x00"


def _save_npz(path: Path, frame: pd.DataFrame) -> None:
    """Save ``frame`` (numeric and string columns) to ``path`` atomically; strings as one
    NUL-separated UTF-8 buffer per column. Nothing is written when that cannot be done."""
    arrays: dict[str, np.ndarray] = {"__columns__": np.asarray(list(frame.columns), dtype=str)}
    kinds = []
    for i, c in enumerate(frame.columns):
        v = frame[c].to_numpy()
        if v.dtype.kind in "biuf":
            arrays[f"c{i}"] = v
            kinds.append("n")
            continue
        items = v.tolist()
        try:
            joined = _SEP.join(items)
        except TypeError:       # a value that is not a string
            return
        if joined.count(_SEP) != max(len(items) - 1, 0):
            return              # a value holding the separator
        arrays[f"c{i}"] = np.frombuffer(joined.encode(), dtype=np.uint8)
        kinds.append("s")
    arrays["__kinds__"] = np.asarray(kinds, dtype=str)
    arrays["__rows__"] = np.asarray(len(frame))
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    try:
        atomic_output(path, write)
    except OSError:
        pass


def _frame_from_npz(path: Path) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as z:
        names, kinds, n = z["__columns__"].tolist(), z["__kinds__"].tolist(), int(z["__rows__"])
        cols = {}
        for i, (c, k) in enumerate(zip(names, kinds, strict=True)):
            v = z[f"c{i}"]
            if k == "s":
                items = v.tobytes().decode().split(_SEP) if n else []
                if len(items) != n:
                    raise ValueError(f"{path}: column {c} has {len(items)} values, not {n}")
                v = np.asarray(items, dtype=object)
            cols[c] = v
    return pd.DataFrame(cols)
