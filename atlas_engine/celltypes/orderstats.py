"""Trimmed means and medians of a Cell Types store in one read of the counts.

An order statistic of a (group, gene) pair needs all of the pair's stored values at once, and
the store holds cells, not genes. Instead of reading the store once per band of genes, one
Dask pass over row blocks writes every stored count of the selected genes to a spill
directory, grouped by *fine gene band*: per count its gene within the band and the count, per
run of one cell's counts the cell (4 bytes a count plus 6 a run with 16-bit fields, wider where
they do not fit; four files per row block), and each cell's total. A second set of Dask tasks,
one per fine band, reads that band's records from every block's files, places them by pair as
CPM and selects each pair's middle values (:func:`atlas_engine.kernels.spill.band_order_stats`).

Memory: one row block and its records per thread in the first pass; one band's records
(about :data:`BAND_VALUES` on average, ~12 bytes each while placed) per thread in the second.
Disk: about 4.5 bytes (at most 12) per stored count of the selected genes, removed when the
computation ends, however it ends. The spill directory must be visible to every worker: the
default (the system's temporary directory) is for threads or a cluster on one machine; a
cluster over several machines needs ``spill_dir`` on a shared file system.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..kernels.spill import band_order_stats, cpm_scale, csr_band_records
from ..store.bufferpool import pooled_empty
from .store import CellStore, known_sorted, read_csr_rows, stored_counts

#: average records per fine band (the second pass holds one band per thread, ~12 B each)
BAND_VALUES = 4_000_000
#: spill bytes per stored count, at most (a 4-byte local gene, an 8-byte count), and with
#: 16-bit fields (each with about 0.1 of a 6-byte run at M1 density; 2 allowed for sparser
#: sets)
RECORD_BYTES = 12
RECORD_BYTES_NARROW = 6
#: the spill needs this much more free space than its estimate
FREE_MARGIN = 1.05


def plan_fine_bands(n_selected: int, n_groups: int, values: int,
                    band_values: int = BAND_VALUES) -> tuple[int, int]:
    """``(width, n_bands)``: genes per fine band and the number of bands, so that a band holds
    about ``band_values`` of the ``values`` stored counts (uniform density assumed) and
    ``n_groups × width`` (the band's pairs) stays below 2**31."""
    n_bands = max(1, min(n_selected, math.ceil(values / max(1, band_values))))
    width = math.ceil(n_selected / n_bands)
    width = max(1, min(width, (2**31 - 1) // max(1, n_groups) - 1))
    return width, math.ceil(n_selected / width)


#: the record files of a row block, in the order of :class:`BandRecords`' arrays
FIELDS = ("local", "count", "run_cell", "run_len")


def _spill_block(path: str, start: int, stop: int, labels: np.ndarray, colpos: np.ndarray,
                 width: int, n_bands: int, folder: str, name: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read cells ``start:stop``, write their records by fine band to ``folder/name.*``;
    return the band offsets of records and runs, the cells' totals and the files' dtypes."""
    indptr, indices, data, _ = read_csr_rows(path, start, stop)
    rec = csr_band_records(indptr, indices, data, labels, colpos, width, n_bands,
                           alloc=pooled_empty, sorted_rows=known_sorted(path))
    del indices, data
    base = Path(folder) / name
    for field in FIELDS:
        getattr(rec, field).tofile(f"{base}.{field}")
    return (rec.rec_offsets, rec.run_offsets, rec.totals,
            tuple(getattr(rec, f).dtype.str for f in FIELDS))


def _read_into(path: str, out: np.ndarray, dtype: np.dtype, offset: int) -> None:
    """Fill ``out`` from ``path`` at element ``offset`` (read straight into it when the file
    holds ``out``'s dtype, else through a converted copy)."""
    if out.size == 0:
        return
    if dtype == out.dtype:
        with open(path, "rb") as fh:
            fh.seek(offset * dtype.itemsize)
            if fh.readinto(memoryview(out).cast("B")) != out.nbytes:
                raise OSError(f"{path}: spill file shorter than its offsets")
    else:
        out[:] = np.fromfile(path, dtype, count=out.size, offset=offset * dtype.itemsize)


def _band_task(folder: str, blocks: list[tuple[str, int, tuple[str, ...]]],
                rec: np.ndarray, run: np.ndarray, labels: np.ndarray, scale: np.ndarray,
                n_cells: np.ndarray, width: int, trim: float) -> tuple[np.ndarray, np.ndarray]:
    """One fine band: its records from every block's files -> (trimmed mean, median).

    ``blocks`` holds each block's file stem, first cell and file dtypes; ``rec`` / ``run``
    (blocks × 2) the band's record / run offsets in each block's files."""
    n_rec = (rec[:, 1] - rec[:, 0]).astype(np.int64)
    n_run = (run[:, 1] - run[:, 0]).astype(np.int64)
    used = [k for k in range(len(blocks)) if n_run[k]]
    types = [tuple(np.dtype(t) for t in blocks[k][2]) for k in used]
    # one array per field, in the widest dtype any block used
    sizes = (int(n_rec[used].sum()), int(n_rec[used].sum()), int(n_run[used].sum()),
             int(n_run[used].sum()))
    arrays = [pooled_empty(n, np.result_type(np.uint16, *[t[f] for t in types]))
              for f, n in enumerate(sizes)]
    rec_at = np.zeros(len(used) + 1, np.int64)
    run_at = np.zeros(len(used) + 1, np.int64)
    for i, k in enumerate(used):
        base = str(Path(folder) / blocks[k][0])
        ends = (rec_at[i] + n_rec[k], rec_at[i] + n_rec[k], run_at[i] + n_run[k],
                run_at[i] + n_run[k])
        for f, field in enumerate(FIELDS):
            lo = rec_at[i] if f < 2 else run_at[i]
            off = rec[k, 0] if f < 2 else run[k, 0]
            _read_into(f"{base}.{field}", arrays[f][lo:ends[f]], types[i][f], int(off))
        rec_at[i + 1] = ends[0]
        run_at[i + 1] = ends[2]
    first = np.array([blocks[k][1] for k in used], np.int64)
    return band_order_stats(*arrays, labels, scale, n_cells, width, trim,
                            pieces=(rec_at, run_at, first), alloc=pooled_empty)


def _check_space(folder: Path, need: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < need * FREE_MARGIN:
        raise ConfigError(
            f"{folder}: trimmed means / medians spill about {need / 2**30:.1f} GiB "
            f"(4-12 bytes per stored count) and only {free / 2**30:.1f} GiB is free; "
            "choose another place with spill_dir= (--spill-dir)")


def order_stats(
    st: CellStore, cols: np.ndarray, labels: np.ndarray, n_cells: np.ndarray,
    block_cells: int, *, trim: float = 0.25, spill_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed mean and median of log2(CPM + 1) per group and selected gene, in one read.

    Parameters
    ----------
    st : CellStore
    cols : (W,) int64
        Selected gene columns (sorted); the result's columns are in this order.
    labels : (cells,) int64
        Group of each cell, < 0 = in no group.
    n_cells : (G,) int64
        Cells of each group.
    block_cells : int
        Cells read per task of the first pass.
    trim : float
        R's ``mean(x, trim)``.
    spill_dir : str, optional
        Where the records go (a temporary directory is made inside it); default the
        system's temporary directory. Every worker must see it.

    Returns
    -------
    (trimmed_mean, median) : (G, W) float64
    """
    import dask

    from ..aggregate.rowtasks import compute, task

    n_groups = int(n_cells.size)
    cols = np.asarray(cols, np.int64)
    colpos = np.full(st.n_genes, -1, np.int64)
    colpos[cols] = np.arange(cols.size)
    stored = stored_counts(st.path)
    share = stored if cols.size == st.n_genes else math.ceil(stored * cols.size / st.n_genes)
    width, n_bands = plan_fine_bands(cols.size, n_groups, share)
    root = Path(spill_dir) if spill_dir else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    # the estimate is the selected genes' share at uniform density (every stored count at
    # most), in the record size this run will use
    narrow = width <= 2**16
    _check_space(root, min(stored, 2 * share) * (RECORD_BYTES_NARROW if narrow
                                                 else RECORD_BYTES))
    folder = Path(tempfile.mkdtemp(prefix="atlas-engine-spill-", dir=root))
    try:
        starts = list(range(0, st.n_cells, block_cells))
        names = [f"b{i:07d}" for i in range(len(starts))]
        labels = np.asarray(labels, np.int64)
        parts = compute([task(_spill_block, st.path, a, min(st.n_cells, a + block_cells),
                              labels[a:a + block_cells], colpos, width, n_bands, str(folder),
                              name)
                         for a, name in zip(starts, names, strict=True)])
        rec = (np.stack([p[0] for p in parts]) if parts
               else np.zeros((0, n_bands + 1), np.int64))
        run = (np.stack([p[1] for p in parts]) if parts
               else np.zeros((0, n_bands + 1), np.int64))
        scale = cpm_scale(np.concatenate([p[2] for p in parts]) if parts else np.zeros(0))
        blocks = [(name, a, p[3]) for name, a, p in zip(names, starts, parts, strict=True)]
        # one key each for the arrays every band task shares
        shared = (dask.delayed(labels, pure=True), dask.delayed(scale, pure=True),
                  dask.delayed(n_cells, pure=True))
        done = compute([task(_band_task, str(folder), blocks, rec[:, b:b + 2],
                             run[:, b:b + 2], *shared, width, trim)
                        for b in range(n_bands)])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    tm = np.concatenate([d[0] for d in done], axis=1)[:, :cols.size]
    md = np.concatenate([d[1] for d in done], axis=1)[:, :cols.size]
    return np.ascontiguousarray(tm), np.ascontiguousarray(md)
