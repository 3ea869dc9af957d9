"""Convert a 2018 Cell Types zip (genes × cells) into the AnnData Zarr store: spill gene blocks,
assemble cell bands.

The zip holds ``*_exon-matrix.csv`` and ``*_intron-matrix.csv`` (genes × cells, R quoting),
``*_genes-rows.csv`` and ``*_samples-columns.csv``. Each matrix streams out of its member in gene
blocks that are spilled to disk; the store's cell rows are then assembled one cell band at a time
(an out-of-core transpose). ``X`` holds exon + intron counts (Allen's "exons + introns"),
``layers/exon`` and ``layers/intron`` each part. A checkpoint after every spilled gene block and
every assembled cell band makes an interrupted run resume from the last completed one.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import zarr
from scipy import sparse

from .. import __version__
from ..atomic import atomic_write_bytes
from ..convert.countparse import iter_count_blocks
from ..convert.zipstream import MemberSource
from ..errors import FormatError
from . import metadata as md
from .assembly import _publish, _source_key, _staging, _write_annotations, read_header
from .writer import CsrWriter

if TYPE_CHECKING:
    from .convert import CellTypeSource

#: Stored counts per cell band when transposing a genes × cells matrix.
BAND_NNZ = 32 << 20


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
