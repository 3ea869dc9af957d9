"""Atlas-independent products cached inside a store, under ``cache/<kind>-<key>/``.

The key is a hash of the parameters that produced the product plus the store's own
description (root attributes: conversion provenance, donors, dtype), so a product is reused
only for the same data and the same parameters. Each entry is a small Zarr v3 group of numpy
arrays plus a JSON ``meta`` attribute; it is written under a temporary name and renamed into
place, so readers see a complete entry or none. Only local (directory) stores are cached; for
other URLs :class:`StoreCache` is disabled and every lookup misses.
"""

from __future__ import annotations

import hashlib
import json
import os
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

    def load(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """``(arrays, meta)`` of a complete entry, or None."""
        if self.root is None or not (self.root / key).is_dir():
            return None
        import zarr

        try:
            group = zarr.open_group(str(self.root / key), mode="r", zarr_format=3)
            meta = dict(group.attrs.get("meta", {}))
            if not meta.get("complete"):
                return None
            arrays = {name: np.asarray(arr[...]) for name, arr in group.arrays()}
        except (FileNotFoundError, ValueError, KeyError, OSError):
            return None
        return arrays, meta

    def save(self, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bool:
        """Write an entry atomically; False when caching is off or the store is read-only."""
        if self.root is None:
            return False
        import zarr

        tmp = self.root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        try:
            self.root.mkdir(exist_ok=True)
            group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            for name, values in arrays.items():
                a = np.asarray(values)
                if a.dtype.kind in "UO":
                    a = a.astype("U")
                chunks = a.shape if a.ndim and a.size else "auto"
                group.create_array(name, data=a, chunks=chunks)
            group.attrs["meta"] = {**meta, "complete": True}
            final = self.root / key
            if final.exists():
                shutil.rmtree(tmp, ignore_errors=True)
                return True
            os.replace(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        return True

    def entries(self) -> list[str]:
        """Keys of the complete entries present."""
        if self.root is None or not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith("."))

    def clear(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
