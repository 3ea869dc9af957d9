"""Atlas-independent products cached inside a store, under ``cache/<kind>-<key>/``.

The key is a hash of the parameters that produced the product plus the store's own
description (root attributes: conversion provenance, donors, dtype), so a product is reused
only for the same data and the same parameters. Each entry is a directory of ``.npy`` files
(one per array; plain uncompressed numpy files, the fastest to write and read back) plus
``meta.json``; it is written under a temporary name and renamed into place, so readers see a
complete entry or none. Only local (directory) stores are cached; for other URLs
:class:`StoreCache` is disabled and every lookup misses. Zarr ignores the ``cache/`` folder
(it holds no ``zarr.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

CACHE_GROUP = "cache"


def params_key(params: dict[str, Any]) -> str:
    """A short stable hash of JSON-serialisable ``params``."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class StoreCache:
    """Read/write cached arrays next to the data of a store.

    Parameters
    ----------
    url : str
        The store location (a local directory for caching to be active).
    provenance : dict
        The store's description; part of every key.
    enabled : bool
        False disables lookups and writes.
    """

    def __init__(self, url: str, provenance: dict[str, Any], enabled: bool = True) -> None:
        self.root = Path(url) / CACHE_GROUP if enabled and os.path.isdir(url) else None
        self.provenance = provenance

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def key(self, kind: str, params: dict[str, Any]) -> str:
        return f"{kind}-{params_key({'kind': kind, 'params': params, 'store': self.provenance})}"

    def load(self, key: str) -> CacheEntry | None:
        """The complete entry ``key`` (arrays read on access), or None."""
        if self.root is None:
            return None
        path = self.root / key
        try:
            meta = json.loads((path / META).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or not meta.get("complete"):
            return None
        return CacheEntry(path, meta)

    def writer(self, key: str) -> CacheWriter | None:
        """A writer filling a temporary entry, renamed into place by ``commit``; None when
        caching is off or the store is not writable."""
        if self.root is None:
            return None
        tmp = self.root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir(parents=True)
        except OSError:
            return None
        return CacheWriter(tmp, self.root / key)

    def save(self, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bool:
        """Write a whole entry atomically; False when caching is off or fails."""
        w = self.writer(key)
        if w is None:
            return False
        for name, values in arrays.items():
            w.add(name, values)
        return w.commit(meta)

    def entries(self) -> list[str]:
        """Keys of the complete entries present."""
        if self.root is None or not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith("."))

    def clear(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


META = "meta.json"
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class CacheEntry:
    """A complete cache entry: ``entry[name]`` reads one array, ``entry.meta`` its metadata."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta

    def __contains__(self, name: str) -> bool:
        return (self.path / f"{name}.npy").is_file()

    def __getitem__(self, name: str) -> np.ndarray:
        return self.get(name)

    def get(self, name: str, mapped: bool = False) -> np.ndarray:
        """Array ``name``; ``mapped=True`` maps the file read-only instead of reading it
        (pages come straight from the page cache as they are touched)."""
        try:
            return np.load(self.path / f"{name}.npy", allow_pickle=False,
                           mmap_mode="r" if mapped else None)
        except FileNotFoundError:
            raise KeyError(name) from None


class CacheWriter:
    """Adds arrays to a temporary entry; :meth:`commit` renames it into place."""

    def __init__(self, tmp: Path, final: Path) -> None:
        self.tmp = tmp
        self.final = final
        self.ok = True

    def add(self, name: str, values: np.ndarray) -> None:
        if not _NAME.match(name):
            raise ValueError(f"cache array name {name!r}: letters, digits and _ only")
        if not self.ok:
            return
        try:
            np.save(self.tmp / f"{name}.npy", np.asarray(values), allow_pickle=False)
        except OSError:
            self.abort()

    def create(self, name: str, shape: tuple[int, ...], dtype: Any = np.float64
               ) -> np.ndarray:
        """A new array ``name`` of the entry backed by its file (a writable memory map):
        whatever is written into it is the cached value, with no separate write. Drop every
        reference before :meth:`commit`."""
        if not _NAME.match(name):
            raise ValueError(f"cache array name {name!r}: letters, digits and _ only")
        mm = np.lib.format.open_memmap(self.tmp / f"{name}.npy", mode="w+", dtype=dtype,
                                       shape=tuple(shape))
        return mm

    def commit(self, meta: dict[str, Any]) -> bool:
        if not self.ok:
            return False
        try:
            (self.tmp / META).write_text(json.dumps({**meta, "complete": True}, default=str))
            if self.final.exists():
                self.abort()
                return True
            os.replace(self.tmp, self.final)
        except OSError:
            self.abort()
            return False
        return True

    def abort(self) -> None:
        self.ok = False
        shutil.rmtree(self.tmp, ignore_errors=True)
