"""Array metadata to a read plan: how the direct reader of :mod:`~atlas_engine.store.blockread`
reads one array of a store.

An array's ``zarr.json`` is read from its file (a local store) or through fsspec (a remote one),
without importing zarr, and turned into a *plan* (:func:`_plan_from_meta`: chunk directory,
shape, chunks, dtype, codecs, fill value), cached per store and array; ``None`` means the array's
layout is left to zarr. Also here: :func:`node_attributes` (a node's attributes from its
``zarr.json``) and the one-line :class:`~atlas_engine.errors.StoreError` for damaged array
metadata.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import AtlasEngineError, StoreError
from .integrity import owner, repair_hint
from .location import local_path

_DTYPES = {"float32": "<f4", "float64": "<f8", "bool": "|b1", "int64": "<i8", "int32": "<i4"}


@lru_cache(maxsize=16)
def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of a remote store and the store's root path on it."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return fs, str(root).rstrip("/")


def _read_meta(url: str, path: str) -> tuple[str | None, Any, str]:
    """The text of array ``path``'s ``zarr.json`` (None when absent or unreadable), the
    filesystem its chunks come from (None: local files) and the chunk directory."""
    root = local_path(url)
    if root is not None:
        try:
            return (root / path / "zarr.json").read_text(), None, str(root / path / "c")
        except OSError:
            return None, None, ""
    fs, base = _filesystem(url)
    node = f"{base}/{path}" if path else base
    try:
        return fs.cat_file(f"{node}/zarr.json").decode(), fs, f"{node}/c"
    except OSError:
        return None, None, ""


def node_attributes(url: str, path: str = "") -> dict[str, Any] | None:
    """The ``attributes`` of the Zarr v3 node at ``path`` (the store's root by default), read
    from its ``zarr.json`` without importing zarr (~0.17 s); None when the file is absent,
    unreadable or not Zarr v3 metadata."""
    text, _, _ = _read_meta(str(url), path)
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
        return None
    attrs = meta.get("attributes", {})
    return attrs if isinstance(attrs, dict) else None


def _plan(url: str, path: str, ndim: int = 2) -> dict[str, Any] | None:
    """The direct-read plan of one ``ndim``-D array of fixed-size numbers in Blosc or raw
    chunks (the block reads), or ``None`` when zarr must be used; damaged metadata raises
    :class:`~atlas_engine.errors.StoreError` naming the array."""
    try:
        plan = _plan_cached(url, path)
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise _bad_metadata(url, path, exc) from None
    if plan is None or len(plan["shape"]) != ndim or plan["string"] \
            or plan["compressor"] not in ("blosc", None):
        return None
    return plan


def _bad_metadata(url: str, path: str, exc: BaseException) -> StoreError:
    return StoreError(f"{url}: the metadata of array {path} ({owner(path)}) cannot be read "
                      f"({type(exc).__name__}: {str(exc)[:200]}); {repair_hint(url, path)}")


@contextlib.contextmanager
def _zarr_errors(url: str, path: str) -> Iterator[None]:
    """Errors of zarr opening an array with damaged metadata, as one :class:`StoreError`."""
    try:
        yield
    except AtlasEngineError:
        raise
    except (KeyError, ValueError, TypeError, OSError, AttributeError) as exc:
        raise _bad_metadata(url, path, exc) from None


@lru_cache(maxsize=256)
def _plan_cached(url: str, path: str) -> dict[str, Any] | None:
    text, fs, chunk_dir = _read_meta(url, path)
    if text is None:
        return None
    meta = json.loads(text)
    if not isinstance(meta, dict):
        raise ValueError("zarr.json is not a JSON object")
    return _plan_from_meta(meta, url, path, fs, chunk_dir)


def _plan_from_meta(meta: dict[str, Any], url: str, path: str, fs: Any, chunk_dir: str
                    ) -> dict[str, Any] | None:
    """How to read the array whose ``zarr.json`` is ``meta`` directly — regular chunks,
    ``/``-separated keys, ``bytes`` (little-endian numbers) or ``vlen-utf8`` (strings), then
    Blosc, Zstd or nothing, then ``crc32c`` or nothing — or None (zarr reads it)."""
    grid = meta.get("chunk_grid", {})
    keys = meta.get("chunk_key_encoding", {})
    codecs = meta.get("codecs", [])
    string = meta.get("data_type") == "string"
    dtype = np.dtype(object) if string else _DTYPES.get(str(meta.get("data_type")))
    if (meta.get("zarr_format") != 3 or grid.get("name") != "regular" or dtype is None
            or keys.get("name") != "default"
            or keys.get("configuration", {}).get("separator", "/") != "/"
            or len(meta.get("shape", [])) not in (1, 2) or meta.get("storage_transformers")):
        return None
    names = [c.get("name") for c in codecs]
    crc = names[-1:] == ["crc32c"]
    if crc:
        names = names[:-1]
    first = "vlen-utf8" if string else "bytes"
    if names not in ([first], [first, "zstd"]) + (() if string else ([first, "blosc"],)):
        return None
    if codecs[0].get("configuration", {}).get("endian", "little") != "little":
        return None
    fill = meta.get("fill_value")
    if isinstance(fill, str) and not string:
        fill = float(fill) if fill.lower() in ("nan", "infinity", "-infinity") else None
    compressor = names[1] if len(names) == 2 else None
    return {
        "dir": chunk_dir,
        "fs": fs,
        "shape": tuple(meta["shape"]),
        "chunks": tuple(grid["configuration"]["chunk_shape"]),
        "dtype": np.dtype(dtype),
        "string": string,
        "compressor": compressor,
        "blosc": compressor == "blosc",
        "crc": crc,
        "fill": fill if fill is not None else ("" if string else 0),
        "url": url,
        "path": path,
    }
