"""Regions × genes streamed to an on-disk Zarr v3 group, for atlases too large to aggregate
in memory (a voxel-level atlas: every in-brain voxel its own region, ~150k–230k regions).

During the donor loop of :func:`~.expression.get_expression_data` each donor's normalised
samples (samples × genes) and its per-region values over the regions it has samples in are
spilled to a temporary directory, with what ``missing`` needs (interpolation weights, the
samples nearest the empty regions' centroids). The genes to drop (NaN in a region with data)
follow from those per-region values alone: a region without samples is filled from samples
(never NaN) or stays all-NaN. Then the output is written one block of regions at a time:
each donor's values in the block (its region values, its pseudo-samples, the centroid fill),
combined over donors as in memory (same additions in the same order, so the numbers are those
of the in-memory path). Memory: one block of regions × genes per donor at most, plus the
spilled files' pages of the current block (dropped after each block).

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
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from ..convert.writer import COMPRESSORS
from ..errors import ConfigError
from ..kernels.blockgroups import group_mean_rows
from .interpolate import InterpolationFill, donor_fill, empty_fill
from .matching import VolumeAtlas
from .regions import centroid_combine, region_values

#: bytes of one block of regions × genes (float64) per donor during the write
BLOCK_BYTES = 32 * 2**20
#: genes per chunk of the output array
GENE_CHUNK = 1024


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


class _Donor:
    """One donor's spilled data."""

    def __init__(self, x: np.ndarray, present: np.ndarray, values: np.ndarray,
                 counts: np.ndarray | None, fill: InterpolationFill,
                 centroid_idx: np.ndarray | None, centroid_dist: np.ndarray | None) -> None:
        self.x = x                   # samples × genes (memory-mapped)
        self.present = present       # positions (in all_labels) of its regions with samples
        self.values = values         # len(present) × genes: means/medians (or sums)
        self.counts = counts         # len(present) × genes non-NaN counts (pooled mean only)
        self.fill = fill
        self.fill_pos: np.ndarray = np.zeros(0, dtype=np.int64)
        self.centroid_idx = centroid_idx
        self.centroid_dist = centroid_dist


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
    def _save(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        return np.lib.format.open_memmap(self.spill / f"{name}.npy", mode="w+",
                                         dtype=np.float64, shape=shape)

    def add_donor(self, xg: np.ndarray, lab: np.ndarray, coords: np.ndarray,
                  hemi: np.ndarray, cls: np.ndarray) -> None:
        """One donor: ``xg`` genes × samples normalised, the samples' labels, coordinates,
        hemisphere and class (the samples abagen keeps for this donor's aggregation)."""
        k = len(self.donors)
        xg = np.asarray(xg, dtype=np.float64)
        lab = np.asarray(lab, dtype=np.int64)
        n = xg.shape[1]
        # written a block of genes at a time, each block's pages flushed and dropped, so the
        # spill does not add a copy of the matrix to the resident memory
        x = self._save(f"x_{k}", (n, self.n_genes))
        for a in range(0, self.n_genes, 1024):
            x[:, a:a + 1024] = xg[a:a + 1024].T
            x.flush()
            _drop_pages(x)
        pos = np.searchsorted(self.all_labels, lab)
        pos = np.where((pos < len(self.all_labels))
                       & (self.all_labels[np.minimum(pos, len(self.all_labels) - 1)] == lab),
                       pos, -1)
        present, codes = np.unique(pos[pos >= 0], return_inverse=True)
        full_codes = np.full(n, -1, dtype=np.int64)
        full_codes[pos >= 0] = codes.reshape(-1)
        pooled = self.region_agg == "samples"
        values = self._save(f"v_{k}", (len(present), self.n_genes))
        counts = self._save(f"c_{k}", (len(present), self.n_genes)) if pooled else None
        nan = np.zeros((len(present), self.n_genes), dtype=bool)
        for a in range(0, self.n_genes, 1024):
            g = xg[a:a + 1024]
            if pooled:
                vals, cnt = _group_sums(g, full_codes, len(present))
                counts[:, a:a + 1024] = cnt
                nan[:, a:a + 1024] = cnt == 0
            elif self.agg_metric == "mean":
                vals = group_mean_rows(g, full_codes, len(present)).T
            else:
                vals = region_values(g.T, lab, self.all_labels[present], self.agg_metric)
            values[:, a:a + 1024] = vals
            if not pooled:
                nan[:, a:a + 1024] = np.isnan(vals)
            for m in (values, counts):
                if m is not None:
                    m.flush()
                    _drop_pages(m)
        for i, p in enumerate(present.tolist()):
            bits = np.packbits(nan[i])
            prev = self._nan.get(p)
            self._nan[p] = bits if prev is None else (prev & bits)
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
        d = _Donor(np.load(self.spill / f"x_{k}.npy", mmap_mode="r"), present,
                   np.load(self.spill / f"v_{k}.npy", mmap_mode="r"),
                   None if not pooled else np.load(self.spill / f"c_{k}.npy", mmap_mode="r"),
                   fill, c_idx, c_dist)
        d.fill_pos = np.searchsorted(self.all_labels, fill.labels)
        del x, values, counts
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
        import zarr

        keep = self.keep_genes()
        kept = np.flatnonzero(keep)
        n_kept = len(kept)
        per_row = max(1, n_kept) * 8 * (len(self.donors) if self.agg_metric == "median" else 1)
        rows = int(max(16, min(8192, BLOCK_BYTES // per_row)))
        tmp = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        # the gene chunks of a block are compressed and written concurrently
        with zarr.config.set({"async.concurrency": 8}):
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
            arr = root.create_array(
                "expression", shape=(n_regions, n_kept), dtype=np.dtype(dtype),
                chunks=(min(rows, max(1, n_regions)), max(1, min(GENE_CHUNK, n_kept))),
                fill_value=np.nan, dimension_names=["label", "gene_symbol"],
                compressors=COMPRESSORS)
            fill_all = self._centroid_positions()
            data = self._has_data | self._filled
            data[fill_all] = True
            for a in range(0, n_regions, rows):
                b = min(a + rows, n_regions)
                if not data[a:b].any():
                    continue           # all NaN: the chunks stay unwritten (fill value NaN)
                block = self._block(a, b, kept, fill_all)
                arr[a:b] = block.astype(dtype, copy=False)
                del block
                for d in self.donors:
                    for m in (d.x, d.values, d.counts):
                        if m is not None:
                            _drop_pages(m)
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

    def _centroid_values(self, which: np.ndarray, kept: np.ndarray) -> np.ndarray:
        """abagen's centroid fill (inverse-distance-weighted over donors, NaN skipped) of the
        empty labels at positions ``which`` of ``self.empty``, as :func:`.centroid_combine`."""
        dists = [d.centroid_dist[which] for d in self.donors]
        picks = []
        for d in self.donors:
            idx = d.centroid_idx[which]
            p = np.full((len(which), len(kept)), np.nan)
            ok = np.flatnonzero(idx >= 0)
            if ok.size:
                p[ok] = _rows(d.x, idx[ok], kept)
            picks.append(p)
        return centroid_combine(picks, dists)

    def _block(self, a: int, b: int, kept: np.ndarray, fill_all: np.ndarray) -> np.ndarray:
        nb, nk = b - a, len(kept)
        lo, hi = np.searchsorted(fill_all, [a, b])
        fill_rows = fill_all[lo:hi] - a
        fill = self._centroid_values(np.arange(lo, hi), kept) if hi > lo else None
        if self.region_agg == "samples":
            s = np.zeros((nb, nk))
            c = np.zeros((nb, nk))
        elif self.agg_metric == "mean":
            s = np.zeros((nb, nk))
            c = np.zeros((nb, nk), dtype=np.int32)
        else:
            stack = []
        v = np.empty((nb, nk))   # one donor's values at a time (reused: no fresh pages)
        for d in self.donors:
            v.fill(np.nan)
            p0, p1 = np.searchsorted(d.present, [a, b])
            if p1 > p0:
                v[d.present[p0:p1] - a] = np.asarray(d.values[p0:p1])[:, kept]
            f0, f1 = np.searchsorted(d.fill_pos, [a, b])
            if f1 > f0:
                v[d.fill_pos[f0:f1] - a] = d.fill.rows(
                    np.arange(f0, f1), lambda idx, x=d.x: _rows(x, idx, kept))
            if self.region_agg == "samples":
                if p1 > p0:
                    r = d.present[p0:p1] - a
                    s[r] += np.nan_to_num(v[r])
                    c[r] += np.asarray(d.counts[p0:p1])[:, kept]
                if f1 > f0:
                    r = d.fill_pos[f0:f1] - a
                    ok = ~np.isnan(v[r])
                    s[r] += np.where(ok, v[r], 0.0)
                    c[r] += ok
                continue
            if fill is not None:
                v[fill_rows] = fill
            if self.agg_metric == "mean":
                ok = ~np.isnan(v)
                np.add(s, v, out=s, where=ok)
                c += ok          # the same counts as c[ok] += 1, without a masked scatter
            else:
                stack.append(v.copy())
        if self.region_agg == "samples":
            with np.errstate(invalid="ignore", divide="ignore"):
                out = np.where(c > 0, s / c, np.nan)
            if fill is not None:
                out[fill_rows] = fill
            return out
        if self.agg_metric == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(c > 0, s / c, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(np.stack(stack), axis=0)


def _rows(x: np.ndarray, idx: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``x[idx][:, cols]`` from a memory-mapped samples × genes array."""
    sub = np.asarray(x[np.asarray(idx, dtype=np.int64)])
    return sub if len(cols) == sub.shape[1] else sub[:, cols]


def _group_sums(xg: np.ndarray, codes: np.ndarray, n_groups: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(groups × genes sums of the non-NaN values, groups × genes non-NaN counts) of genes ×
    samples ``xg`` by sample ``codes`` (-1 left out), samples added in their order."""
    sums = np.zeros((n_groups, xg.shape[0]))
    counts = np.zeros((n_groups, xg.shape[0]))
    for j in np.flatnonzero(codes >= 0).tolist():
        col = xg[:, j]
        ok = ~np.isnan(col)
        sums[codes[j]] += np.where(ok, col, 0.0)
        counts[codes[j]] += ok
    return sums, counts


def _replace_dir(src: Path, dest: Path) -> None:
    """Move the finished directory ``src`` to ``dest``, replacing what was there."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
