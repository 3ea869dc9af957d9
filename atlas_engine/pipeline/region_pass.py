"""The per-atlas step: each donor's normalised samples averaged per region (or pooled,
interpolated, spilled to a stream), then combined across donors.

One donor at a time: :meth:`RegionPass.add` takes a donor's chosen rows (raw or
sample-normalised, :mod:`.chosen`), normalises the genes over its matched samples and reduces
them to regions × genes; :meth:`RegionPass.finish` combines the donors. With abagen's
defaults the gene normalisation and the region means are one pass of Dask tasks over blocks
of genes (:func:`.donor_norm.srs_region_means`), and the mean over donors is a running sum;
when the rows are in the cache's files every donor waits for :meth:`RegionPass.flush`, one
computation whose tasks each take a block of genes through all donors
(:func:`.matrix_passes.srs_region_sums`, same sums in the same order).
With other options the normalisation (:mod:`.donor_norm`), the region values with their
pseudo-samples, the pooled samples and the combination over donors are Dask tasks over
blocks of genes too (:mod:`.matrix_passes`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..malloc import trim
from . import matrix_passes
from .donor_norm import gene_normalise, label_codes, normalize_blocks, srs_region_means
from .interpolate import donor_fill, empty_fill
from .matching import VolumeAtlas
from .normalize import check_method
from .params import PipelineParams
from .regions import centroid_combine, centroid_picks, combine_donors
from .result import DonorSamples


class RegionPass:
    """Region values of every donor, combined.

    Parameters
    ----------
    params : PipelineParams
    atlas : VolumeAtlas
    all_labels : ndarray
        The atlas's region labels (sorted, no 0).
    empty : ndarray
        Regions without a matched sample to fill from the nearest samples (``missing=
        'centroids'``), else empty.
    n_genes : int
    sink : RegionStream, optional
        Where a streamed run spills each donor (``out=``).
    region_means : callable, optional
        The default path's gene normalisation + region means of one donor whose rows are
        in memory (:func:`.donor_norm.srs_region_means`; the orchestrator passes its own
        reference); rows in the cache's files go to :meth:`flush` instead.
    """

    def __init__(self, params: PipelineParams, atlas: VolumeAtlas, all_labels: np.ndarray,
                 empty: np.ndarray, n_genes: int, sink: Any = None,
                 region_means: Callable[..., np.ndarray] = srs_region_means) -> None:
        self.p, self.atlas, self.all_labels, self.empty = params, atlas, all_labels, empty
        self.sink = sink
        self.region_means = region_means
        self.per_donor: list[np.ndarray] = []
        self.pooled: list[tuple[np.ndarray, np.ndarray]] = []
        self.picks: list[Any] = []
        self.dists: list[Any] = []
        # the mean over donors (NaN skipped) kept as a running sum and count when nothing
        # else needs the per-donor values: the same additions in the same (donor) order
        self.running = (params.region_agg == "donors" and params.agg_metric == "mean"
                        and not params.return_donors and sink is None and not len(empty))
        # (genes × regions: the layout srs_region_means returns, so no strided passes)
        self.acc_sum = np.zeros((n_genes, len(all_labels))) if self.running else None
        self.acc_cnt = (np.zeros(self.acc_sum.shape, dtype=np.int32) if self.running
                        else None)
        #: donors of the default path whose region means wait for :meth:`flush`: their
        #: file-backed rows, matched columns and region codes
        self._pending: list[tuple[Any, np.ndarray, np.ndarray]] = []

    def flush(self) -> None:
        """Add the waiting donors' region means to the running sum, all donors in one Dask
        computation (:func:`.matrix_passes.srs_region_sums`), in donor order."""
        if not self._pending:
            return
        bases, cols, codes = zip(*self._pending, strict=True)
        self._pending = []
        matrix_passes.srs_region_sums(bases, cols, codes, len(self.all_labels),
                                      self.acc_sum, self.acc_cnt)
        trim()

    def _add_donor(self, values: np.ndarray) -> None:
        self.flush()    # the donors before this one first: sums in donor order
        if not self.running:
            self.per_donor.append(values)
            return
        matrix_passes.add_finite(self.acc_sum, self.acc_cnt, values.T)

    def add(self, ds: DonorSamples, lab: np.ndarray, base: Any, normalised: bool) -> None:
        """One donor: ``base`` its chosen rows (genes × all of its columns; sample-
        normalised when ``normalised``), ``lab`` the label of each kept sample."""
        p, all_labels = self.p, self.all_labels
        a = ds.annotation
        cols = ds.src
        coords = a[["mni_x", "mni_y", "mni_z"]].to_numpy(dtype=np.float64)
        hemi = a["hemisphere"].to_numpy()
        cls = a["structure"].to_numpy()
        if p.norm_matched:
            nz = lab != 0
            cols, lab, coords, hemi, cls = cols[nz], lab[nz], coords[nz], hemi[nz], cls[nz]
        classes = cls.astype(str) if p.norm_structures else None
        if normalised and p.gene_norm is not None and len(cols):
            # samples NaN for every gene (sample_norm of a constant sample) are skipped by
            # the gene normalisation, as abagen does; they add nothing to region means
            maybe = np.unique(cols[np.isnan(base[0, cols])]) if len(base) else \
                np.zeros(0, dtype=np.int64)         # a dead column is NaN in row 0 too
            dead = maybe[np.all(np.isnan(base[:, maybe]), axis=0)] if len(maybe) else maybe
            if len(dead):
                keep = ~np.isin(cols, dead)
                cols, lab, coords, hemi, cls = (cols[keep], lab[keep], coords[keep],
                                                hemi[keep], cls[keep])
                classes = classes[keep] if classes is not None else None
        if (normalised and p.region_agg == "donors" and p.agg_metric == "mean"
                and not len(self.empty) and classes is None and p.gene_norm is not None
                and p.missing != "interpolate" and self.sink is None
                and check_method(p.gene_norm) == "srs"):
            # the default path: gene norm and region means block by block (no genes ×
            # samples matrix); donors whose rows are in cache files wait for flush(), which
            # runs them all in one computation
            codes = label_codes(lab, all_labels)
            if self.running and hasattr(base, "gather_rows"):
                self._pending.append((base, cols, codes))
                return
            self._add_donor(self.region_means(base, cols, codes, len(all_labels)).T)
            del base
            trim()
            return
        if normalised:
            xg = gene_normalise(base, cols, p.gene_norm, classes)  # genes × samples
        else:
            x = base[:, cols].T
            if len(x):
                x = normalize_blocks(x, p.sample_norm, p.gene_norm, classes)
            xg = np.ascontiguousarray(x.T)
        del base
        x = xg.T  # samples × genes (view)
        if self.sink is not None:  # spilled; the output is written after the last donor
            self.sink.add_donor(xg, lab, coords, hemi, cls)
            del x, xg
            trim()
            return
        with_info = self.atlas.atlas_info is not None
        if len(self.empty):
            m = lab != 0
            pk, dist = centroid_picks(self.atlas, x[m], coords[m], self.empty,
                                      hemi[m] if with_info else None,
                                      cls[m] if with_info else None)
            self.picks.append(pk)
            self.dists.append(dist)
        fill_i = donor_fill(self.atlas, lab, coords, hemi, cls) \
            if p.missing == "interpolate" else empty_fill(len(lab))
        # the region values (pseudo-samples included) as tasks over blocks of genes
        if p.region_agg == "donors" and p.agg_metric == "mean":
            self._add_donor(matrix_passes.group_means(xg, label_codes(lab, all_labels),
                                                      all_labels, fill_i))
        elif p.region_agg == "donors":
            self._add_donor(matrix_passes.region_values(x, lab, all_labels, p.agg_metric,
                                                        fill_i))
        else:
            self.pooled.append(matrix_passes.pooled_samples(x, lab, fill_i))
        del x, xg
        trim()

    def finish(self) -> np.ndarray | None:
        """Regions × genes combined over the donors (None when streamed or with
        ``return_donors``: see :attr:`per_donor`)."""
        self.flush()
        p = self.p
        fill = (centroid_combine(self.picks, self.dists)
                if len(self.empty) and self.sink is None else None)
        fill_rows = np.searchsorted(self.all_labels, self.empty)
        if self.sink is not None:
            return None
        if p.region_agg == "donors":
            if fill is not None:
                for v in self.per_donor:
                    v[fill_rows] = fill
            if self.running:
                with np.errstate(invalid="ignore", divide="ignore"):
                    combined = np.ascontiguousarray(np.where(
                        self.acc_cnt > 0, self.acc_sum / self.acc_cnt, np.nan).T)
                self.acc_sum = self.acc_cnt = None
                return combined
            return None if p.return_donors else combine_donors(self.per_donor, p.agg_metric)
        combined = matrix_passes.region_values(np.vstack([v for v, _ in self.pooled]),
                                               np.concatenate([lab for _, lab in self.pooled]),
                                               self.all_labels, p.agg_metric)
        if fill is not None:
            combined[fill_rows] = fill
        return combined
