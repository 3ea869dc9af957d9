"""Regions × genes streamed to an on-disk Zarr v3 group, for atlases too large to aggregate
in memory (a voxel-level atlas: every in-brain voxel its own region, ~150k–230k regions).

During the donor loop of :func:`~.expression.get_expression_data` each donor's normalised
samples (samples × genes) and its per-region values over the regions it has samples in are
spilled to a temporary directory next to the output, with what ``missing`` needs
(interpolation weights, the samples nearest the empty regions' centroids): a Dask task per
block of genes writes its columns of the donor's files (:func:`_spill_genes`). The genes to
drop (NaN in a region with data) follow from those per-region values alone: a region without
samples is filled from samples (never NaN) or stays all-NaN. Then the output is written by a
Dask task per block of regions (:func:`_write_block`), each writing its own chunks: each
donor's values in the block (its region values, its pseudo-samples, the centroid fill),
combined over donors as in memory (same additions in the same order, so the numbers are those
of the in-memory path). Memory: per running task one block of genes (spilling) or one block
of regions × genes per donor at most (writing), plus the spilled files' pages of that block
(dropped when the task ends). The tasks run where
:func:`~atlas_engine.aggregate.rowtasks.compute` runs them: on the workers of a
``dask.distributed`` client they read and write the spilled files and the output's chunks
themselves, so the workers must see the output's directory (one machine, or a shared file
system), as they see the store's.

Layout (xarray-readable: ``xr.open_zarr(path)``)::

    expression   (label, gene_symbol)  float64/float32, chunks (block rows, ≤ 1024 genes)
    label        (label,)              int64 atlas label ids
    gene_symbol  (gene_symbol,)        str
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..aggregate.rowtasks import compute, share, task
from ..convert.writer import COMPRESSORS
from ..errors import ConfigError
from ..kernels.blockgroups import group_mean_rows, group_sum_select
from .interpolate import InterpolationFill, donor_fill, empty_fill
from .matching import VolumeAtlas
from .regions import centroid_combine, region_values

#: bytes of one block of regions × genes (float64) per donor during the write
BLOCK_BYTES = 32 * 2**20
#: genes per chunk of the output array
GENE_CHUNK = 1024
#: genes per task while a donor is spilled (a multiple of 8: whole bytes of the NaN bits)
GENE_BLOCK = 1024


def check_stream_params(params: dict[str, Any]) -> None:
    """Options the streamed output does not support."""
    if params["return_donors"]:
        raise ConfigError("return_donors cannot be combined with out= (one regions × genes "
                          "array is written)")
    if params["region_agg"] == "samples" and params["agg_metric"] != "mean":
        raise ConfigError("out= with region_agg='samples' supports agg_metric='mean' only")


def _drop_pages(arr: np.ndarray) -> None:
    """Let the kernel drop the resident pages of a memory-mapped array (they stay in the
    page cache; the process's resident size does not grow with the spilled files)."""
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise"):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


def _open(path: str, mode: str = "r") -> np.ndarray:
    """A spilled ``.npy`` file memory-mapped (``mode`` ``"r"`` or ``"r+"``)."""
    return np.load(path, mmap_mode=mode)


class _Donor:
    """One donor's spilled data: its files (samples × genes, region values, region counts)
    and where its rows go."""

    def __init__(self, x: str, present: np.ndarray, values: str, counts: str | None,
                 fill: InterpolationFill, centroid_idx: np.ndarray | None,
                 centroid_dist: np.ndarray | None) -> None:
        self.x = x                   # samples × genes (.npy path)
        self.present = present       # positions (in all_labels) of its regions with samples
        self.values = values         # len(present) × genes: means/medians (or sums) (path)
        self.counts = counts         # len(present) × genes non-NaN counts (pooled mean only)
        self.fill = fill
        self.fill_pos: np.ndarray = np.zeros(0, dtype=np.int64)
        self.centroid_idx = centroid_idx
        self.centroid_dist = centroid_dist

    def part(self, a: int, b: int, lo: int, hi: int) -> _Part:
        """What the block of regions ``a:b`` needs of this donor (``lo:hi``: the block's
        labels in the stream's ``empty``)."""
        p0, p1 = (int(v) for v in np.searchsorted(self.present, [a, b]))
        f0, f1 = (int(v) for v in np.searchsorted(self.fill_pos, [a, b]))
        c_idx = None if self.centroid_idx is None or hi <= lo else self.centroid_idx[lo:hi]
        c_dist = None if self.centroid_dist is None or hi <= lo else self.centroid_dist[lo:hi]
        return _Part(self.x, self.values, self.counts, p0, p1, self.present[p0:p1] - a,
                     self.fill_pos[f0:f1] - a, f0, c_idx, c_dist)


class _Part(NamedTuple):
    """One donor's share of a block of regions (a task's argument: small, and plain data)."""

    x: str                      # the donor's samples × genes file
    values: str                 # its region values file
    counts: str | None          # its region counts file (pooled mean)
    p0: int                     # its regions with samples in the block: rows p0:p1 of values
    p1: int
    rows: np.ndarray            # ... and their rows in the block
    fill_rows: np.ndarray       # the block rows of its pseudo-samples
    f0: int                     # ... which are its fill's rows f0:f0 + len(fill_rows)
    c_idx: np.ndarray | None    # its sample nearest each empty label of the block (-1: none)
    c_dist: np.ndarray | None   # ... and the distances


class RegionStream:
    """Collects the donors (:meth:`add_donor`), then writes the output (:meth:`write`).

    Parameters
    ----------
    path : the output Zarr directory (written under a temporary name, renamed when complete)
    atlas : the atlas; ``all_labels``: sorted non-zero region ids (output rows)
    empty : labels without a sample of any donor (filled for ``missing='centroids'``)
    n_genes : genes of the selection; ``missing``, ``region_agg``, ``agg_metric``: abagen's
    """

    def __init__(self, path: str | os.PathLike, atlas: VolumeAtlas, all_labels: np.ndarray,
                 empty: np.ndarray, n_genes: int, missing: str | None, region_agg: str,
                 agg_metric: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.atlas = atlas
        self.all_labels = np.asarray(all_labels, dtype=np.int64)
        self.empty = np.asarray(empty, dtype=np.int64)
        self.n_genes = int(n_genes)
        self.missing, self.region_agg, self.agg_metric = missing, region_agg, agg_metric
        self.spill = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.spill-",
                                           dir=self.path.parent))
        # the spilled donors go with this object however the run ends (an error or an
        # interrupt between two donors included), not only through write()/close()
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.spill), True)
        self.donors: list[_Donor] = []
        # regions × genes "NaN in every donor that has samples there", bit-packed, over the
        # regions some donor has samples in
        self._nan: dict[int, np.ndarray] = {}
        self._filled = np.zeros(len(self.all_labels), dtype=bool)
        self._has_data = np.zeros(len(self.all_labels), dtype=bool)

    # ---- collecting ----------------------------------------------------------------------
    def _save(self, name: str, shape: tuple[int, ...]) -> str:
        """A new spilled float64 ``.npy`` file of ``shape`` (filled by the tasks); its path."""
        path = self.spill / f"{name}.npy"
        m = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=shape)
        del m
        return str(path)

    def add_donor(self, xg: np.ndarray, lab: np.ndarray, coords: np.ndarray,
                  hemi: np.ndarray, cls: np.ndarray) -> None:
        """One donor: ``xg`` genes × samples normalised, the samples' labels, coordinates,
        hemisphere and class (the samples abagen keeps for this donor's aggregation).

        A Dask task per block of genes writes the block to the donor's spilled files and
        returns its "NaN in a region" bits (:func:`_spill_genes`)."""
        k = len(self.donors)
        xg = np.asarray(xg, dtype=np.float64)
        lab = np.asarray(lab, dtype=np.int64)
        n = xg.shape[1]
        pos = np.searchsorted(self.all_labels, lab)
        pos = np.where((pos < len(self.all_labels))
                       & (self.all_labels[np.minimum(pos, len(self.all_labels) - 1)] == lab),
                       pos, -1)
        present, codes = np.unique(pos[pos >= 0], return_inverse=True)
        full_codes = np.full(n, -1, dtype=np.int64)
        full_codes[pos >= 0] = codes.reshape(-1)
        pooled = self.region_agg == "samples"
        x = self._save(f"x_{k}", (n, self.n_genes))
        values = self._save(f"v_{k}", (len(present), self.n_genes))
        counts = self._save(f"c_{k}", (len(present), self.n_genes)) if pooled else None
        spans = [(a, min(a + GENE_BLOCK, self.n_genes))
                 for a in range(0, self.n_genes, GENE_BLOCK)]
        tasks = [task(_spill_genes, xg[a:b], a, x, values, counts, full_codes, lab,
                      self.all_labels[present], self.agg_metric) for a, b in spans]
        # the regions' NaN bits, a row per region with samples (np.packbits along the genes)
        nan = np.zeros((len(present), (self.n_genes + 7) // 8), dtype=np.uint8)
        for (a, _), bits in zip(spans, compute(tasks), strict=True):
            nan[:, a // 8:a // 8 + bits.shape[1]] = bits
        for i, p in enumerate(present.tolist()):
            prev = self._nan.get(p)
            self._nan[p] = nan[i] if prev is None else (prev & nan[i])
        del nan
        self._has_data[present] = True
        fill = empty_fill(n)
        if self.missing == "interpolate":
            fill = donor_fill(self.atlas, lab, coords, hemi, cls)
            self._filled[np.searchsorted(self.all_labels, fill.labels)] = True
        c_idx = c_dist = None
        if self.missing == "centroids" and len(self.empty):
            m = np.flatnonzero(lab != 0)
            with_info = self.atlas.atlas_info is not None
            idx, c_dist = self.atlas.nearest_to_centroids(
                coords[m], self.empty, hemi[m] if with_info else None,
                cls[m] if with_info else None)
            c_idx = np.where(idx >= 0, m[np.maximum(idx, 0)], -1) if len(m) else idx
        d = _Donor(x, present, values, counts, fill, c_idx, c_dist)
        d.fill_pos = np.searchsorted(self.all_labels, fill.labels)
        self.donors.append(d)

    # ---- the gene drop ---------------------------------------------------------------------
    def keep_genes(self) -> np.ndarray:
        """abagen's post-aggregation rule without the matrix: a gene is dropped when it is
        NaN in a region that has data. Regions filled from samples are never NaN; a region
        with samples is NaN for a gene when every donor's value there is."""
        drop = np.zeros(self.n_genes, dtype=bool)
        for p, bits in self._nan.items():
            if self._filled[p]:
                continue
            nan = np.unpackbits(bits, count=self.n_genes).astype(bool)
            if not nan.all():
                drop |= nan
        return ~drop

    # ---- writing ---------------------------------------------------------------------------
    def write(self, genes: np.ndarray, dtype: Any) -> tuple[Any, np.ndarray]:
        """Write the output; returns ``(lazy xarray DataArray of it, kept-gene mask)``."""
        import xarray as xr

        keep = self.keep_genes()
        kept = np.flatnonzero(keep)
        n_kept = len(kept)
        per_row = max(1, n_kept) * 8 * (len(self.donors) if self.agg_metric == "median" else 1)
        rows = int(max(16, min(8192, BLOCK_BYTES // per_row)))
        tmp = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        # each task writes its chunk row, its gene chunks concurrently (zarr's own setting)
        self._write(tmp, genes, dtype, keep, kept, rows)
        data = xr.open_zarr(str(self.path), zarr_format=3)
        return data["expression"], keep

    def _write(self, tmp: Path, genes: np.ndarray, dtype: Any, keep: np.ndarray,
               kept: np.ndarray, rows: int) -> None:
        import zarr

        n_regions, n_kept = len(self.all_labels), len(kept)
        try:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            root.attrs.update({"description": "regions × genes expression (atlas-engine "
                                              "get_expression_data)",
                               "missing": str(self.missing), "region_agg": self.region_agg,
                               "agg_metric": self.agg_metric})
            lab = root.create_array("label", shape=(n_regions,), dtype="int64",
                                    chunks=(max(1, n_regions),), dimension_names=["label"])
            lab[:] = self.all_labels
            gs = root.create_array("gene_symbol", shape=(n_kept,), dtype=str,
                                   chunks=(max(1, n_kept),), dimension_names=["gene_symbol"])
            if n_kept:
                gs[:] = np.asarray(genes)[kept].astype(str)
            # the store's own codec (Blosc LZ4 + byte shuffle) rather than zarr's default zstd:
            # a gene's map over 148k voxels touches ~640 chunks, and LZ4 decodes them ~5x
            # faster (voxel-level interpolate run: 144 -> 125 CPU-s, 8.5 -> 9.1 GB)
            root.create_array(
                "expression", shape=(n_regions, n_kept), dtype=np.dtype(dtype),
                chunks=(min(rows, max(1, n_regions)), max(1, min(GENE_CHUNK, n_kept))),
                fill_value=np.nan, dimension_names=["label", "gene_symbol"],
                compressors=COMPRESSORS)
            fill_all = self._centroid_positions()
            data = self._has_data | self._filled
            data[fill_all] = True
            # a task per block of regions with data, each writing its own chunks (the blocks
            # are the chunk rows); the others stay unwritten (fill value NaN). Each donor's
            # interpolation weights are one shared argument (sent once to a cluster's
            # workers), which the tasks slice
            fills = [share(d.fill) for d in self.donors]
            tasks = []
            for a in range(0, n_regions, rows):
                b = min(a + rows, n_regions)
                if not data[a:b].any():
                    continue
                lo, hi = (int(v) for v in np.searchsorted(fill_all, [a, b]))
                tasks.append(task(_write_block, str(tmp), a, b, kept,
                                  [d.part(a, b, lo, hi) for d in self.donors], fills,
                                  fill_all[lo:hi] - a, self.region_agg, self.agg_metric,
                                  np.dtype(dtype)))
            compute(tasks)
            # consolidated metadata: xr.open_zarr(path) then opens without a warning
            from ..convert.writer import consolidate

            consolidate(tmp)
            _replace_dir(tmp, self.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            self.close()

    def close(self) -> None:
        """Remove the spilled files."""
        self.donors = []
        self._cleanup()

    def _centroid_positions(self) -> np.ndarray:
        return np.searchsorted(self.all_labels, self.empty) if (
            self.missing == "centroids" and len(self.empty)) else np.zeros(0, dtype=np.int64)


# ---- the tasks -------------------------------------------------------------------------------
def _spill_genes(g: np.ndarray, a: int, x: str, values: str, counts: str | None,
                 codes: np.ndarray, lab: np.ndarray, labels: np.ndarray, agg_metric: str
                 ) -> np.ndarray:
    """One task of :meth:`RegionStream.add_donor`: genes ``a:a + len(g)`` of a donor
    (genes × samples ``g``) written to its spilled samples × genes file ``x``, and their
    values in its regions with samples (``labels``; ``codes`` the position of each sample's
    region in them, -1 none; ``lab`` the samples' labels) to ``values`` — the sums of the
    non-NaN values and their counts (``counts``) when pooled. Each file's pages are flushed
    and dropped once written. Returns the block's "NaN in the region" bits (regions × genes,
    :func:`numpy.packbits` along the genes)."""
    b = a + len(g)
    m = _open(x, "r+")
    m[:, a:b] = g.T
    _flush(m)
    if counts is not None:
        vals, cnt = _group_sums(g, codes, len(labels))
        nan = cnt == 0
    else:
        if agg_metric == "mean":
            vals = group_mean_rows(g, codes, len(labels)).T
        else:
            vals = region_values(g.T, lab, labels, agg_metric)
        nan = np.isnan(vals)
    for path, block in ((values, vals), (counts, None if counts is None else cnt)):
        if path is not None:
            m = _open(path, "r+")
            m[:, a:b] = block
            _flush(m)
    return np.packbits(nan, axis=1)


def _flush(m: np.ndarray) -> None:
    """Write a memory-mapped array's pages to its file and let them go."""
    m.flush()
    _drop_pages(m)


class _Files:
    """The spilled files one task reads, each mapped once (pages dropped by :meth:`close`)."""

    def __init__(self) -> None:
        self._open: dict[str, np.ndarray] = {}

    def __call__(self, path: str) -> np.ndarray:
        if path not in self._open:
            self._open[path] = _open(path)
        return self._open[path]

    def close(self) -> None:
        for m in self._open.values():
            _drop_pages(m)
        self._open.clear()


def _write_block(dest: str, a: int, b: int, kept: np.ndarray, parts: list[_Part],
                 fills: list[InterpolationFill], fill_rows: np.ndarray, region_agg: str,
                 agg_metric: str, dtype: np.dtype) -> None:
    """One task of :meth:`RegionStream.write`: the regions ``a:b`` × ``kept`` genes combined
    over the donors (``parts``, :meth:`_Donor.part`, and their interpolation ``fills``;
    ``fill_rows`` the block rows of the centroid fill), written to the ``expression`` array of the Zarr group ``dest`` (whole
    chunks: ``a:b`` is a chunk row)."""
    import zarr

    files = _Files()
    try:
        block = _block_values(b - a, kept, parts, fills, fill_rows, region_agg, agg_metric,
                              files)
    finally:
        files.close()
    arr = zarr.open_array(dest, path="expression", mode="r+", zarr_format=3)
    arr[a:b] = block.astype(dtype, copy=False)


def _centroid_values(parts: list[_Part], kept: np.ndarray, files: _Files) -> np.ndarray:
    """abagen's centroid fill (inverse-distance-weighted over donors, NaN skipped) of the
    empty labels of a block, as :func:`.centroid_combine`."""
    dists = [d.c_dist for d in parts]
    picks = []
    for d in parts:
        idx = d.c_idx
        p = np.full((len(idx), len(kept)), np.nan)
        ok = np.flatnonzero(idx >= 0)
        if ok.size:
            p[ok] = _rows(files(d.x), idx[ok], kept)
        picks.append(p)
    return centroid_combine(picks, dists)


def _block_values(nb: int, kept: np.ndarray, parts: list[_Part],
                  fills: list[InterpolationFill], fill_rows: np.ndarray, region_agg: str,
                  agg_metric: str, files: _Files) -> np.ndarray:
    """``nb`` regions × ``kept`` genes of a block, combined over the donors' ``parts`` (and
    ``fills``, their interpolation weights)."""
    nk = len(kept)
    fill = _centroid_values(parts, kept, files) if len(fill_rows) else None
    if region_agg == "samples":
        s = np.zeros((nb, nk))
        c = np.zeros((nb, nk))
    elif agg_metric == "mean":
        s = np.zeros((nb, nk))
        c = np.zeros((nb, nk), dtype=np.int32)
    else:
        stack = []
    v = np.empty((nb, nk))   # one donor's values at a time (reused: no fresh pages)
    for d, interp in zip(parts, fills, strict=True):
        v.fill(np.nan)
        if d.p1 > d.p0:
            v[d.rows] = np.asarray(files(d.values)[d.p0:d.p1])[:, kept]
        if len(d.fill_rows):
            v[d.fill_rows] = interp.rows(
                np.arange(d.f0, d.f0 + len(d.fill_rows)),
                lambda idx, x=d.x: _rows(files(x), idx, kept))
        if region_agg == "samples":
            if d.p1 > d.p0:
                r = d.rows
                s[r] += np.nan_to_num(v[r])
                c[r] += np.asarray(files(d.counts)[d.p0:d.p1])[:, kept]
            if len(d.fill_rows):
                r = d.fill_rows
                ok = ~np.isnan(v[r])
                s[r] += np.where(ok, v[r], 0.0)
                c[r] += ok
            continue
        if fill is not None:
            v[fill_rows] = fill
        if agg_metric == "mean":
            ok = ~np.isnan(v)
            np.add(s, v, out=s, where=ok)
            c += ok          # the same counts as c[ok] += 1, without a masked scatter
        else:
            stack.append(v.copy())
    if region_agg == "samples":
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(c > 0, s / c, np.nan)
        if fill is not None:
            out[fill_rows] = fill
        return out
    if agg_metric == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / c, np.nan)
    from ..kernels.nanreduce import nanmedian_quiet

    return nanmedian_quiet(np.stack(stack), axis=0)


def _rows(x: np.ndarray, idx: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``x[idx][:, cols]`` from a memory-mapped samples × genes array."""
    sub = np.asarray(x[np.asarray(idx, dtype=np.int64)])
    return sub if len(cols) == sub.shape[1] else sub[:, cols]


def _group_sums(xg: np.ndarray, codes: np.ndarray, n_groups: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(groups × genes sums of the non-NaN values, groups × genes non-NaN counts) of genes ×
    samples ``xg`` by sample ``codes`` (-1 left out), samples added in their order."""
    cols = np.flatnonzero(codes >= 0)
    sums = np.zeros((xg.shape[0], n_groups))
    counts = np.zeros((xg.shape[0], n_groups))
    group_sum_select(xg, np.arange(xg.shape[0]), cols, codes[cols], sums, counts)
    return sums.T, counts.T


def _replace_dir(src: Path, dest: Path) -> None:
    """Move the finished directory ``src`` to ``dest``, replacing what was there."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
