"""Atlas-independent products cached inside a store, under ``cache/<kind>-<key>/``.

The key is a hash of the parameters that produced the product plus the store's own
description (root attributes: conversion provenance, donors, dtype), so a product is reused
only for the same data and the same parameters. Each entry is a directory of ``.npy`` files
(one per array; plain uncompressed numpy files, the fastest to write and read back) plus
``meta.json``; it is written under a temporary name and renamed into place, so readers see a
complete entry or none. ``meta.json`` records each file's size and CRC-32C, checked when the
entry is loaded: a damaged entry is a miss (removed and recomputed from the store, whose chunks
are checked in turn), never a wrong number. Only local (directory) stores are cached; for other URLs
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
import weakref
from collections.abc import Sequence
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
        if not _files_intact(path, meta.get("files")):
            shutil.rmtree(path, ignore_errors=True)   # damaged: recomputed by the caller
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
        # an entry never committed (the run failed or was interrupted) leaves no temporary
        # directory behind once its writer is gone; after a commit there is nothing to remove
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(tmp), True)

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
            files = {p.name: list(_file_crc(p)) for p in sorted(self.tmp.iterdir())
                     if p.is_file() and p.name != META}
            (self.tmp / META).write_text(json.dumps({**meta, "files": files, "complete": True},
                                                    default=str))
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
        self._cleanup()


def _file_crc(path: Path) -> tuple[int, int]:
    """``(size, CRC-32C)`` of a file, read in 4 MiB pieces into one reused buffer."""
    import google_crc32c

    buf = np.empty(4 << 20, np.uint8)
    crc = 0
    size = 0
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            view = buf[:n]
            view.flags.writeable = False    # google_crc32c takes read-only buffers
            crc = google_crc32c.extend(crc, view)
            size += n
    return size, crc


def _files_intact(path: Path, files: Any) -> bool:
    """Every file recorded at commit is there with its size and CRC-32C (entries written
    before checksums were recorded count as damaged)."""
    if not isinstance(files, dict):
        return False
    try:
        for name, (size, crc) in files.items():
            f = path / name
            if f.stat().st_size != size or _file_crc(f) != (size, crc):
                return False
    except (OSError, ValueError, TypeError):
        return False
    return True


def _read_exactly(path: str, offset: int, dest: np.ndarray) -> None:
    """Fill the C-contiguous ``dest`` with the bytes of ``path`` from ``offset`` (a file
    shorter than that is an error, never a partly filled array)."""
    view = memoryview(dest.reshape(-1).view(np.uint8))
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        got = 0
        while got < view.nbytes:
            k = fh.readinto(view[got:])
            if not k:
                raise OSError(f"{path}: truncated")
            got += k


class StripedMatrix:
    """A 2-D float array stored as column stripes, one ``.npy`` file per stripe
    (``<name>_0.npy``, ``<name>_1.npy``, … side by side), read a block of rows at a time.

    Each stripe is written whole when it is complete (e.g. sample-normalised), and a block of
    rows of a stripe is one contiguous range of its file, so rows are read with plain file
    reads: nothing is mapped (mapped pages would count in the resident size) and the whole
    matrix is never in memory unless asked for (``np.asarray``).
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.parts: list[tuple[str, int, int]] = []   # (file, data offset, stripe width)
        n_rows = None
        dtype = None
        for path in paths:
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read = {(1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read is None:
                    raise ValueError(f"{path}: .npy format {version} not read here")
                shape, fortran, dt = read(fh)
                if len(shape) != 2 or fortran or (n_rows is not None and shape[0] != n_rows) \
                        or (dtype is not None and dt != dtype):
                    raise ValueError(f"{path}: not a stripe of the same matrix")
                n_rows, dtype = shape[0], dt
                self.parts.append((str(path), fh.tell(), shape[1]))
        if not self.parts:
            raise ValueError("no stripes")
        self.dtype = np.dtype(dtype)
        self.shape = (int(n_rows), sum(w for _, _, w in self.parts))
        self.ndim = 2

    @classmethod
    def open(cls, directory: Path, name: str) -> StripedMatrix:
        """The stripes ``<name>_<j>.npy`` of ``directory`` (j = 0, 1, …)."""
        paths = []
        while (directory / f"{name}_{len(paths)}.npy").is_file():
            paths.append(directory / f"{name}_{len(paths)}.npy")
        if not paths:
            raise KeyError(name)
        return cls(paths)

    def __len__(self) -> int:
        return self.shape[0]

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` (all columns), a new C-ordered array."""
        r0, r1 = max(0, r0), min(self.shape[0], r1)
        n = max(0, r1 - r0)
        out = np.empty((n, self.shape[1]), dtype=self.dtype)
        c0 = 0
        size = self.dtype.itemsize
        for path, offset, w in self.parts:
            if n and w:
                part = np.empty((n, w), dtype=self.dtype)
                _read_exactly(path, offset + r0 * w * size, part)
                out[:, c0:c0 + w] = part
            c0 += w
        return out

    def gather_rows(self, r0: int, r1: int, cols: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out[:] = self[r0:r1][:, cols]`` (``cols`` any order, repeats allowed) without the
        full-width block: each stripe's rows are read into one pooled scratch buffer and only
        its columns in ``cols`` are copied out."""
        from ..kernels.blockgroups import take_columns
        from ..store.bufferpool import pooled_empty

        cols = np.asarray(cols, dtype=np.int64)
        r0, r1 = max(0, r0), min(self.shape[0], r1)
        n = max(0, r1 - r0)
        if out.shape != (n, len(cols)):
            raise ValueError(f"out has shape {out.shape}, expected {(n, len(cols))}")
        size = self.dtype.itemsize
        widest = max(w for _, _, w in self.parts)
        scratch = pooled_empty(max(1, n * widest), self.dtype)
        c0 = 0
        for path, offset, w in self.parts:
            here = np.flatnonzero((cols >= c0) & (cols < c0 + w))
            if n and len(here):
                part = scratch[:n * w].reshape(n, w)
                _read_exactly(path, offset + r0 * w * size, part)
                take_columns(part, cols[here] - c0, here, out)
            c0 += w
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = (key, slice(None)) if not isinstance(key, tuple) else (key + (
            slice(None),))[:2]
        if isinstance(rows, slice) and rows.step in (None, 1):
            r0, r1, _ = rows.indices(self.shape[0])
            block = self.read_rows(r0, r1)
            full = isinstance(cols, slice) and cols == slice(None)
            return block if full else block[:, cols]
        if isinstance(rows, (int, np.integer)):
            r = int(rows) + (self.shape[0] if rows < 0 else 0)
            return self.read_rows(r, r + 1)[0][cols]
        return np.asarray(self)[rows, cols]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.read_rows(0, self.shape[0])
        return out if dtype is None else out.astype(dtype)
