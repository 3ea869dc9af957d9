"""abagen's ``missing='interpolate'`` on a volumetric atlas (abagen 0.1.3
``allen._interpolate_missing`` with ``AtlasTree.fill_label``).

Per donor, every atlas label without a sample of that donor is filled with one pseudo-sample:

1. each sample is snapped to its nearest atlas voxel (non-zero voxels, Euclidean);
2. every voxel of the label takes the nearest snapped sample (Euclidean between voxel
   centres; ties go to the first sample in the donor's sample order, as ``argmin``);
3. with region info, only samples of the label's hemisphere *and* class whose snapped voxel
   lies in a region compatible with the sample (same class, and same hemisphere unless the
   region is bilateral) are used; a label without such a sample stays empty;
4. the value is ``Σ w·x / Σ w`` over the label's voxels, ``w = 1/d`` (``w = 1`` where
   ``d = 0``), NaN values left out of the sum but not of the weights (pandas' ``sum``).

The voxel → sample assignment is a KD-tree query over the distinct snapped voxels, not a
voxel × sample distance matrix, so memory is linear in the number of voxels. Voxels that pick
the same sample are merged into one weight per (label, sample): the fill is the sparse
product ``W @ X / W.sum(1)`` and can be evaluated for any block of labels (:meth:`rows`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .matching import VolumeAtlas

if TYPE_CHECKING:  # scipy is imported where a fill is made: the default path needs none
    import scipy.sparse as sp


@dataclass(frozen=True)
class InterpolationFill:
    """One donor's pseudo-samples: ``labels`` (sorted) filled from its samples.

    ``weights``: (len(labels), n_samples) CSR, the summed voxel weights of each sample per
    label; ``denominator``: the total weight per label.
    """

    labels: np.ndarray
    weights: sp.csr_matrix
    denominator: np.ndarray

    def __sizeof__(self) -> int:
        # its arrays' bytes: what sending it to a Dask worker costs (``dask.sizeof``)
        w = self.weights
        return (object.__sizeof__(self) + self.labels.nbytes + self.denominator.nbytes
                + w.data.nbytes + w.indices.nbytes + w.indptr.nbytes)

    def values(self, x: np.ndarray) -> np.ndarray:
        """(len(labels), G) pseudo-samples from the donor's samples × genes ``x``."""
        return self.rows(np.arange(len(self.labels)), lambda idx: np.asarray(x)[idx])

    def rows(self, which: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray]
             ) -> np.ndarray:
        """Pseudo-samples of the labels at positions ``which``; ``fetch(sample indices)``
        returns those samples' rows (samples × genes), so the samples can live on disk."""
        which = np.asarray(which, dtype=np.int64)
        if len(which) and np.array_equal(which, np.arange(which[0], which[0] + len(which))):
            w = self.weights[int(which[0]):int(which[0]) + len(which)]
        else:
            w = self.weights[which]
        w.sort_indices()
        # only the samples these labels use, with the column order (and so the order of the
        # additions) unchanged
        cols, inv = np.unique(w.indices, return_inverse=True)
        inv = inv.reshape(-1)
        x = np.nan_to_num(np.asarray(fetch(cols), dtype=np.float64), nan=0.0, posinf=np.inf,
                          neginf=-np.inf)
        if len(which) and np.all(np.diff(w.indptr) == 1):
            # one sample per label (every voxel-level region): the product is a scaled
            # gather, the same value the sparse product computes (0 + w·x == w·x)
            out = x[inv] * w.data[:, None]
        else:
            from scipy.sparse import csr_matrix

            w = csr_matrix((w.data, inv, w.indptr), shape=(w.shape[0], len(cols)))
            out = np.asarray(w @ x)
        out /= self.denominator[which][:, None]
        return out


def empty_fill(n_samples: int) -> InterpolationFill:
    from scipy.sparse import csr_matrix

    return InterpolationFill(np.zeros(0, dtype=np.int64), csr_matrix((0, n_samples)),
                             np.zeros(0))


def snapped_voxels(atlas: VolumeAtlas, xyz: np.ndarray) -> np.ndarray:
    """Index (into ``atlas.coords``) of the non-zero voxel nearest each coordinate."""
    pts = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if not len(pts):
        return np.zeros(0, dtype=np.int64)
    return np.asarray(atlas.tree.query(pts, k=1)[1], dtype=np.int64)


def _node_allowed(atlas: VolumeAtlas, node_labels: np.ndarray, hemi: np.ndarray,
                  cls: np.ndarray) -> np.ndarray:
    """Whether the region a sample snapped into accepts it (abagen ``_check_label``): same
    class, and same hemisphere unless the region is bilateral. When a region is missing from
    the info every sample is accepted (abagen's lookup fails as a whole)."""
    ids = atlas._info_ids
    if not len(ids):
        return np.ones(len(node_labels), dtype=bool)
    pos = np.minimum(np.searchsorted(ids, node_labels), len(ids) - 1)
    if not np.array_equal(ids[pos], node_labels):
        return np.ones(len(node_labels), dtype=bool)
    h, c = atlas._info_hemi[pos], atlas._info_cls[pos]
    same_cls = c == cls
    return np.where(h == "B", same_cls, same_cls & (h == hemi))


def nearest_first(tree_xyz: np.ndarray, rank: np.ndarray, query: np.ndarray, k0: int = 8
                  ) -> tuple[np.ndarray, np.ndarray]:
    """For each query point the tree point at the smallest distance, ties broken by the
    smallest ``rank`` (``argmin`` over points in rank order). Returns ``(index into
    tree_xyz, distance)``. Distances are those of the KD-tree (exact for grid coordinates)."""
    from scipy.spatial import cKDTree

    n = len(tree_xyz)
    tree = cKDTree(tree_xyz)
    out_i = np.empty(len(query), dtype=np.int64)
    out_d = np.empty(len(query))
    todo = np.arange(len(query))
    k = min(k0, n)
    while todo.size:
        d, i = tree.query(query[todo], k=k)
        d, i = d.reshape(len(todo), k), i.reshape(len(todo), k)
        tied = d == d[:, :1]
        r = np.where(tied, rank[i], np.iinfo(np.int64).max)
        j = np.argmin(r, axis=1)
        rows = np.arange(len(todo))
        out_i[todo], out_d[todo] = i[rows, j], d[:, 0]
        more = tied[:, -1] & (k < n)           # every neighbour found is tied: look further
        todo = todo[more]
        k = min(k * 4, n)
    return out_i, out_d


def voxel_weights(dist: np.ndarray) -> np.ndarray:
    """abagen ``_get_weights`` on a column of distances: ``1/d``, 1 where ``d = 0``."""
    d = np.asarray(dist, dtype=np.float64)
    with np.errstate(divide="ignore"):
        w = 1.0 / d
    w[d == 0] = 1.0
    return w


def interpolation_fill(
    atlas: VolumeAtlas,
    xyz: np.ndarray,
    sample_labels: np.ndarray,
    hemisphere: np.ndarray | None = None,
    structure: np.ndarray | None = None,
) -> InterpolationFill:
    """One donor's ``missing='interpolate'`` pseudo-samples (see the module docstring).

    Parameters
    ----------
    atlas : VolumeAtlas (with ``atlas_info`` for the hemisphere/class constraint)
    xyz : (S, 3) the donor's samples used for the fill (abagen: every sample kept by QC with
        ``norm_matched=False``, the matched ones otherwise), in the donor's order.
    sample_labels : (S,) their atlas labels (0 = unmatched); labels with a sample are not
        filled.
    hemisphere, structure : (S,) the samples' hemisphere (L/R/B) and broad class.
    """
    pts = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    n = len(pts)
    missing = np.setdiff1d(atlas.labels, np.asarray(sample_labels, dtype=np.int64))
    if not n or not missing.size:
        return empty_fill(n)
    node = snapped_voxels(atlas, pts)
    use_info = atlas.atlas_info is not None and hemisphere is not None \
        and structure is not None
    groups: list[tuple[np.ndarray, np.ndarray]] = []   # (labels, candidate samples)
    if use_info:
        hemi = np.asarray(hemisphere).astype(str)
        cls = np.asarray(structure).astype(str)
        ok_node = _node_allowed(atlas, atlas.voxel_labels[node], hemi, cls)
        ids = atlas._info_ids
        pos = np.minimum(np.searchsorted(ids, missing), max(len(ids) - 1, 0))
        known = (ids[pos] == missing) if len(ids) else np.zeros(len(missing), dtype=bool)
        lab_h = np.where(known, atlas._info_hemi[pos] if len(ids) else "", "")
        lab_c = np.where(known, atlas._info_cls[pos] if len(ids) else "", "")
        if (~known).any():   # labels without info: no constraint on the label side
            groups.append((missing[~known], np.flatnonzero(ok_node)))
        keys = sorted(set(zip(lab_h[known].tolist(), lab_c[known].tolist(), strict=True)))
        for h, c in keys:
            sel = known & (lab_h == h) & (lab_c == c)
            groups.append((missing[sel], np.flatnonzero(ok_node & (hemi == h) & (cls == c))))
    else:
        groups.append((missing, np.arange(n)))

    rows_l, cols_l, data_l = [], [], []
    filled = np.zeros(len(missing), dtype=bool)
    for labs, cand in groups:
        if not cand.size or not labs.size:
            continue
        # distinct snapped voxels, each represented by its first sample (argmin's tie rule)
        uniq, first = np.unique(node[cand], return_index=True)
        rep = cand[first]
        vox = np.flatnonzero(np.isin(atlas.voxel_labels, labs))
        pick, dist = nearest_first(atlas.coords[uniq], rep, atlas.coords[vox])
        lab_rows = np.searchsorted(missing, atlas.voxel_labels[vox])
        rows_l.append(lab_rows)
        cols_l.append(rep[pick])
        data_l.append(voxel_weights(dist))
        filled[lab_rows] = True
    if not rows_l:
        return empty_fill(n)
    keep = np.flatnonzero(filled)
    remap = np.full(len(missing), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    rows = remap[np.concatenate(rows_l)]
    from scipy.sparse import coo_matrix

    w = coo_matrix((np.concatenate(data_l), (rows, np.concatenate(cols_l))),
                      shape=(len(keep), n)).tocsr()
    w.sum_duplicates()
    w.sort_indices()
    den = np.asarray(w.sum(axis=1)).reshape(-1)
    return InterpolationFill(missing[keep], w, den)


def donor_fill(
    atlas: VolumeAtlas,
    sample_labels: np.ndarray,
    xyz: np.ndarray,
    hemisphere: np.ndarray | None,
    structure: np.ndarray | None,
) -> InterpolationFill:
    """:func:`interpolation_fill` for one donor inside the pipeline: nothing for a donor
    without a matched sample (abagen skips such a donor before interpolating); the
    hemisphere/class constraint only with region info."""
    lab = np.asarray(sample_labels, dtype=np.int64)
    if not (lab != 0).any():
        return empty_fill(len(lab))
    if atlas.atlas_info is None:
        hemisphere = structure = None
    return interpolation_fill(atlas, xyz, lab, hemisphere, structure)


def with_pseudo(region_vals: np.ndarray, fill: InterpolationFill, x: np.ndarray,
                all_labels: np.ndarray) -> np.ndarray:
    """One donor's regions × genes values with its pseudo-samples written into the filled
    labels (they have no sample of the donor, so the one pseudo-sample is the region's mean
    and median)."""
    if len(fill.labels):
        region_vals[np.searchsorted(all_labels, fill.labels)] = fill.values(x)
    return region_vals


def pooled_with_pseudo(x: np.ndarray, labels: np.ndarray, fill: InterpolationFill
                       ) -> tuple[np.ndarray, np.ndarray]:
    """One donor's samples × genes and labels with the pseudo-samples appended (for
    ``region_agg='samples'``, where they are pooled with the other donors' samples)."""
    if not len(fill.labels):
        return x, labels
    return (np.vstack([np.asarray(x, dtype=np.float64), fill.values(x)]),
            np.concatenate([np.asarray(labels, dtype=np.int64), fill.labels]))
