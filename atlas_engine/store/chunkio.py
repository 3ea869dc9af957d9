"""Reading and decoding one chunk file of a store array, for the direct reader of
:mod:`~atlas_engine.store.blockread`.

A chunk file is mapped read-only (a local store; read into a reused per-thread buffer where
mapping is not available) or fetched whole through fsspec (a remote one), its CRC-32C
checked (:func:`~atlas_engine.store.integrity.check_chunk`) and decoded (Blosc or raw bytes)
into the caller's array or a per-thread buffer, following the plan of
:mod:`~atlas_engine.store.chunkplan`. An unreadable or undecodable chunk, or an absent
one of an array with a checksum, raises :class:`~atlas_engine.errors.DamagedStoreError`; an
absent one of an array without a checksum gives None (the caller fills).
"""

from __future__ import annotations

import mmap
import os
import threading
from typing import Any

import numpy as np

from .access import access_error, access_problem
from .integrity import check_chunk, damaged, missing

_SCRATCH = threading.local()


def _scratch(name: str, nbytes: int) -> np.ndarray:
    """A byte buffer of this thread, reused between calls (grown when too small): repeated
    block reads then touch the same pages instead of faulting in fresh ones each time."""
    buf = getattr(_SCRATCH, name, None)
    if buf is None or buf.nbytes < nbytes:
        buf = np.empty(nbytes, dtype=np.uint8)
        setattr(_SCRATCH, name, buf)
    return buf[:nbytes]


def _read_chunk(i: int, j: int | None, plan: dict[str, Any], dest: np.ndarray | None = None
                ) -> np.ndarray | None:
    """The decoded chunk ``(i, j)`` (``(i,)`` of a 1-D array: ``j`` None) as a
    ``chunks``-shaped view of ``dest`` (C-contiguous, one chunk's bytes) or of a per-thread
    buffer (valid until this thread's next read).

    Arrays with the ``crc32c`` codec: the checksum is verified and an absent file raises
    :class:`~atlas_engine.errors.DamagedStoreError`; other arrays give None for an absent
    file (the caller fills)."""
    if plan["fs"] is None and _MAP_FLAGS is not None:
        return _read_mapped_chunk(i, j, plan, dest)
    raw = _chunk_file(i, j, plan)
    return None if raw is None else _decode_chunk(raw, i, j, plan, dest)


#: a local chunk file is mapped read-only and populated in one call where the platform
#: allows it (None: read into a buffer instead)
_MAP_FLAGS = (mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)) if os.name == "posix" \
    else None


def _read_mapped_chunk(i: int, j: int | None, plan: dict[str, Any], dest: np.ndarray | None
                       ) -> np.ndarray | None:
    """:func:`_read_chunk` of a local store with the file mapped instead of read: the
    checksum and the decoder read the page cache directly, without a copy of the file's
    bytes into the process and without the per-thread read buffer (whole commands, six
    alternated rounds: the cold atlas pipeline 8.11 against 8.27 CPU-s, peak RSS 470 against
    484 MiB; wall time within the spread; benchmarks/RESULTS.md). Chunk files are published
    whole by renaming and never rewritten in place, so a mapping never sees its file
    shrink."""
    fh = _open_chunk(i, j, plan)
    if fh is None:
        return None
    # a file that cannot be mapped (empty: ValueError; a file system refusing it: OSError)
    # is read from the same handle into the buffer instead, where an empty one is refused
    # by the decoder
    with fh:
        try:
            mapped = mmap.mmap(fh.fileno(), 0, flags=_MAP_FLAGS, prot=mmap.PROT_READ)
        except (OSError, ValueError):
            return _decode_chunk(_read_whole(fh, i, j, plan), i, j, plan, dest)
    if dest is None:                    # the result never points into the mapping
        dest = _scratch("chunk", int(np.prod(plan["chunks"])) * plan["dtype"].itemsize)
    raw = np.frombuffer(mapped, dtype=np.uint8)
    try:
        return _decode_chunk(raw, i, j, plan, dest)
    finally:
        del raw
        try:
            mapped.close()
        except BufferError:             # still viewed by an error's traceback: closed by GC
            pass


def _local_name(i: int, j: int | None, plan: dict[str, Any]) -> str:
    return (os.path.join(plan["dir"], str(i)) if j is None
            else os.path.join(plan["dir"], str(i), str(j)))


def _open_chunk(i: int, j: int | None, plan: dict[str, Any]) -> Any:
    """Chunk file ``(i, j)`` of a local store opened for reading (unbuffered); None when it is
    absent and the array has no checksum; absent with one, or unopenable, raises
    :class:`~atlas_engine.errors.DamagedStoreError`."""
    try:
        return open(_local_name(i, j, plan), "rb", buffering=0)
    except FileNotFoundError:
        if plan["crc"]:
            raise missing(plan["url"], plan["path"], _coords(i, j)) from None
        return None
    except OSError as exc:
        raise damaged(plan["url"], plan["path"], _coords(i, j),
                      f"cannot be read ({exc})") from None


def _chunk_file(i: int, j: int | None, plan: dict[str, Any]) -> np.ndarray | None:
    """The bytes of chunk file ``(i, j)`` (``(i,)`` of a 1-D array): a per-thread buffer
    (valid until this thread's next read) for a local store, fetched whole from a remote
    one. None when it is absent and the array has no checksum (the caller fills); absent
    with one, or unreadable, raises :class:`~atlas_engine.errors.DamagedStoreError`."""
    if plan["fs"] is not None:
        return _fetch_chunk(i, j, plan)
    fh = _open_chunk(i, j, plan)
    if fh is None:
        return None
    with fh:
        return _read_whole(fh, i, j, plan)


def _read_whole(fh: Any, i: int, j: int | None, plan: dict[str, Any]) -> np.ndarray:
    """The whole of the open chunk file ``fh`` in this thread's read buffer (valid until its
    next read); a failed read raises :class:`~atlas_engine.errors.DamagedStoreError`."""
    try:
        size = os.fstat(fh.fileno()).st_size
        raw = _scratch("raw", size)
        got = fh.readinto(raw)
        while got < size:       # readinto may return short counts
            n = fh.readinto(raw[got:])
            if not n:
                raise OSError(f"{fh.name}: truncated read")
            got += n
    except OSError as exc:
        raise damaged(plan["url"], plan["path"], _coords(i, j),
                      f"cannot be read ({exc})") from None
    return raw


def _coords(i: int, j: int | None) -> tuple[int, ...]:
    return (i,) if j is None else (i, j)


def _fetch_chunk(i: int, j: int | None, plan: dict[str, Any]) -> np.ndarray | None:
    """Chunk file ``(i, j)`` of a remote store, whole, as read-only bytes (None: absent and
    the array has no checksum)."""
    key = "/".join(map(str, _coords(i, j)))
    try:
        data = plan["fs"].cat_file(f"{plan['dir']}/{key}")
    except FileNotFoundError:
        if plan["crc"]:
            raise missing(plan["url"], plan["path"], _coords(i, j)) from None
        return None
    except Exception as exc:
        if access_problem(exc):     # credentials, permission, network: not damage
            raise access_error(plan["url"], exc) from None
        if not isinstance(exc, OSError):
            raise
        raise damaged(plan["url"], plan["path"], _coords(i, j),
                      f"cannot be read ({exc})") from None
    return np.frombuffer(data, dtype=np.uint8)


def _decode_chunk(raw: np.ndarray, i: int, j: int | None, plan: dict[str, Any],
                  dest: np.ndarray | None) -> np.ndarray:
    """Check (CRC-32C) and decode the bytes of chunk file ``(i, j)`` (see :func:`_read_chunk`)."""
    where = _coords(i, j)
    if plan["crc"]:
        raw = raw[:check_chunk(raw, plan["url"], plan["path"], where)]
    nbytes = int(np.prod(plan["chunks"])) * plan["dtype"].itemsize
    if dest is not None:
        dest = dest.reshape(-1).view(np.uint8)
    if plan["blosc"]:
        from numcodecs import blosc as nb

        dest = _scratch("chunk", nbytes) if dest is None else dest
        try:
            if raw.nbytes < 16:
                raise ValueError("shorter than a Blosc header")
            size = int(raw[4:8].view("<u4")[0])     # the Blosc header's uncompressed size
            if size != nbytes:
                raise ValueError(f"its header says {size} bytes, not {nbytes}")
            # and its compressed size: a truncated or padded file is refused before the
            # decoder reads past its end (arrays without a checksum have no other guard)
            cbytes = int(raw[12:16].view("<u4")[0])
            if cbytes != raw.nbytes:
                raise ValueError(f"its header says {cbytes} compressed bytes, the file "
                                 f"holds {raw.nbytes}")
            nb.decompress(raw, dest)
        except (RuntimeError, ValueError) as exc:
            raise damaged(plan["url"], plan["path"], where,
                          f"cannot be decoded ({exc})") from None
    elif raw.nbytes != nbytes:
        raise damaged(plan["url"], plan["path"], where,
                      f"holds {raw.nbytes} bytes, not {nbytes}")
    elif dest is not None:
        dest[:nbytes] = raw[:nbytes]
    else:
        dest = raw
    return dest[:nbytes].view(plan["dtype"]).reshape(plan["chunks"])
