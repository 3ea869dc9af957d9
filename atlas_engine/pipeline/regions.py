"""Samples → regions across donors (abagen ``samples_.aggregate_samples``) and the
``missing='centroids'`` fill.

Inputs per donor: the normalised samples × genes matrix and each sample's atlas label (0 =
unmatched). Everything NaN-skipping, as pandas' groupby.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..choices import AGG_METRICS, REGION_AGG
from ..errors import ConfigError
from ._stats import group_mean_columns
from .matching import VolumeAtlas
from .registry import check_choice


def region_values(
    x: np.ndarray, labels: np.ndarray, all_labels: np.ndarray, metric: str = "mean"
) -> np.ndarray:
    """(len(all_labels), G): the ``metric`` of each label's samples, skipping NaN; labels
    without samples give NaN rows; samples whose label is not in ``all_labels`` (e.g. 0) are
    ignored."""
    check_choice("aggregation metric", metric, AGG_METRICS)
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    all_labels = np.asarray(all_labels)
    out = np.full((len(all_labels), x.shape[1]), np.nan)
    pos = {int(v): i for i, v in enumerate(all_labels.tolist())}
    where = np.asarray([pos.get(int(v), -1) for v in labels.tolist()], dtype=np.int64)
    ok = where >= 0
    if not ok.any():
        return out
    if metric == "mean":
        present, means = group_mean_columns(x[ok].T, where[ok])
        out[present] = means.T
        return out
    order = np.argsort(where[ok], kind="stable")
    xs, ws = x[ok][order], where[ok][order]
    bounds = np.flatnonzero(np.diff(ws)) + 1
    from ..kernels.nanreduce import nanmedian_quiet

    for rows in np.split(np.arange(len(ws)), bounds):
        out[ws[rows[0]]] = nanmedian_quiet(xs[rows], axis=0)
    return out


@dataclass(frozen=True)
class Aggregated:
    """Result of :func:`aggregate_samples`.

    ``values``: regions × genes (or one per donor when ``return_donors``); ``labels``: the
    region ids (rows); ``keep_genes``: genes kept by the post-aggregation NaN rule (all True
    with ``return_donors``); ``counts``: regions × donors sample counts.
    """

    values: np.ndarray | list[np.ndarray]
    labels: np.ndarray
    keep_genes: np.ndarray
    counts: np.ndarray


def sample_counts(labels: Sequence[np.ndarray], all_labels: np.ndarray) -> np.ndarray:
    """(len(all_labels), D) number of samples of each donor in each label."""
    pos = {int(v): i for i, v in enumerate(np.asarray(all_labels).tolist())}
    out = np.zeros((len(pos), len(labels)), dtype=np.int64)
    for d, lab in enumerate(labels):
        u, c = np.unique(np.asarray(lab), return_counts=True)
        for v, n in zip(u.tolist(), c.tolist(), strict=True):
            if int(v) in pos:
                out[pos[int(v)], d] = n
    return out


def aggregate_samples(
    values: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    all_labels: np.ndarray,
    region_agg: str = "donors",
    agg_metric: str = "mean",
    return_donors: bool = False,
) -> Aggregated:
    """Aggregate every donor's labelled samples into regions.

    ``region_agg='donors'``: per donor the metric per region, then the metric over the donors
    that have the region (each donor weighs the same). ``'samples'``: all donors' samples
    pooled per region. Unless ``return_donors``, genes that are NaN in any region with data are
    dropped (``keep_genes``).
    """
    check_choice("region_agg", region_agg, REGION_AGG)
    check_choice("aggregation metric", agg_metric, AGG_METRICS)
    if region_agg == "samples" and return_donors:
        raise ConfigError("region_agg='samples' cannot be combined with return_donors")
    if len(values) != len(labels) or not values:
        raise ConfigError("values and labels need one entry per donor")
    all_labels = np.asarray(all_labels)
    all_labels = all_labels[all_labels != 0]
    counts = sample_counts(labels, all_labels)
    if region_agg == "donors":
        per = [region_values(v, lab, all_labels, agg_metric)
               for v, lab in zip(values, labels, strict=True)]
        if return_donors:
            return Aggregated(per, all_labels, np.ones(per[0].shape[1], dtype=bool), counts)
        combined = combine_donors(per, agg_metric)
    else:
        combined = region_values(np.vstack(values), np.concatenate(labels), all_labels,
                                 agg_metric)
    keep = gene_keep(combined)
    return Aggregated(combined[:, keep], all_labels, keep, counts)


def combine_donors(per: Sequence[np.ndarray], agg_metric: str = "mean") -> np.ndarray:
    """Regions × genes: the NaN-skipping ``agg_metric`` over the donors' region values,
    element by element, as Dask tasks over blocks of genes (:func:`.matrix_passes.combine_donors`)."""
    from .matrix_passes import combine_donors as combine

    return combine(per, agg_metric)


def gene_keep(combined: np.ndarray) -> np.ndarray:
    """abagen's post-aggregation rule: keep genes finite in every region that has data."""
    present = ~np.all(np.isnan(combined), axis=1)
    return ~np.any(np.isnan(combined[present]), axis=0)


def centroid_fill(
    atlas: VolumeAtlas,
    values: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    xyz: Sequence[np.ndarray],
    hemisphere: Sequence[np.ndarray] | None = None,
    structure: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """abagen's ``missing='centroids'``: values for the atlas labels no donor has a sample in.

    Per donor the (labelled, normalised) sample nearest each empty label's centroid (same
    hemisphere and class when atlas info and sample info are given); across donors the
    inverse-distance-weighted mean (NaN and unmatched donors skipped). Returns ``(empty labels,
    (E, G) values)``; append them as one pseudo-sample per label to every donor.
    """
    seen = np.unique(np.concatenate([np.asarray(lab) for lab in labels]))
    empty = np.setdiff1d(atlas.labels, seen)
    n_genes = np.asarray(values[0]).shape[1]
    if empty.size == 0:
        return empty, np.zeros((0, n_genes))
    picks, dists = [], []
    for d in range(len(values)):
        h = None if hemisphere is None else hemisphere[d]
        s = None if structure is None else structure[d]
        picked, dist = centroid_picks(atlas, values[d], xyz[d], empty, h, s)
        picks.append(picked)
        dists.append(dist)
    return empty, centroid_combine(picks, dists)


def centroid_picks(
    atlas: VolumeAtlas,
    values: np.ndarray,
    xyz: np.ndarray,
    empty: np.ndarray,
    hemisphere: np.ndarray | None = None,
    structure: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One donor's part of :func:`centroid_fill`: ``((E, G) values of the sample nearest each
    empty label's centroid (NaN when none), (E,) distances)``."""
    idx, dist = atlas.nearest_to_centroids(xyz, empty, hemisphere, structure)
    v = np.asarray(values, dtype=np.float64)
    picked = np.full((len(empty), v.shape[1]), np.nan)
    picked[idx >= 0] = v[idx[idx >= 0]]
    return picked, dist


def centroid_combine(picks: Sequence[np.ndarray], dists: Sequence[np.ndarray]) -> np.ndarray:
    """Inverse-distance-weighted mean over donors of :func:`centroid_picks` results."""
    dist = np.column_stack(dists)  # E × D
    w = _row_weights(dist)
    # donors added in their order, NaN (and NaN·0) skipped: np.nansum over the donor axis
    out = np.zeros(picks[0].shape)
    for d in range(len(picks)):
        out += np.nan_to_num(np.asarray(picks[d]) * w[:, d:d + 1], nan=0.0, posinf=np.inf,
                             neginf=-np.inf)
    out /= w.sum(axis=1)[:, None]
    return out


def _row_weights(dist: np.ndarray) -> np.ndarray:
    """:func:`.inverse_distance_weights` of each row of ``dist``."""
    d = np.asarray(dist, dtype=np.float64)
    with np.errstate(divide="ignore"):
        w = 1.0 / d
    inf = np.isinf(w)
    rows = inf.any(axis=1)
    w[rows] = inf[rows]
    return w
