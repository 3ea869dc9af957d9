"""Atlas-independent products cached inside a store, under ``cache/<kind>-<key>/``.

The key is a hash of the parameters that produced the product plus the store's own
description (root attributes: conversion provenance, donors, dtype), so a product is reused
only for the same data and the same parameters. Each entry is a directory of ``.npy`` files
(one per array; plain uncompressed numpy files, the fastest to write and read back) plus
``meta.json``; it is written under a temporary name and renamed into place, so readers see a
complete entry or none. ``meta.json`` records each file's size and CRC-32C, checked when the
entry is loaded: a damaged entry is a miss (removed and recomputed from the store, whose chunks
are checked in turn), never a wrong number. Stripe files (:func:`save_stripe`, read a block of
rows at a time by :class:`StripedMatrix`) record a CRC-32C per segment of rows instead: the
header is checked when the entry is loaded, each segment when a read covers it
(:class:`~atlas_engine.errors.DamagedCacheError`), so the data are read once, not once more to
be checked. Only local (directory) stores are cached; for other URLs
:class:`StoreCache` is disabled and every lookup misses. Zarr ignores the ``cache/`` folder
(it holds no ``zarr.json``).
"""

from __future__ import annotations

import hashlib
import io
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

from ..errors import DamagedCacheError

CACHE_GROUP = "cache"

#: bytes of a stripe file covered by one recorded CRC-32C (see :func:`save_stripe`)
SEGMENT_BYTES = 1 << 18


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

    def striped(self, name: str) -> StripedMatrix:
        """The stripes ``<name>_<j>.npy`` as one :class:`StripedMatrix`, each read checked
        against the segment checksums recorded at commit."""
        return StripedMatrix.open(self.path, name, self.meta.get("files"))

    def get(self, name: str, mapped: bool = False) -> np.ndarray:
        """Array ``name``; ``mapped=True`` maps the file read-only instead of reading it
        (pages come straight from the page cache as they are touched)."""
        try:
            values = np.load(self.path / f"{name}.npy", allow_pickle=False,
                             mmap_mode="r" if mapped else None)
        except FileNotFoundError:
            raise KeyError(name) from None
        check = (self.meta.get("files") or {}).get(f"{name}.npy")
        if isinstance(check, dict):   # a stripe file: its segments were not checked on load
            _check_segments(self.path / f"{name}.npy", np.ascontiguousarray(values), 0,
                            int(check["segment_rows"]), check["crcs"])
        return values


class CacheWriter:
    """Adds arrays to a temporary entry; :meth:`commit` renames it into place."""

    def __init__(self, tmp: Path, final: Path) -> None:
        self.tmp = tmp
        self.final = final
        self.ok = True
        self.checked: dict[str, dict[str, Any]] = {}
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

    def record(self, name: str, checks: dict[str, Any]) -> None:
        """The checksums of file ``name`` of the entry, computed by whoever wrote it
        (:func:`save_stripe`): :meth:`commit` records them instead of reading the file back."""
        self.checked[name] = checks

    def commit(self, meta: dict[str, Any]) -> bool:
        if not self.ok:
            return False
        try:
            files: dict[str, Any] = {}
            for p in sorted(self.tmp.iterdir()):
                if not p.is_file() or p.name == META:
                    continue
                checks = self.checked.get(p.name)
                if checks is not None and p.stat().st_size == checks["size"]:
                    files[p.name] = checks
                else:
                    files[p.name] = list(_file_crc(p))
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


def _crc(data: Any, crc: int = 0) -> int:
    """CRC-32C of a bytes-like object or a C-contiguous array, continuing ``crc``."""
    import google_crc32c

    if isinstance(data, np.ndarray):
        data = data.reshape(-1).view(np.uint8)
        data.flags.writeable = False    # google_crc32c takes read-only buffers
    return google_crc32c.extend(crc, data)


def save_stripe(path: str | Path, values: np.ndarray) -> dict[str, Any]:
    """Write the 2-D ``values`` as a ``.npy`` file (as ``np.save``) and return its checks for
    :meth:`CacheWriter.record`: size, header length and CRC-32C, and a CRC-32C per segment of
    ``segment_rows`` rows (:data:`SEGMENT_BYTES`), computed from ``values`` in memory."""
    values = np.ascontiguousarray(values)
    if values.ndim != 2:
        raise ValueError(f"a stripe is 2-D, got shape {values.shape}")
    bio = io.BytesIO()
    np.lib.format.write_array_header_1_0(bio, np.lib.format.header_data_from_array_1_0(values))
    header = bio.getvalue()
    n, row_bytes = values.shape[0], values.shape[1] * values.itemsize
    seg = max(1, SEGMENT_BYTES // max(row_bytes, 1))
    crcs = [_crc(values[a:a + seg]) for a in range(0, n, seg)]
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(memoryview(values.reshape(-1).view(np.uint8)))
    return {"size": len(header) + values.nbytes, "offset": len(header),
            "header_crc": _crc(header), "segment_rows": seg, "crcs": crcs}


def _header_intact(path: Path, checks: dict[str, Any]) -> bool:
    """The size and header checksum of a stripe file (its segments are checked as read)."""
    if path.stat().st_size != checks["size"]:
        return False
    with open(path, "rb") as fh:
        header = fh.read(int(checks["offset"]))
    return len(header) == checks["offset"] and _crc(header) == checks["header_crc"]


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
        for name, check in files.items():
            f = path / name
            if isinstance(check, dict):
                if not _header_intact(f, check):
                    return False
                continue
            size, crc = check
            if f.stat().st_size != size or _file_crc(f) != (size, crc):
                return False
    except (OSError, ValueError, TypeError, KeyError):
        return False
    return True


def _segments(path: Path, check: dict[str, Any], offset: int, shape: tuple[int, ...],
              dtype: np.dtype) -> tuple[int, np.ndarray]:
    """The segment checks of a stripe file, after checking they describe it."""
    try:
        seg, crcs = int(check["segment_rows"]), np.asarray(check["crcs"], dtype=np.int64)
        fits = (int(check["offset"]) == offset and seg > 0
                and len(crcs) == -(-shape[0] // seg)
                and int(check["size"]) == offset + shape[0] * shape[1] * dtype.itemsize
                and path.stat().st_size == int(check["size"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise DamagedCacheError(str(path.parent), f"{path.name}: bad checks ({exc})") from None
    if not fits:
        raise DamagedCacheError(str(path.parent), f"{path.name}: size or header differs from "
                                "its record")
    return seg, crcs


def _check_segments(path: Path, rows: np.ndarray, first: int, seg: int, crcs: Any) -> None:
    """Check the C-contiguous ``rows`` (rows ``first``… of the stripe file ``path``, ``first``
    a multiple of ``seg``, ending at a segment's end or the file's) against the recorded
    CRC-32C of each segment of ``seg`` rows they cover."""
    for a in range(0, len(rows), seg):
        if _crc(rows[a:a + seg]) != crcs[(first + a) // seg]:
            end = first + min(a + seg, len(rows))
            raise DamagedCacheError(str(path.parent), f"{path.name}: rows {first + a}–{end} "
                                    "fail their CRC-32C")


def _read_exactly(path: str, offset: int, dest: np.ndarray) -> None:
    """Fill the C-contiguous ``dest`` with the bytes of ``path`` from ``offset``. A file
    shorter than that (cut after its entry was loaded) is a damaged entry
    (:class:`~atlas_engine.errors.DamagedCacheError`: the pipeline recomputes it), never a
    partly filled array."""
    view = memoryview(dest.reshape(-1).view(np.uint8))
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        got = 0
        while got < view.nbytes:
            k = fh.readinto(view[got:])
            if not k:
                raise DamagedCacheError(str(Path(path).parent),
                                        f"{Path(path).name}: ends before byte "
                                        f"{offset + view.nbytes} (truncated)")
            got += k


class StripedMatrix:
    """A 2-D float array stored as column stripes, one ``.npy`` file per stripe
    (``<name>_0.npy``, ``<name>_1.npy``, … side by side), read a block of rows at a time.

    Each stripe is written whole when it is complete (e.g. sample-normalised), and a block of
    rows of a stripe is one contiguous range of its file, so rows are read with plain file
    reads: nothing is mapped (mapped pages would count in the resident size) and the whole
    matrix is never in memory unless asked for (``np.asarray``).
    """

    def __init__(self, paths: Sequence[Path], checks: dict[str, Any] | None = None) -> None:
        self.parts: list[tuple[str, int, int]] = []   # (file, data offset, stripe width)
        #: per part: (rows per segment, CRC-32C of each segment), or None (not checked)
        self.segments: list[tuple[int, np.ndarray] | None] = []
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
            check = (checks or {}).get(Path(path).name)
            self.segments.append(None if not isinstance(check, dict) else
                                 _segments(Path(path), check, self.parts[-1][1], shape,
                                           np.dtype(dt)))
        if not self.parts:
            raise ValueError("no stripes")
        self.dtype = np.dtype(dtype)
        self.shape = (int(n_rows), sum(w for _, _, w in self.parts))
        self.ndim = 2

    @classmethod
    def open(cls, directory: Path, name: str, checks: dict[str, Any] | None = None
             ) -> StripedMatrix:
        """The stripes ``<name>_<j>.npy`` of ``directory`` (j = 0, 1, …); ``checks`` (file
        name → :func:`save_stripe`'s checks) makes every read verify the segments it covers."""
        paths = []
        while (directory / f"{name}_{len(paths)}.npy").is_file():
            paths.append(directory / f"{name}_{len(paths)}.npy")
        if not paths:
            raise KeyError(name)
        return cls(paths, checks)

    def _read_part(self, i: int, r0: int, r1: int, scratch: np.ndarray) -> np.ndarray:
        """Rows ``r0:r1`` of stripe ``i``, read into ``scratch`` (room for
        :meth:`_scratch_rows` rows of the widest stripe). With segment checks the read is
        widened to whole segments and each is checked before any of its rows is used."""
        path, offset, w = self.parts[i]
        size = self.dtype.itemsize
        checked = self.segments[i]
        if checked is None:
            part = scratch[:(r1 - r0) * w].reshape(r1 - r0, w)
            _read_exactly(path, offset + r0 * w * size, part)
            return part
        seg, crcs = checked
        a, b = (r0 // seg) * seg, min(self.shape[0], -(-r1 // seg) * seg)
        part = scratch[:(b - a) * w].reshape(b - a, w)
        _read_exactly(path, offset + a * w * size, part)
        _check_segments(Path(path), part, a, seg, crcs)
        return part[r0 - a:r1 - a]

    def _scratch_rows(self, n: int) -> int:
        """Rows of scratch a read of ``n`` rows needs (whole segments at both ends)."""
        return n + 2 * max((c[0] for c in self.segments if c is not None), default=0)

    def __len__(self) -> int:
        return self.shape[0]

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` (all columns), a new C-ordered array."""
        r0, r1 = max(0, r0), min(self.shape[0], r1)
        n = max(0, r1 - r0)
        out = np.empty((n, self.shape[1]), dtype=self.dtype)
        c0 = 0
        widest = max(w for _, _, w in self.parts)
        scratch = np.empty(max(1, self._scratch_rows(n) * widest), dtype=self.dtype)
        for i, (_, _, w) in enumerate(self.parts):
            if n and w:
                out[:, c0:c0 + w] = self._read_part(i, r0, r0 + n, scratch)
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
        widest = max(w for _, _, w in self.parts)
        scratch = pooled_empty(max(1, self._scratch_rows(n) * widest), self.dtype)
        c0 = 0
        for i, (_, _, w) in enumerate(self.parts):
            here = np.flatnonzero((cols >= c0) & (cols < c0 + w))
            if n and len(here):
                take_columns(self._read_part(i, r0, r1, scratch), cols[here] - c0, here, out)
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
