"""Integrity on read: every chunk of a store array carries a CRC-32C, checked when it is read.

Arrays written by ``atlas-engine convert`` (store layout 2 and later) end their codec chain with
zarr v3's ``crc32c`` codec: each chunk file is the encoded chunk followed by the CRC-32C of those
bytes (4 bytes, little-endian). Every chunk of every array is written, so a chunk file that is
absent is damage too (zarr alone would read it back as the fill value, e.g. NaN).

Two read paths check it:

* the direct readers :mod:`atlas_engine.store.chunkio` and ``blockread`` call :func:`check_chunk`;
* everything read through zarr or xarray goes through
  :class:`~atlas_engine.store.checked.CheckedStore`, a zarr store wrapper that checks each
  chunk it hands out (and refuses an absent one) before zarr decodes it.

Either way a damaged or missing chunk raises :class:`~atlas_engine.errors.DamagedStoreError`
naming the store, the array, the chunk and the donor, with the command that repairs it.
"""

from __future__ import annotations

import re
from typing import Any

import google_crc32c
import numpy as np

from ..errors import DamagedStoreError
from . import layout as L

#: name of the checksum codec in an array's ``zarr.json``
CRC_CODEC = "crc32c"
_CHUNK_KEY = re.compile(r"^(?:(.*)/)?c/(\d+(?:/\d+)*)$")


def crc32c(data: Any) -> int:
    """CRC-32C of ``bytes`` or a contiguous numpy array's bytes (hardware-accelerated,
    ~13 GB/s)."""
    if isinstance(data, np.ndarray):
        view = data.reshape(-1).view(np.uint8)
        view.flags.writeable = False   # google_crc32c takes read-only buffers only
        data = view
    return int(google_crc32c.value(data))


def owner(path: str) -> str:
    """What an array belongs to, for messages: ``donor 9861``, ``RNA-seq donor 9861``, ``the
    probe table``, ``the ontology`` or ``BrainSpan``."""
    parts = path.strip("/").split("/")
    if parts[0] == L.DONORS_GROUP and len(parts) > 1:
        return f"donor {parts[1]}"
    if parts[0] == L.RNASEQ_GROUP and len(parts) > 1:
        return f"RNA-seq donor {parts[1]}"
    if parts[0] == L.PROBES_GROUP:
        return "the probe table"
    if parts[0] == L.ONTOLOGY_GROUP:
        return "the ontology table"
    return parts[0]


def repair_hint(store: str, path: str) -> str:
    """The command that rewrites the part of the store ``path`` belongs to."""
    parts = path.strip("/").split("/")
    if parts[0] in (L.DONORS_GROUP, L.RNASEQ_GROUP) and len(parts) > 1:
        return (f"re-convert it: atlas-engine convert SRC {store} --donors {parts[1]} --force")
    return f"re-convert the store: atlas-engine convert SRC {store} --force"


def damaged(store: str, path: str, chunk: tuple[int, ...] | str, why: str) -> DamagedStoreError:
    """The error for chunk ``chunk`` of the array ``path`` in ``store``."""
    where = chunk if isinstance(chunk, str) else "(" + ", ".join(map(str, chunk)) + ")"
    return DamagedStoreError(f"{store}: array {path}, chunk {where} ({owner(path)}): {why}; "
                             f"{repair_hint(store, path)}")


def check_chunk(raw: Any, store: str, path: str, chunk: tuple[int, ...]) -> int:
    """Check the trailing CRC-32C of the chunk file bytes ``raw`` (a numpy uint8 array or
    bytes); returns the length of the payload before it. Raises
    :class:`DamagedStoreError` on a mismatch or a file too short to hold a checksum."""
    n = len(raw)
    if n < 4:
        raise damaged(store, path, chunk, f"chunk file has {n} bytes, too short")
    body = raw[:n - 4]
    stored = int.from_bytes(bytes(raw[n - 4:n]), "little")
    if crc32c(body) != stored:
        raise damaged(store, path, chunk, "checksum mismatch (the chunk file is damaged)")
    return n - 4


def missing(store: str, path: str, chunk: tuple[int, ...]) -> DamagedStoreError:
    return damaged(store, path, chunk, "chunk file is missing")


def has_checksum(meta: dict[str, Any]) -> bool:
    """True when an array's ``zarr.json`` ends its codec chain with the CRC-32C codec."""
    codecs = meta.get("codecs") or []
    return bool(codecs) and isinstance(codecs[-1], dict) and codecs[-1].get("name") == CRC_CODEC
