"""Convert a Cell Types count matrix (either orientation) into an AnnData Zarr store.

Layouts are recognised by content (:func:`find_source`):

* **portal** - ``matrix.csv`` (cells × genes, first header cell ``sample_name``) with
  ``metadata.csv`` next to it. Rows stream straight from the file through the numba count
  parser (:mod:`atlas_engine.convert.countparse`) into CSR rows appended to ``X``; memory is
  one block of rows whatever the file size. A checkpoint after every block (rows, byte offset)
  makes an interrupted run resume where it stopped.
* **zip2018** - a zip holding ``*_exon-matrix.csv`` and ``*_intron-matrix.csv`` (genes × cells,
  R quoting), ``*_genes-rows.csv`` and ``*_samples-columns.csv``; converted by
  :mod:`.convert_zip` (an out-of-core transpose, resumable).

The store (written under ``STORE.partial`` and renamed when complete, see :mod:`.assembly`)
holds cells × genes int32 CSR counts in ``X``, ``obs`` from the metadata (:mod:`.metadata`),
``var`` from the genes, and ``uns["conversion"]`` with provenance and the cells / metadata
mismatch report.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from .. import __version__
from ..atomic import atomic_write_bytes
from ..convert.countparse import CountBlock, iter_count_blocks
from ..convert.zipstream import MemberSource
from ..errors import ConfigError, FormatError
from ..ziputil import open_checked_zip
from . import metadata as md
from .assembly import _publish, _source_key, _staging, _write_annotations, read_header
from .convert_zip import _convert_zip
from .writer import CsrWriter

#: Rows parsed and appended per block (portal matrices).
BLOCK_ROWS = 1024


@dataclass
class CellTypeSource:
    """What :func:`find_source` found: the layout and its files."""

    layout: str                      # "portal" or "zip2018"
    matrix: MemberSource             # portal matrix.csv, or the exon matrix
    metadata: MemberSource | None = None
    intron: MemberSource | None = None
    genes: MemberSource | None = None
    extras: dict[str, Path] = field(default_factory=dict)


def find_source(src: str | Path) -> CellTypeSource:
    """Recognise a fetched data set by its content (a directory, a zip, or a matrix.csv)."""
    path = Path(src)
    if path.is_file() and zipfile.is_zipfile(path):
        return _zip_source(path)
    if path.is_file():
        return _portal_source(path)
    if not path.is_dir():
        raise ConfigError(f"{src}: no such file or directory")
    zips = [p for p in sorted(path.glob("*.zip")) if _is_2018_zip(p)]
    candidates = sorted(path.glob("matrix.csv")) + sorted(path.glob("*/matrix.csv"))
    if zips and candidates or len(zips) > 1 or len(candidates) > 1:
        found = [str(p) for p in zips + candidates]
        raise ConfigError(f"{src}: several cell-types matrices ({', '.join(found)}); "
                          "point convert at one of them")
    if zips:
        return _zip_source(zips[0])
    if candidates:
        return _portal_source(candidates[0])
    raise ConfigError(f"{src}: no cell-types matrix (expected matrix.csv or a zip holding "
                      "*_exon-matrix.csv)")


def looks_like_celltypes(src: str | Path) -> bool:
    """True when :func:`find_source` recognises a cell-types data set in ``src``."""
    try:
        find_source(src)
    except (ConfigError, FormatError):
        return False
    return True


def _is_2018_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("_exon-matrix.csv") for n in zf.namelist())
    except zipfile.BadZipFile:
        return False


def _zip_source(path: Path) -> CellTypeSource:
    with open_checked_zip(path) as zf:
        names = zf.namelist()
    def one(suffix: str) -> str:
        hits = [n for n in names if n.endswith(suffix)]
        if len(hits) != 1:
            raise FormatError(path, f"{len(hits)} members ending {suffix!r}",
                              expected=f"exactly one *{suffix} (members: {', '.join(names)})")
        return hits[0]
    return CellTypeSource("zip2018", MemberSource(path, one("_exon-matrix.csv")),
                          metadata=MemberSource(path, one("_samples-columns.csv")),
                          intron=MemberSource(path, one("_intron-matrix.csv")),
                          genes=MemberSource(path, one("_genes-rows.csv")))


def _portal_source(matrix: Path) -> CellTypeSource:
    meta = matrix.with_name("metadata.csv")
    extras = {n: matrix.with_name(n) for n in ("trimmed_means.csv", "medians.csv")
              if matrix.with_name(n).is_file()}
    return CellTypeSource("portal", MemberSource(matrix),
                          MemberSource(meta) if meta.is_file() else None, extras=extras)


# ------------------------------------------------------------------------------------------
# portal
# ------------------------------------------------------------------------------------------
def _convert_portal(source: CellTypeSource, store: Path, block_rows: int,
                    progress: object | None) -> dict[str, object]:
    src = source.matrix
    fields, header_len, _ = read_header(src)
    if not fields or fields[0] != "sample_name":
        raise FormatError(src.display, f"first header cell is {fields[0]!r}" if fields else
                          "empty header", line=1, column=1, expected="sample_name")
    genes = fields[1:]
    ncols = len(genes)
    staging, prog_path, names_path = _staging(store)
    key = _source_key(src)
    state = None
    if prog_path.is_file() and staging.is_dir():
        saved = json.loads(prog_path.read_text())
        if saved.get("source") == key and saved.get("ncols") == ncols:
            state = saved
    if state is None:
        shutil.rmtree(staging, ignore_errors=True)
        names_path.unlink(missing_ok=True)
        root = zarr.open_group(str(staging), mode="w", zarr_format=3)
        writer = CsrWriter(root, "X", ncols)
        state = {"source": key, "ncols": ncols, "rows": 0, "offset": 0}
        names_path.write_text("")
    else:
        root = zarr.open_group(str(staging), mode="r+", zarr_format=3)
        writer = CsrWriter(root, "X", ncols, create=False)
        writer.truncate(int(state["rows"]))
        with open(names_path, "rb") as fh:
            kept = b"".join(fh.readline() for _ in range(int(state["rows"])))
        names_path.write_bytes(kept)
    resumed_at = int(state["rows"])

    def chunks() -> Iterator[bytes]:
        with open(src.archive, "rb") as fh:
            fh.seek(header_len + int(state["offset"]))
            while piece := fh.read(4 << 20):
                yield piece

    blocks = iter_count_blocks(chunks(), ncols, block_rows, name=src.display,
                               first_line=2 + int(state["rows"]), start_row=int(state["rows"]),
                               start_offset=int(state["offset"]))
    with open(names_path, "a", encoding="utf-8") as names_out, ahead(blocks) as parsed:
        for blk in parsed:
            if any("\n" in n for n in blk.names):
                raise FormatError(src.display, "newline in a cell name",
                                  line=2 + blk.start, column=1)
            writer.append(blk.indptr, blk.indices, blk.data)
            names_out.write("".join(n + "\n" for n in blk.names))
            names_out.flush()
            state["rows"] = blk.start + blk.n_rows
            state["offset"] = blk.end_offset
            atomic_write_bytes(prog_path, json.dumps(state).encode())
            if progress is not None:
                progress(state["rows"])
    cells = pd.Index(names_path.read_text(encoding="utf-8").splitlines(), name="sample_name")
    _check_unique(cells, src.display)
    uns: dict[str, object] = {}
    if source.metadata is not None:
        meta = pd.read_csv(io.BytesIO(source.metadata.read_bytes()), dtype=str,
                           keep_default_na=False)
        obs_all, uns = md.portal_obs(meta, source.metadata.display)
        obs, report = md.align_obs(cells, obs_all)
    else:
        obs = pd.DataFrame(index=cells)
        report = {"cells": len(cells), "metadata": "absent"}
    var = pd.DataFrame({"gene_symbol": np.asarray(genes, dtype=object)},
                       index=pd.Index(genes, name="gene"))
    report.update(layout="portal", source=src.display, resumed_at_row=resumed_at,
                  nnz=writer.nnz, genes=ncols, converter=f"atlas-engine {__version__}")
    uns["conversion"] = md.string_mapping(report)
    _write_annotations(root, obs, var, uns)
    _publish(staging, store, prog_path, names_path)
    return report


@contextlib.contextmanager
def ahead(items: Iterator[CountBlock], depth: int = 2) -> Iterator[Iterator[CountBlock]]:
    """Run ``items`` (the parser) in a thread, up to ``depth`` blocks ahead of the consumer, so
    parsing (numba, no GIL) overlaps writing (compression, no GIL); leaving the ``with`` block
    stops the thread (:func:`atlas_engine.convert.stream.prefetch`)."""
    from ..convert.stream import prefetch

    blocks = prefetch(items, depth, name="celltypes-parse")
    try:
        yield blocks
    finally:
        blocks.close()


def _check_unique(cells: pd.Index, name: str) -> None:
    dup = cells.duplicated()
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        raise FormatError(name, f"cell {cells[pos]!r} appears twice", line=pos + 2, column=1,
                          expected="one row per cell")


def convert_celltypes(src: str | Path, store: str | Path, *, block_rows: int = BLOCK_ROWS,
                      overwrite: bool = False, progress: object | None = None
                      ) -> dict[str, object]:
    """Convert one Cell Types data set to an AnnData Zarr store.

    Parameters
    ----------
    src : path
        A fetched data set: a directory holding ``matrix.csv`` + ``metadata.csv`` (or a
        ``{bucket_prefix}/`` folder with them), a 2018 zip, or a path to either.
    store : path
        The output store (``.zarr``); it appears only when complete.
    block_rows : int
        Matrix rows parsed per block (bounds memory: one block of CSR rows).
    overwrite : bool
        Replace an existing complete store (otherwise it is left alone and reported).
    progress : callable, optional
        Called with the number of cells written after each portal block or zip2018 cell band.

    Returns
    -------
    dict
        The conversion report (cells, genes, stored counts, cells without metadata, metadata
        rows without cells, ...), also stored in ``uns["conversion"]``.
    """
    t0 = time.perf_counter()
    out = Path(store)
    if out.exists():
        if not overwrite:
            return {"status": "exists", "store": str(out)}
        shutil.rmtree(out)
    source = find_source(src)
    if source.layout == "portal":
        report = _convert_portal(source, out, block_rows, progress)
    else:
        report = _convert_zip(source, out, block_rows, progress)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    report["status"] = "converted"
    report["store"] = str(out)
    return report
