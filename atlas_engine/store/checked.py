"""A zarr store wrapper that checks every chunk it reads (see :mod:`.integrity`)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from .integrity import _CHUNK_KEY, check_chunk, damaged, has_checksum, missing


class CheckedStore(WrapperStore):
    """Wraps a zarr store: a chunk of an array whose codecs end with ``crc32c`` must exist and
    its checksum must match, else :class:`~atlas_engine.errors.DamagedStoreError` naming the
    store (``label``), the array, the chunk and the donor. Metadata and arrays without the
    codec pass through unchanged."""

    def __init__(self, store: Any, label: str | None = None) -> None:
        super().__init__(store)
        self.label = label if label is not None else str(store)
        self._checked: dict[str, bool] = {}

    def _with_store(self, store: Any) -> CheckedStore:
        return type(self)(store, self.label)

    def __reduce__(self) -> Any:
        return (type(self), (self._store, self.label))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CheckedStore) and other._store == self._store

    def __hash__(self) -> int:
        return hash((type(self), self.label))

    async def _array_checked(self, path: str) -> bool:
        got = self._checked.get(path)
        if got is None:
            key = f"{path}/zarr.json" if path else "zarr.json"
            buf = await self._store.get(key, default_buffer_prototype())
            try:
                meta = json.loads(buf.to_bytes()) if buf is not None else {}
            except ValueError:
                meta = {}
            got = self._checked[path] = has_checksum(meta if isinstance(meta, dict) else {})
        return got

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        m = _CHUNK_KEY.match(key)
        if m is None:
            return await self._store.get(key, prototype, byte_range)
        path = m.group(1) or ""
        if not await self._array_checked(path):
            return await self._store.get(key, prototype, byte_range)
        chunk = tuple(int(x) for x in m.group(2).split("/"))
        try:
            buf = await self._store.get(key, prototype, byte_range)
        except OSError as exc:
            raise damaged(self.label, path, chunk, f"cannot be read ({exc})") from None
        if buf is None:
            raise missing(self.label, path, chunk)
        if byte_range is None:
            check_chunk(np.asarray(buf.as_numpy_array()), self.label, path, chunk)
        return buf


def checked_store(url: str | os.PathLike) -> CheckedStore:
    """A read-only zarr store for ``url`` (a path, ``file://`` or an fsspec URL) whose chunk
    reads are checked."""
    text = os.fspath(url)
    path = text[len("file://"):] if text.startswith("file://") else text
    inner = (LocalStore(path, read_only=True) if "://" not in path
             else FsspecStore.from_url(path, read_only=True))
    return CheckedStore(inner, text)
