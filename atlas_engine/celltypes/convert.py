"""Convert a Cell Types count matrix (either orientation) into an AnnData Zarr store.

Layouts are recognised by content (:func:`find_source`):

* **portal** - ``matrix.csv`` (cells × genes, first header cell ``sample_name``) with
  ``metadata.csv`` next to it. Rows stream straight from the file through the numba count
  parser (:mod:`atlas_engine.convert.countparse`) into CSR rows appended to ``X``; memory is
  one block of rows whatever the file size. A checkpoint after every block (rows, byte offset)
  makes an interrupted run resume where it stopped.
* **zip2018** - a zip holding ``*_exon-matrix.csv`` and ``*_intron-matrix.csv`` (genes × cells,
  R quoting), ``*_genes-rows.csv`` and ``*_samples-columns.csv``. Each matrix streams out of its
  member in gene blocks that are spilled to disk; the store's cell rows are then assembled one
  cell band at a time (an out-of-core transpose). ``X`` holds exon + intron counts (Allen's
  "exons + introns"), ``layers/exon`` and ``layers/intron`` each part. A checkpoint after every
  spilled gene block and every assembled cell band makes an interrupted run resume from the
  last completed one.

The store (written under ``STORE.partial`` and renamed when complete) holds cells × genes int32
CSR counts in ``X``, ``obs`` from the metadata (:mod:`.metadata`), ``var`` from the genes, and
``uns["conversion"]`` with provenance and the cells / metadata mismatch report.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from scipy import sparse

from .. import __version__
from ..atomic import atomic_write_bytes
from ..convert.countparse import CountBlock, iter_count_blocks
from ..convert.zipstream import MemberSource
from ..errors import ConfigError, FormatError
from ..ziputil import open_checked_zip
from . import metadata as md
from .writer import CsrWriter

#: Rows parsed and appended per block (portal matrices).
BLOCK_ROWS = 1024
#: Stored counts per cell band when transposing a genes × cells matrix.
BAND_NNZ = 32 << 20


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
# header
# ------------------------------------------------------------------------------------------
def read_header(src: MemberSource, chunks: Iterator[bytes] | None = None
                ) -> tuple[list[str], int, bytes]:
    """The header fields (CSV-unquoted), the header's length in bytes and the bytes after it
    that were read with it."""
    it = chunks if chunks is not None else src.iter_chunks()
    buf = bytearray()
    for piece in it:
        buf += piece
        nl = buf.find(b"\n")
        if nl >= 0:
            line = bytes(buf[:nl]).rstrip(b"\r").decode("utf-8")
            fields = next(csv.reader([line]))
            return fields, nl + 1, bytes(buf[nl + 1:])
    raise FormatError(src.display, "no header line", line=1,
                      expected="a header row ending in a newline")


# ------------------------------------------------------------------------------------------
# store assembly
# ------------------------------------------------------------------------------------------
def _write_annotations(root: zarr.Group, obs: pd.DataFrame, var: pd.DataFrame,
                       uns: dict[str, object]) -> None:
    import anndata as ad
    from anndata.io import write_elem

    with ad.settings.override(allow_write_nullable_strings=True, zarr_write_format=3,
                              auto_shard_zarr_v3=False):
        write_elem(root, "obs", obs)
        write_elem(root, "var", var)
        write_elem(root, "uns", uns)
        for key in ("obsm", "varm", "obsp", "varp"):
            write_elem(root, key, {})
        if "layers" not in root:
            write_elem(root, "layers", {})
    root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})


def _staging(store: Path) -> tuple[Path, Path, Path]:
    return (store.with_name(store.name + ".partial"), store.with_name(store.name + ".progress.json"),
            store.with_name(store.name + ".cells.txt"))


def _source_key(src: MemberSource) -> dict[str, object]:
    st = Path(src.archive).stat()
    return {"file": str(Path(src.archive).resolve()), "member": src.member, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns}


def _publish(staging: Path, store: Path, *extra: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        # consolidated metadata is not in the Zarr v3 spec yet; anndata's readers use it
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(staging))
    os.replace(staging, store)
    for p in extra:
        p.unlink(missing_ok=True)


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


# ------------------------------------------------------------------------------------------
# zip2018 (genes × cells): spill gene blocks, assemble cell bands
# ------------------------------------------------------------------------------------------
def _skip(chunks: Iterator[bytes], n: int) -> Iterator[bytes]:
    """``chunks`` without their first ``n`` bytes."""
    for piece in chunks:
        if n >= len(piece):
            n -= len(piece)
            continue
        yield piece[n:] if n else piece
        n = 0


def _check_sample_header(src: MemberSource, fields: list[str], cells: list[str]) -> None:
    names = fields[1:]
    if names != cells:
        pos = next((i for i, (a, b) in enumerate(zip(names, cells, strict=False)) if a != b),
                   min(len(names), len(cells)))
        raise FormatError(src.display, f"sample column {pos + 2} is "
                          f"{names[pos] if pos < len(names) else 'missing'!r}", line=1,
                          column=pos + 2, expected=f"{cells[pos] if pos < len(cells) else 'no column'!r} "
                          "(the samples-columns order)")


def _spill_gene_blocks(src: MemberSource, cells: list[str], entrez: np.ndarray, spill: Path,
                       block_rows: int, st: dict[str, int | bool],
                       save: Callable[[], None]) -> list[Path]:
    """Spill the genes × cells matrix ``src`` in gene blocks (``.npz`` CSR) under ``spill``.

    ``st`` is this matrix's checkpoint (``blocks``, ``rows``, ``offset`` into the data lines,
    ``nnz``, ``done``), updated and saved (``save``) after each block has reached the disk: a
    killed run resumes at the block after the last complete one (the member is inflated again
    up to that offset - no parsing - so its CRC is still checked to the end).
    """
    tag = Path(src.member or src.archive.name).name
    paths = [spill / f"{tag}.{k:06d}.npz" for k in range(int(st["blocks"]))]
    if st["done"]:
        return paths
    it = src.iter_chunks()
    fields, _, rest = read_header(src, it)
    _check_sample_header(src, fields, cells)

    def chunks() -> Iterator[bytes]:
        yield rest
        yield from it

    ncells = len(cells)
    rows0, offset0 = int(st["rows"]), int(st["offset"])
    for blk in iter_count_blocks(_skip(chunks(), offset0), ncells, block_rows,
                                 name=src.display, first_line=2 + rows0, start_row=rows0,
                                 start_offset=offset0):
        got = np.asarray(blk.names)
        want = entrez[blk.start:blk.start + blk.n_rows].astype(str)
        if len(want) < len(got) or (got != want).any():
            i = int(np.flatnonzero(got[:len(want)] != want)[0]) if len(want) == len(got) \
                else len(want)
            raise FormatError(src.display, f"row id {str(got[i])!r}", line=blk.start + i + 2,
                              column=1, expected=f"{want[i] if i < len(want) else 'no more rows'}"
                              " (the genes-rows Entrez id at this position)")
        m = sparse.csr_matrix((blk.data, blk.indices, blk.indptr), shape=(blk.n_rows, ncells))
        p = spill / f"{tag}.{len(paths):06d}.npz"
        tmp = p.with_name(p.name + ".tmp.npz")
        sparse.save_npz(tmp, m, compressed=False)
        os.replace(tmp, p)
        paths.append(p)
        st.update(blocks=len(paths), rows=blk.start + blk.n_rows, offset=blk.end_offset,
                  nnz=int(st["nnz"]) + int(m.nnz))
        save()
    if int(st["rows"]) != len(entrez):
        raise FormatError(src.display, f"{st['rows']} gene rows", line=int(st["rows"]) + 2,
                          expected=f"{len(entrez)} rows, one per genes-rows entry")
    st["done"] = True
    save()
    return paths


def _band(paths: list[Path], c0: int, c1: int) -> sparse.csr_matrix:
    parts = [sparse.load_npz(p).tocsc()[:, c0:c1] for p in paths]
    return sparse.vstack(parts, format="csc").T.tocsr()


def _convert_zip(source: CellTypeSource, store: Path, block_rows: int,
                 progress: object | None = None) -> dict[str, object]:
    """genes × cells matrices → cells × genes store, resumable in both phases.

    ``STORE.progress.json`` records, for each matrix, the gene blocks spilled to
    ``STORE.spill/`` (rows and byte offset reached), then the cells already assembled into
    ``STORE.partial``; a re-run with the same zip (path, size, mtime) and the same cells and
    genes carries on from there, anything else starts over.
    """
    assert source.metadata is not None and source.genes is not None and source.intron is not None
    samples = pd.read_csv(io.BytesIO(source.metadata.read_bytes()), dtype=str,
                          keep_default_na=False)
    genes = pd.read_csv(io.BytesIO(source.genes.read_bytes()), dtype=str, keep_default_na=False)
    sym = next((c for c in ("gene", "gene_symbol") if c in genes.columns), None)
    ent = next((c for c in ("entrez_id", "gene_entrez_id") if c in genes.columns), None)
    if sym is None or ent is None:
        raise FormatError(source.genes.display, f"columns {list(genes.columns)}", line=1,
                          expected="gene (or gene_symbol) and entrez_id (or gene_entrez_id)")
    obs_all = md.samples_obs(samples, source.metadata.display)
    cells = obs_all.index.astype(str).tolist()
    entrez = genes[ent].to_numpy(dtype=str)
    ng, n = len(entrez), len(cells)
    staging, prog_path, _ = _staging(store)
    spill = store.with_name(store.name + ".spill")
    key = _source_key(source.matrix)
    state: dict | None = None
    if prog_path.is_file() and spill.is_dir():
        try:
            saved = json.loads(prog_path.read_text())
        except ValueError:
            saved = {}
        if (saved.get("layout") == "zip2018" and saved.get("source") == key
                and saved.get("cells") == n and saved.get("genes") == ng):
            state = saved
    if state is None:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(spill, ignore_errors=True)
        spill.mkdir(parents=True)
        fresh = {"blocks": 0, "rows": 0, "offset": 0, "nnz": 0, "done": False}
        state = {"layout": "zip2018", "source": key, "cells": n, "genes": ng,
                 "exon": dict(fresh), "intron": dict(fresh), "cells_done": 0, "band_step": None}
    resumed = {"exon_rows": int(state["exon"]["rows"]), "intron_rows":
               int(state["intron"]["rows"]), "cells": int(state["cells_done"])}

    def save() -> None:
        atomic_write_bytes(prog_path, json.dumps(state).encode())

    save()
    exon = _spill_gene_blocks(source.matrix, cells, entrez, spill, block_rows, state["exon"],
                              save)
    intron = _spill_gene_blocks(source.intron, cells, entrez, spill, block_rows,
                                state["intron"], save)
    done = int(state["cells_done"])
    if done and staging.is_dir() and state["band_step"]:
        root = zarr.open_group(str(staging), mode="r+", zarr_format=3)
        writers = [CsrWriter(root, p, ng, create=False) for p in ("X", "layers/exon",
                                                                  "layers/intron")]
        for w in writers:
            w.truncate(done)
        step = int(state["band_step"])
    else:
        done = 0
        shutil.rmtree(staging, ignore_errors=True)
        root = zarr.open_group(str(staging), mode="w", zarr_format=3)
        writers = [CsrWriter(root, p, ng) for p in ("X", "layers/exon", "layers/intron")]
        root["layers"].attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
        bands = max(1, -(-(int(state["exon"]["nnz"]) + int(state["intron"]["nnz"]))
                         // BAND_NNZ))
        step = -(-n // bands) if n else 1
        state.update(band_step=step, cells_done=0)
        save()
    for c0 in range(done, n, step):
        c1 = min(n, c0 + step)
        e = _band(exon, c0, c1)
        i = _band(intron, c0, c1)
        x = (e + i).tocsr()
        for w, m in zip(writers, (x, e, i), strict=True):
            m.sort_indices()
            w.append(m.indptr.astype(np.int64), m.indices.astype(np.int32),
                     m.data.astype(np.int32))
        state["cells_done"] = c1
        save()
        if progress is not None:
            progress(c1)  # type: ignore[operator]
    obs, report = md.align_obs(pd.Index(cells, name="sample_name"), obs_all)
    var = md.var_from_genes(genes, sym)
    report.update(layout="zip2018", source=source.matrix.display, nnz=writers[0].nnz, genes=ng,
                  x="exon + intron counts", converter=f"atlas-engine {__version__}",
                  resumed_at=", ".join(f"{k} {v}" for k, v in resumed.items()))
    _write_annotations(root, obs, var, {"conversion": md.string_mapping(report)})
    _publish(staging, store, prog_path)
    shutil.rmtree(spill, ignore_errors=True)
    return report


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
