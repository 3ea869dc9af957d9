"""Convert BrainSpan's ``genes_matrix_csv.zip`` (RNA-seq summarised to genes) into a Zarr store.

Layout (shared allen_formats.md §6.2): ``expression_matrix.csv`` without header, ``row_num`` then
one RPKM value per sample; ``rows_metadata.csv`` (one row per gene) and ``columns_metadata.csv``
(one row per sample). The store holds ``expression`` (gene, sample) plus both tables as
coordinates, in one group ``brainspan`` and the root attributes (see docs/store-layout.md).
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import zarr

from .. import __version__
from ..errors import ConfigError, FormatError
from ..store import layout as L
from . import writer
from .blockparse import ParseStats, iter_blocks
from .staging import Staged, clean_staging
from .store_lock import disk_errors, store_lock
from .zipstream import MemberSource

if TYPE_CHECKING:
    from .recognise import Found

ZIP_NAME = "genes_matrix_csv.zip"
BRAINSPAN_GROUP = "brainspan"
ROWS_COLUMNS = ("row_num", "gene_id", "ensembl_gene_id", "gene_symbol", "entrez_id")
COLS_COLUMNS = ("column_num", "donor_id", "donor_name", "age", "gender", "structure_id",
                "structure_acronym", "structure_name")


def _table(src: MemberSource, columns: tuple[str, ...]) -> pd.DataFrame:
    """``rows_metadata.csv`` / ``columns_metadata.csv``: the ``*_num`` and ``*_id`` columns
    int64 (an empty ``entrez_id`` → -1; a ``*_num`` must be there), the others text; a cell
    that is not a whole number in an id column is refused with its line and column."""
    from .metadata import read_typed_table

    ints = tuple(c for c in columns if c.endswith(("_num", "_id")) and c != "ensembl_gene_id")
    return read_typed_table(src, columns, ints,
                            required=tuple(c for c in ints if c.endswith("_num")))


def find_brainspan(src: str | os.PathLike) -> Found | None:
    """The BrainSpan genes matrix in ``src`` (a zip of any name, a folder of them, or the
    extracted folder), recognised by its members (see :mod:`.discover`)."""
    from .discover import scan
    from .recognise import BRAINSPAN

    found = scan(src).of_kind(BRAINSPAN)
    if len(found) > 1:
        raise ConfigError(f"{src}: holds {len(found)} BrainSpan genes matrices "
                          f"({', '.join(f.display for f in found)}); convert one at a time")
    return found[0] if found else None


def convert_brainspan(src: str | os.PathLike, store: str | os.PathLike, *,
                      dtype: str = "float32", gene_chunk: int = L.PROBE_CHUNK,
                      sample_chunk: int = L.SAMPLE_CHUNK, allow_nonfinite: bool = False,
                      wait: bool = False) -> dict:
    """Convert BrainSpan's ``genes_matrix_csv.zip``: ``src`` is the zip (any name), a folder
    holding it, or its extracted folder (recognised by the members, see :mod:`.discover`).

    The store's writer lock is held throughout (``wait`` for it, else
    :class:`StoreBusyError` when another process converts into the store).
    ``allow_nonfinite`` stores nan/inf tokens as NaN instead of refusing them."""
    found = find_brainspan(src)
    if found is None:
        from .discover import scan
        from .recognise import BRAINSPAN

        raise scan(src).nothing((BRAINSPAN,))
    store_url = os.fspath(store)
    with store_lock(store_url, wait=wait), \
            disk_errors(store_url, "the BrainSpan group"):
        return _convert(found, store_url, dtype, gene_chunk, sample_chunk,
                        "nan" if allow_nonfinite else "refuse")


def _convert(found: Any, store_url: str, dtype: str, gene_chunk: int, sample_chunk: int,
             nonfinite: str) -> dict:
    t0 = time.perf_counter()
    rows = _table(found.member("rows_metadata.csv"), ROWS_COLUMNS)
    cols = _table(found.member("columns_metadata.csv"), COLS_COLUMNS)
    n, m = len(rows), len(cols)
    root = writer.open_root(store_url)
    info = writer.root_info(root)
    if info and info.get("format") != L.FORMAT_BRAINSPAN:
        raise ConfigError(f"{store_url} holds a {info.get('format')!r} store, not BrainSpan")
    clean_staging(store_url)
    staged = Staged.begin(store_url, BRAINSPAN_GROUP)
    try:
        coords = {L.GENE_DIM: (L.GENE_DIM, rows["row_num"].to_numpy()),
                  L.SAMPLE_DIM: (L.SAMPLE_DIM, cols["column_num"].to_numpy())}
        for c in ROWS_COLUMNS[1:]:
            coords[c] = (L.GENE_DIM, rows[c].to_numpy(dtype=object if rows[c].dtype.kind
                                                         not in "if" else None))
        for c in COLS_COLUMNS[1:]:
            coords[c] = (L.SAMPLE_DIM, cols[c].to_numpy(dtype=object if cols[c].dtype.kind
                                                         not in "if" else None))
        writer.write_dataset(staged.url, coords)
        chunks = (min(gene_chunk, n), min(sample_chunk, m))
        arr = writer.create_matrix(staged.url, L.EXPRESSION, (n, m), chunks, dtype,
                                   (L.GENE_DIM, L.SAMPLE_DIM), {"units": "RPKM"})
        src_m = found.member("expression_matrix.csv")
        stats = ParseStats()
        crcs = []
        want = rows["row_num"].to_numpy()
        for block in iter_blocks(src_m.iter_chunks(), m, chunks[0], name=src_m.display,
                                 stats=stats, dtype=dtype, nonfinite=nonfinite):
            r0, r1 = block.start, block.start + len(block.ids)
            if r1 > n:
                raise FormatError(src_m.display, "more rows than rows_metadata.csv", line=n + 1,
                                  expected=f"{n} rows")
            bad = np.flatnonzero(block.ids != want[r0:r1])
            if bad.size:
                k = int(bad[0])
                raise FormatError(src_m.display, f"row_num {block.ids[k]} differs from "
                                  "rows_metadata.csv", line=r0 + k + 1, column=1,
                                  expected=str(want[r0 + k]))
            values = block.values.astype(dtype, copy=False)
            arr[r0:r1, :] = values
            crcs.append(writer.chunk_crcs(values, chunks[1]))
        if stats.rows != n:
            raise FormatError(src_m.display, f"file ends after {stats.rows} rows",
                              line=stats.rows + 1, expected=f"{n} rows")
        sha = None
        if found.is_zip:
            h = hashlib.sha256()
            with open(found.path, "rb") as fh:
                while piece := fh.read(8 << 20):
                    h.update(piece)
            sha = h.hexdigest()
        st = found.path.stat()
        g = zarr.open_group(staged.url, mode="a", zarr_format=3)
        g.attrs.update({"provenance": {"source": {"name": found.path.name,
                                                  "size": found.size(),
                                                  "mtime_ns": st.st_mtime_ns},
                                       "sha256": sha, "origin": found.record(sha),
                                       "converter": f"atlas-engine {__version__}",
                                       "nonfinite_values": stats.nonfinite,
                                       "options": {"dtype": dtype, "chunks": list(chunks),
                                                   "nonfinite": nonfinite}},
                        "checksums": {"algorithm": "crc32", "chunks": list(chunks),
                                      L.EXPRESSION: crcs}})
        g.attrs["complete"] = True
        if staged.replaces():   # unlisted while the group is swapped
            writer.write_root(store_url, lambda cur: {})
        staged.publish()
    except BaseException:
        staged.abort()
        raise
    writer.write_root(store_url, lambda cur: {
        "format": L.FORMAT_BRAINSPAN, "layout_version": L.LAYOUT_VERSION, "dtype": dtype,
        "genes": n, "samples": m, "group": BRAINSPAN_GROUP,
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return {"genes": n, "samples": m, "seconds": time.perf_counter() - t0,
            "bytes": stats.bytes}
