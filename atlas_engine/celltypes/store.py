"""Reading a Cell Types store: annotations with anndata, counts as CSR row blocks (I/O only).

:func:`cell_blocks` builds a lazy Dask array whose blocks are
:class:`~atlas_engine.aggregate.csr.CsrBlock` objects: one task reads a run of whole cells
(their slice of ``X/indptr``, ``X/indices``, ``X/data``), splits them into gene bands and sums
each cell in one pass; one light task per band then hands its piece on. The engine
(:func:`atlas_engine.aggregate.engine.groupby_reduce`) reduces it like any other Dask array.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr
from scipy import sparse

from ..aggregate.csr import CsrBlock
from ..errors import ConfigError, FormatError, StoreNotFoundError
from ..kernels.sparse import csr_band_pointers, csr_row_totals, csr_split_bands
from ..store.access import access_error, access_problem
from ..store.blockread import read_range
from ..store.open import store_missing
from .writer import SORTED_ATTR


@dataclass
class CellStore:
    """A converted Cell Types store: path, shape, ``obs``, ``var`` and ``uns`` (no counts)."""

    path: str
    n_cells: int
    n_genes: int
    obs: pd.DataFrame
    var: pd.DataFrame
    uns: dict[str, Any]


def is_cell_store(path: str | Path) -> bool:
    """True when ``path`` is an AnnData Zarr store with a CSR ``X`` (a Cell Types store)."""
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        if access_problem(exc):     # unreachable is not "not a Cell Types store"
            raise access_error(str(path), exc) from None
        return False
    if root.attrs.get("encoding-type") != "anndata" or "X" not in root:
        return False
    return root["X"].attrs.get("encoding-type") == "csr_matrix"


def open_cell_store(path: str | Path, obs_columns: list[str] | None = None) -> CellStore:
    """Open a Cell Types store's annotations (the counts stay on disk).

    ``obs_columns``: read only these ``obs`` columns (and the index), not the whole table and
    ``uns`` (an aggregation needs its ``--by`` columns only; a full M1 ``obs`` takes ~0.4 s).
    """
    import anndata as ad
    from anndata.io import read_elem

    if not is_cell_store(path):
        if store_missing(str(path)):
            raise StoreNotFoundError(f"{path}: no such store")
        raise FormatError(path, "not a Cell Types store",
                          expected="an AnnData Zarr store with CSR counts in X "
                                   "(atlas-engine convert on a cell-types data set)")
    root = zarr.open_group(str(path), mode="r")
    with ad.settings.override(remove_unused_categories=False):
        if obs_columns is None:
            obs = read_elem(root["obs"])
            uns = read_elem(root["uns"]) if "uns" in root else {}
        else:
            obs = _obs_columns(root["obs"], obs_columns, read_elem)
            uns = {}
        var = read_elem(root["var"])
    shape = root["X"].attrs["shape"]
    return CellStore(str(path), int(shape[0]), int(shape[1]), obs, var, uns)


def _obs_columns(group: zarr.Group, columns: list[str], read_elem: Any) -> pd.DataFrame:
    """The index and ``columns`` of an AnnData ``obs`` group (a missing one is an error
    naming those there are)."""
    have = list(group.attrs.get("column-order", []))
    for col in columns:
        if col not in have:
            raise ConfigError(f"--by {col!r}: not an obs column (have: {', '.join(have)})")
    index_key = group.attrs.get("_index", "_index")
    index = pd.Index(read_elem(group[index_key]), name=None if index_key == "_index"
                     else index_key)
    return pd.DataFrame({col: read_elem(group[col]) for col in dict.fromkeys(columns)},
                        index=index)


def read_csr_rows(path: str, start: int, stop: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Cells ``start:stop`` of ``X`` as CSR arrays ``(indptr from 0, indices, data)`` and the
    number of genes; column indices are checked against it."""
    n_genes = _n_genes(path)
    # the store's chunk files read and decoded directly (zarr's own reads of these 1-D arrays
    # cost ~10× the decoding), through zarr for layouts the block reader does not know
    indptr = read_range(path, "X/indptr", start, stop + 1).astype(np.int64, copy=False)
    p0, p1 = int(indptr[0]), int(indptr[-1])
    # into pooled arrays: the next block reuses their pages once this one's views are gone
    indices = read_range(path, "X/indices", p0, p1, pooled=True)
    data = read_range(path, "X/data", p0, p1, pooled=True)
    if indices.size and (int(indices.max()) >= n_genes or int(indices.min()) < 0):
        raise FormatError(f"{path}/X/indices", f"column index out of range in cells "
                          f"{start}..{stop - 1}", expected=f"indices in [0, {n_genes})")
    return indptr - p0, indices, data, n_genes


def _n_genes(path: str) -> int:
    return int(_x_attrs(path, _stamp(path))["shape"][1])


def stored_counts(path: str) -> int:
    """Number of stored (non-zero) counts in ``X`` (the last ``indptr`` entry)."""
    n = int(_x_attrs(path, _stamp(path))["shape"][0])
    return int(read_range(path, "X/indptr", n, n + 1)[0])


def known_sorted(path: str) -> bool:
    """The store's ``X`` records that every row's column indices increase (``convert``
    checks each block it writes; stores from elsewhere are checked as they are read)."""
    return bool(_x_attrs(path, _stamp(path)).get(SORTED_ATTR, False))


def _stamp(path: str) -> tuple[int, int]:
    """What identifies the current ``X`` metadata of a local store (a store rewritten at the
    same path is read afresh)."""
    try:
        st = (Path(path) / "X" / "zarr.json").stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _x_attrs(path: str, stamp: tuple[int, int]) -> dict[str, Any]:
    return dict(zarr.open_group(path, mode="r")["X"].attrs)


def read_rows(path: str, start: int, stop: int, bounds: tuple[int, ...],
              totals: bool = True) -> list[CsrBlock]:
    """Cells ``start:stop`` of ``X`` split into the gene bands ``bounds`` (one
    :class:`CsrBlock` per band, each with the cells' totals over all genes; zeros when
    ``totals`` is False: the statistics asked for do not use them)."""
    local, indices, data, n_genes = read_csr_rows(path, start, stop)
    if len(bounds) == 2 and bounds[0] == 0 and bounds[1] == n_genes:
        # one band holding every gene: the rows as read, no copy
        return [CsrBlock(local, indices, data, csr_row_totals(local, data), 0, n_genes)]
    edges = np.asarray(bounds, np.int64)
    scan = csr_band_pointers(local, indices, data, edges, check=not known_sorted(path),
                             totals=totals)
    if scan is not None:
        # sorted rows (convert writes them so): each band a view of the rows, no copy
        ptr, totals = scan
        return [CsrBlock(ptr[k], indices, data, totals, int(edges[k]), int(edges[k + 1]),
                         row_end=ptr[k + 1]) for k in range(edges.size - 1)]
    parts, totals = csr_split_bands(local, indices, data, edges)
    return [CsrBlock(ip, ix, dt, totals, int(bounds[k]), int(bounds[k + 1]))
            for k, (ip, ix, dt) in enumerate(parts)]


def gene_bands(columns: np.ndarray, width: int) -> list[tuple[int, int]]:
    """Contiguous column bands of at most ``width`` genes covering ``columns`` (sorted)."""
    cols = np.unique(np.asarray(columns, np.int64))
    bands: list[tuple[int, int]] = []
    i = 0
    while i < cols.size:
        c0 = int(cols[i])
        c1 = c0 + width
        j = int(np.searchsorted(cols, c1))
        bands.append((c0, int(cols[j - 1]) + 1))
        i = j
    return bands


def cell_blocks(store: CellStore, bands: list[tuple[int, int]], block_cells: int,
                rows: tuple[int, int] | None = None, totals: bool = True) -> Any:
    """Lazy Dask array (cells × band genes) of :class:`CsrBlock` blocks.

    ``bands`` are ``[col0, col1)`` gene ranges (the array's columns are their concatenation);
    ``rows`` (``[start, stop)``, default all cells) restricts the array to a run of cells;
    ``totals=False`` skips the cells' totals (only CPM statistics need them).
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    if block_cells < 1:
        raise ConfigError("block_cells must be >= 1")
    lo, n = rows if rows is not None else (0, store.n_cells)
    starts = list(range(lo, n, block_cells)) or [lo]
    token = tokenize(store.path, bands, block_cells, lo, n, totals)
    load = f"celltypes-rows-{token}"
    name = f"celltypes-band-{token}"
    dsk: dict[Any, Any] = {}
    # bands may skip genes: split at every band edge, keep the even pieces
    edges: list[int] = []
    for c0, c1 in bands:
        if not edges or edges[-1] != c0:
            edges.append(c0)
        edges.append(c1)
    piece = [edges.index(c0) for c0, _ in bands]
    for i, a in enumerate(starts):
        dsk[(load, i)] = (read_rows, store.path, a, min(n, a + block_cells), tuple(edges),
                          totals)
        for j in range(len(bands)):
            dsk[(name, i, j)] = (operator.getitem, (load, i), piece[j])
    chunks = (tuple(min(n, a + block_cells) - a for a in starts),
              tuple(c1 - c0 for c0, c1 in bands))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[])
    return da.Array(graph, name, chunks, meta=sparse.csr_matrix((0, 0), dtype=np.int32))
