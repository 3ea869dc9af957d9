"""Zarr v3 writing: the store root and its metadata, matrices, checksums.

Local stores (a path or ``file://`` URL):

* one writer at a time: :func:`~.store_lock.store_lock` holds an advisory ``flock`` on
  ``STORE/.lock`` for the whole conversion (:mod:`.store_lock`);
* each group is staged under ``STORE/.staging/`` and published with a directory rename, so
  readers never see half a group (:mod:`.staging`);
* the root ``zarr.json`` (the attributes listing the donors *and* the consolidated metadata
  readers open) is replaced in one atomic rename by :func:`write_root`, so no donor is ever
  listed without its metadata.

Other fsspec stores write in place and set the group attribute ``complete`` last; readers list
only donors named in the root attributes, which are updated after a donor is complete.

Every array ends its codec chain with zarr v3's ``crc32c`` codec and every chunk is written
(``write_empty_chunks``), so readers can refuse a damaged or missing chunk
(:mod:`atlas_engine.store.integrity`).

The store locations (:mod:`.location`), the lock (:mod:`.store_lock`) and the staged groups
(:mod:`.staging`) have modules of their own.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from isal import isal_zlib
from numcodecs import Blosc
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from ..atomic import atomic_write_bytes
from ..store.integrity import crc32c
from ..store.layout import ROOT_ATTR
from ..store.location import local_path
from .tablegroup import Column, write_table_group

#: float matrices: Blosc LZ4 with byte shuffle (measured on expression chunks: ~3× faster to
#: write and ~7× faster to read than zstd level 1, and a better ratio, 1.30 vs 1.16)
#: — then the CRC-32C of the encoded chunk, checked by every reader
COMPRESSORS = (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec())
#: boolean matrices (PACall): bit shuffle packs the 0/1 bytes before LZ4
BOOL_COMPRESSORS = (BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=1),
                    Crc32cCodec())
#: the small 1-D tables (probe, sample, ontology, gene columns): zarr's default Zstd + CRC-32C
TABLE_COMPRESSORS = (ZstdCodec(level=0), Crc32cCodec())
#: serialises root metadata writes of the threads of one process
ROOT_LOCK = threading.RLock()


def open_root(url: str | os.PathLike, mode: str = "a") -> zarr.Group:
    """The root group of a store (created if needed). A local root whose ``zarr.json`` is
    damaged (not JSON) is set aside as ``zarr.json.damaged`` and started afresh: conversion
    rebuilds the listing from the groups on disk (call it holding :func:`store_lock`)."""
    path = local_path(url)
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        meta = path / "zarr.json"
        if mode != "r" and meta.exists():
            try:
                json.loads(meta.read_bytes())
            except ValueError:
                os.replace(meta, path / "zarr.json.damaged")
        return zarr.open_group(str(path), mode=mode, zarr_format=3)
    return zarr.open_group(os.fspath(url), mode=mode, zarr_format=3)


def root_info(root: zarr.Group) -> dict[str, Any]:
    return dict(root.attrs.get(ROOT_ATTR, {}))


def set_root_info(root: zarr.Group, info: dict[str, Any]) -> None:
    root.attrs[ROOT_ATTR] = info


def consolidate(url: str | os.PathLike) -> None:
    """Rewrite the root's consolidated metadata (xarray reads it; warnings are zarr's notice that
    consolidation is not yet in the v3 spec)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = local_path(url)
        zarr.consolidate_metadata(str(path) if path is not None else os.fspath(url))


def _volatile(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` without its time stamps (compared to decide whether the root must change)."""
    out = {k: v for k, v in info.items() if k not in ("updated_at", "converted_at")}
    if isinstance(out.get("rnaseq"), dict):
        out["rnaseq"] = _volatile(out["rnaseq"])
    return out


def write_root(url: str | os.PathLike, update: Callable[[dict[str, Any]], dict[str, Any]]
               ) -> bool:
    """Set the root ``atlas_engine`` attributes to ``update(current)`` and the consolidated
    metadata to the store's current tree, in one step; returns whether anything changed.

    On a local store the new root ``zarr.json`` is written to a temporary file, flushed and
    renamed over the old one: a reader (or a crash) sees the old root or the new one, never
    donors listed without their metadata. Nothing is written when neither the attributes (time
    stamps aside) nor the tree changed, so a re-run over a finished store leaves it untouched.
    Other stores: attributes then ``zarr.consolidate_metadata`` (not atomic).
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.group import ConsolidatedMetadata, GroupMetadata

    path = local_path(url)
    with ROOT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = zarr.open_group(str(path) if path is not None else os.fspath(url), mode="a",
                               zarr_format=3, use_consolidated=False)
        cur = dict(root.attrs.get(ROOT_ATTR, {}))
        new = update(dict(cur))
        if path is None:
            root.attrs[ROOT_ATTR] = new
            consolidate(url)
            return True
        members = _tree_metadata(path)
        for k, v in members.items():
            if isinstance(v, GroupMetadata) and v.consolidated_metadata is None:
                members[k] = dataclasses.replace(
                    v, consolidated_metadata=ConsolidatedMetadata(metadata={}))
        ConsolidatedMetadata._flat_to_nested(members)
        attrs = dict(root.attrs.asdict())
        attrs[ROOT_ATTR] = new
        meta = dataclasses.replace(root.metadata, attributes=attrs,
                                   consolidated_metadata=ConsolidatedMetadata(metadata=members))
        data = meta.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
        target = path / "zarr.json"
        try:
            old = json.loads(target.read_bytes())
            old_meta = old.get("consolidated_metadata")
            if _volatile(cur) == _volatile(new) and \
                    old_meta == json.loads(data).get("consolidated_metadata"):
                return False
        except (OSError, ValueError):
            pass
        atomic_write_bytes(target, data, fsync=True)
        return True


def _tree_metadata(root: Path) -> dict[str, Any]:
    """Path → zarr metadata of every node under the local store ``root`` (breadth first, as
    zarr lists them). A node whose ``zarr.json`` is damaged is left out with everything below
    it (it is not listed, so readers never reach it; conversion rewrites it), as are hidden
    folders (``.staging``) and ``cache/``."""
    from zarr.core.group import GroupMetadata

    out: dict[str, Any] = {}
    level = [root]
    while level:
        nxt = []
        for folder in level:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir())
            except OSError:
                continue
            for child in children:
                if child.name.startswith(".") or (folder == root and child.name == "cache"):
                    continue
                try:
                    raw = (child / "zarr.json").read_bytes()
                    doc = json.loads(raw)
                    kind = doc.get("node_type")
                    meta = (_array_metadata(raw) if kind == "array" else
                            GroupMetadata.from_dict(dict(doc)) if kind == "group" else None)
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    continue
                if meta is None:
                    continue
                out[child.relative_to(root).as_posix()] = meta
                if kind == "group":
                    nxt.append(child)
        level = nxt
    return out


@functools.lru_cache(maxsize=1024)
def _array_metadata(raw: bytes) -> Any:
    """An array's parsed ``zarr.json`` (frozen, so shared): each publication of the root
    re-reads the whole tree, and the arrays of groups already published have not changed."""
    from zarr.core.metadata import ArrayV3Metadata

    return ArrayV3Metadata.from_dict(dict(json.loads(raw)))


def write_dataset(url: str, coords: Mapping[str, Column],
                  data_vars: Mapping[str, Column] | None = None, mode: str = "w") -> None:
    """Write small 1-D tables (``name → (dimension, values)``) as a zarr v3 group at ``url``
    laid out as xarray writes ``xarray.Dataset(data_vars, coords=coords)``
    (:mod:`.tablegroup`): every chunk written and checksummed. ``mode="w"`` replaces the
    group; ``"a"`` adds the columns to an existing group and leaves its other arrays alone."""
    write_table_group(url, coords, data_vars, compressors=TABLE_COMPRESSORS, mode=mode)


def new_group(url: str) -> zarr.Group:
    """An empty zarr v3 group at ``url``, replacing whatever was there (arrays and
    attributes: a group rewritten in place never keeps an old completion marker)."""
    return zarr.open_group(url, mode="w", zarr_format=3)


def create_matrix(url: str, name: str, shape: tuple[int, int], chunks: tuple[int, int],
                  dtype: Any, dims: tuple[str, str], attrs: dict | None = None) -> zarr.Array:
    group = zarr.open_group(url, mode="a", zarr_format=3)
    fill = np.nan if np.dtype(dtype).kind == "f" else False
    arr = group.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                             dimension_names=dims, fill_value=fill,
                             compressors=COMPRESSORS if np.dtype(dtype).kind == "f"
                             else BOOL_COMPRESSORS,
                             config={"write_empty_chunks": True}, overwrite=True)
    if attrs:
        arr.attrs.update(attrs)
    return arr


class BlockWriter:
    """Writes blocks one probe-chunk high into a 2-D matrix made by :func:`create_matrix`.

    On a local store each chunk is encoded here (Blosc, the array's own codec settings, GIL
    released) and written as a file at the array's chunk key, in the calling thread; this skips
    zarr's event loop, which costs more CPU than the compression itself for these writes. Any
    other store, or an array whose codecs are not the expected ``bytes`` + ``blosc`` +
    ``crc32c`` chain, goes through ``arr[rows] = block``.
    """

    def __init__(self, arr: zarr.Array) -> None:
        self.arr = arr
        self.chunks = arr.chunks
        self.root: Path | None = None
        self.codec = None
        store = arr.store
        codecs = arr.metadata.codecs
        if isinstance(store, zarr.storage.LocalStore) and len(codecs) == 3 \
                and type(codecs[0]).__name__ == "BytesCodec" and isinstance(codecs[1], BloscCodec) \
                and isinstance(codecs[2], Crc32cCodec):
            cfg = codecs[1].to_dict()["configuration"]
            shuffle = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE,
                       "bitshuffle": Blosc.BITSHUFFLE}[cfg["shuffle"]]
            self.codec = Blosc(cname=cfg["cname"], clevel=cfg["clevel"], shuffle=shuffle,
                               blocksize=cfg["blocksize"])
            self.root = Path(store.root) / arr.path
            self.fill = arr.metadata.fill_value

    def write(self, r0: int, block: np.ndarray) -> list[int]:
        """Write ``block`` as matrix rows ``r0 ..``; ``r0`` is a multiple of the chunk height and
        the block is a full chunk high (or reaches the last row). Returns the CRC-32 of each
        chunk's C-order bytes (as :func:`chunk_crcs`)."""
        if self.root is None:
            self.arr[r0:r0 + block.shape[0], :] = block
            return chunk_crcs(block, self.chunks[1])
        pc, sc = self.chunks
        i = r0 // pc
        dtype = np.dtype(self.arr.dtype).newbyteorder("<")
        crcs = []
        made = None
        for j, j0 in enumerate(range(0, block.shape[1], sc)):
            piece = np.ascontiguousarray(block[:, j0:j0 + sc], dtype=dtype)
            crcs.append(isal_zlib.crc32(piece.view(np.uint8).reshape(-1)) & 0xFFFFFFFF)
            if piece.shape != (pc, sc):     # edge chunks are stored full size, fill-padded
                full = np.full((pc, sc), self.fill, dtype)
                full[:piece.shape[0], :piece.shape[1]] = piece
                piece = full
            path = self.root / self.arr.metadata.encode_chunk_key((i, j))
            if path.parent != made:     # the chunks of a block share their folder (c/i)
                path.parent.mkdir(parents=True, exist_ok=True)
                made = path.parent
            encoded = self.codec.encode(piece)
            with open(path, "wb") as fh:
                fh.write(encoded)
                fh.write(crc32c(encoded).to_bytes(4, "little"))
        return crcs


def chunk_crcs(block: np.ndarray, sample_chunk: int) -> list[int]:
    """CRC-32 of each chunk of a block one probe-chunk high (C-order bytes of each piece)."""
    out = []
    for j0 in range(0, block.shape[1], sample_chunk):
        piece = np.ascontiguousarray(block[:, j0:j0 + sample_chunk])
        out.append(isal_zlib.crc32(piece.view(np.uint8).reshape(-1)) & 0xFFFFFFFF)
    return out


def group_whole(g: zarr.Group, arrays: tuple[str, ...] | list[str]) -> bool:
    """Every one of ``arrays`` is in the group ``g`` (its metadata at least)."""
    try:
        have = set(g.array_keys())
    except (OSError, ValueError, KeyError):
        return False
    return all(a in have for a in arrays)


def complete_groups(store_url: str, parent: str, arrays: tuple[str, ...] | list[str]
                    ) -> dict[int, dict[str, Any]]:
    """Donor id → recorded ``donor`` attributes of every complete, whole group under
    ``parent`` (``donors`` or ``rnaseq``): a group named by a number whose attributes say
    ``complete`` and which holds every one of ``arrays``.

    Each group is judged on its own ``zarr.json`` documents, read directly (a local store's
    files, another store's objects through fsspec): a damaged or partial group is left out
    and hides no other (zarr's listing fails as a whole on one damaged group ``zarr.json``),
    and a folder that is no group is passed over. Reading them directly also keeps the
    root's publication, done after every donor, cheap (zarr's listing of each group's
    arrays took ~0.06 s a time).
    An error reading the store other than a missing document is raised."""
    nodes = _Nodes(store_url)
    if nodes.doc(parent, "group") is None:
        return {}
    out = {}
    for name in sorted((n for n in nodes.children(parent) if n.isdigit()), key=int):
        doc = nodes.doc(f"{parent}/{name}", "group")
        attrs = (doc or {}).get("attributes") or {}
        if not (isinstance(attrs, dict) and attrs.get("complete")):
            continue
        if all(nodes.doc(f"{parent}/{name}/{a}", "array") is not None for a in arrays):
            out[int(name)] = dict(attrs.get("donor") or {"donor_id": int(name)})
    return out


class _Nodes:
    """The ``zarr.json`` documents and child names of a store's nodes, read directly: the
    files of a local store, the objects of any other through fsspec (listings refreshed)."""

    def __init__(self, store_url: str) -> None:
        self.path = local_path(store_url)
        if self.path is None:
            import fsspec

            self.fs, root = fsspec.core.url_to_fs(os.fspath(store_url))
            self.root = root.rstrip("/")

    def doc(self, rel: str, kind: str) -> dict[str, Any] | None:
        """The document of the zarr v3 node ``rel`` if it is one of type ``kind``, else
        ``None`` (missing, not JSON, another type or format)."""
        try:
            if self.path is not None:
                raw = (self.path / rel / "zarr.json").read_bytes()
            else:
                raw = self.fs.cat_file(f"{self.root}/{rel}/zarr.json")
            doc = json.loads(raw)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("zarr_format") != 3 or doc.get("node_type") != kind:
            return None
        return doc

    def children(self, rel: str) -> list[str]:
        """The names of the entries under ``rel`` (folders, or object prefixes)."""
        try:
            if self.path is not None:
                return [p.name for p in (self.path / rel).iterdir() if p.is_dir()]
            where = f"{self.root}/{rel}"
            self.fs.invalidate_cache(where)
            return [n.rstrip("/").rsplit("/", 1)[-1] for n in self.fs.ls(where, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
