"""abagen's ``get_expression_data`` on a converted store, in bounded memory.

The steps (abagen's order, see docs/abagen-pipeline.md):

1. probe table from the store (optionally reannotated), rows without an Entrez id dropped;
2. per donor sample QC (corrected MNI, mirroring, hemisphere check, similarity threshold);
3. intensity filter from the PACall arrays, read block by block (a per-probe weighted sum
   over the kept sample columns: mirrored duplicates count twice);
4. probe selection from per-donor, per-structure means (differential stability) or per-probe
   moments (max_intensity / max_variance), each one block-wise pass over the expression
   arrays with the numba grouped kernels; pc_loading / corr_* load the IBF-kept probes of the
   genes with more than one probe (rows × all samples, the only step whose memory grows with
   the probe count); average accumulates per-gene sums block-wise;
5. only the chosen probes' rows are read per donor (genes × samples), then matching,
   normalisation and aggregation use the pure functions of this package.

Steps 3–5 up to the selected raw rows do not depend on the atlas: they are cached in the
store (:mod:`.cache`) and reused by later calls with the same sample/probe parameters.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..store import layout as L
from ..store.blockread import BlockArray
from . import passes
from ._groups import group_mean_rows
from .cache import StoreCache, StripedMatrix
from .interpolate import donor_fill, empty_fill, pooled_with_pseudo, with_pseudo
from .matching import HOW, MATCH_RULES, VolumeAtlas, load_nifti
from .normalize import check_method, normalize, normalize_donor
from .probes import (
    DONOR_PROBES,
    POOLED_ONLY,
    SELECTION_METHODS,
    IntensityFilter,
    reannotate_probes,
    select_probes,
)
from .regions import (
    AGG_METRICS,
    REGION_AGG,
    centroid_combine,
    centroid_picks,
    combine_donors,
    gene_keep,
    region_values,
)
from .registry import check_choice
from .samples import (
    MIRROR_MODES,
    corrected_coordinates,
    hemisphere_mismatch,
    mirror_samples,
    similarity_threshold,
)

#: pipeline revision, part of every cache key (bump when cached products change meaning)
CACHE_VERSION = 2


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass
class ExpressionResult:
    """Output of :func:`get_expression_data`.

    Attributes
    ----------
    expression : DataFrame
        Regions × genes, index ``label`` (atlas label ids), columns gene symbols (abagen's
        shape). With ``return_donors``: the first donor's frame (see ``donors``).
    donors : dict[int, DataFrame] or None
        Per-donor regions × genes frames (``return_donors=True``; no gene drop).
    counts : DataFrame or None
        Regions × donors number of matched samples (``return_counts=True``).
    probes, genes, samples : DataFrame
        Explanation tables: every probe, gene and sample with what happened to it and why
        (built on first access, from what the run kept in memory).
    params : dict
        Every parameter as used.
    computed : dict[str, bool]
        Which atlas-independent products were computed in this call (False = cache hit).
    timings : dict[str, float]
        Seconds per step.
    """

    expression: pd.DataFrame
    donors: dict[int, pd.DataFrame] | None
    counts: pd.DataFrame | None
    params: dict[str, Any]
    computed: dict[str, bool] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    store_url: str = ""
    store_attrs: dict[str, Any] = field(default_factory=dict)
    #: the explanation tables: each a DataFrame or a function building it
    tables: dict[str, Any] = field(default_factory=dict, repr=False)

    def _table(self, name: str) -> pd.DataFrame:
        value = self.tables[name]
        if callable(value):
            value = self.tables[name] = value()
        return value

    @property
    def probes(self) -> pd.DataFrame:
        return self._table("probes")

    @property
    def genes(self) -> pd.DataFrame:
        return self._table("genes")

    @property
    def samples(self) -> pd.DataFrame:
        return self._table("samples")

    def methods(self) -> str:
        from .explain import methods_text

        return methods_text(self)

    def provenance(self) -> dict[str, Any]:
        from .explain import provenance

        return provenance(self)


@dataclass
class _DonorSamples:
    """One donor after sample QC: kept rows (duplicates for mirrored copies)."""

    donor: int
    annotation: pd.DataFrame      # kept samples, in abagen's order
    src: np.ndarray               # column in the donor's arrays of every kept sample
    table: pd.DataFrame           # explanation rows of every input and mirrored sample


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------
def _check_params(p: dict[str, Any]) -> None:
    SELECTION_METHODS.canonical(p["probe_selection"])
    check_choice("donor_probes", p["donor_probes"], DONOR_PROBES)
    if p["lr_mirror"] is not None:
        check_choice("lr_mirror", p["lr_mirror"], MIRROR_MODES)
    check_choice("match_rule", p.get("match_rule", "abagen"), MATCH_RULES)
    if p["missing"] not in (None, "centroids", "interpolate"):
        raise ConfigError(f"missing={p['missing']!r} is not supported; valid: None, "
                          "'centroids', 'interpolate'")
    for k in ("sample_norm", "gene_norm"):
        if p[k] is not None:
            if check_method(p[k]) == "batch":
                # abagen 0.1.3 normalises one donor at a time, so its batch correction sees
                # one batch and raises; the cross-donor correction is batch_correct()
                raise ConfigError(
                    f"{k}='batch' cannot apply here: samples are normalised one donor at a "
                    "time (as abagen does, which raises 'Cannot perform batch correction with "
                    "one batch'); correct donor effects across donors with "
                    "atlas_engine.pipeline.normalize.batch_correct on return_donors=True output")
    check_choice("region_agg", p["region_agg"], REGION_AGG)
    check_choice("agg_metric", p["agg_metric"], AGG_METRICS)
    if p["region_agg"] == "samples" and p["return_donors"]:
        raise ConfigError("region_agg='samples' cannot be combined with return_donors")
    if p["dtype"] not in ("float64", "float32"):
        raise ConfigError(f"dtype must be float64 or float32, got {p['dtype']!r}")


def _resolve_atlas(atlas: Any, atlas_info: Any) -> VolumeAtlas:
    from .atlases import resolve

    info = None
    if atlas_info is not None:
        info = (atlas_info if isinstance(atlas_info, pd.DataFrame)
                else pd.read_csv(resolve(atlas_info, "info")))
    if isinstance(atlas, (str, Path)):
        atlas = resolve(atlas, "image")
    if isinstance(atlas, VolumeAtlas):
        if info is not None:
            return VolumeAtlas(*_atlas_arrays(atlas), info)
        return atlas
    if isinstance(atlas, tuple):
        return VolumeAtlas(atlas[0], atlas[1], info)
    labels, affine = load_nifti(atlas)
    return VolumeAtlas(labels, affine, info)


def _atlas_arrays(atlas: VolumeAtlas) -> tuple[np.ndarray, np.ndarray]:
    vol = np.zeros(atlas.shape, dtype=np.int64)
    inv = np.linalg.inv(atlas.affine)
    ijk = np.rint(atlas.coords @ inv[:3, :3].T + inv[:3, 3]).astype(np.int64)
    vol[tuple(ijk.T)] = atlas.voxel_labels
    return vol, atlas.affine


# --------------------------------------------------------------------------------------------
# probes and samples
# --------------------------------------------------------------------------------------------
def probe_table(store: Any, reannotated: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(usable probes sorted by probe_id with a ``row`` column (store row), every store
    probe with its fate)``."""
    raw = store.probes.reset_index(drop=True).copy()
    raw["row"] = np.arange(len(raw))
    fate = raw[["probe_id", "probe_name", "gene_symbol", "entrez_id", "row"]].copy()
    fate["reason"] = ""
    if reannotated:
        table = reannotate_probes(raw)
        fate = fate.merge(table[["probe_id", "gene_symbol", "entrez_id"]].rename(
            columns={"gene_symbol": "reannotated_symbol", "entrez_id": "reannotated_entrez"}),
            on="probe_id", how="left")
        lost = fate["reannotated_symbol"].isna()
        fate.loc[lost, "reason"] = "dropped: not in the probe reannotation table"
    else:
        entrez = pd.to_numeric(raw["entrez_id"], errors="coerce")
        ok = entrez.notna() & (entrez != L.MISSING_INT)
        table = raw[ok.to_numpy()].sort_values("probe_id", kind="stable")
        fate.loc[~ok.to_numpy(), "reason"] = "dropped: no Entrez id"
    table = table.reset_index(drop=True)
    table["gene_symbol"] = table["gene_symbol"].astype(str)
    return table, fate


def donor_samples(
    store: Any, donor: int, corrected_mni: bool, lr_mirror: str | None, mni_table: Any = None
) -> _DonorSamples:
    """Sample QC of one donor (no similarity threshold, see :func:`_apply_similarity`)."""
    samples = store.samples
    annot = samples[samples["donor"] == donor].reset_index(drop=True).copy()
    annot["column"] = np.arange(len(annot))
    if corrected_mni:
        annot = corrected_coordinates(annot, mni_table)
    annot["copy"] = "original"
    src = np.arange(len(annot))
    if lr_mirror is not None:
        n_input = len(annot)
        annot, src = mirror_samples(annot, store.ontology, lr_mirror)
        annot = annot.reset_index(drop=True)
        annot.loc[n_input:, "copy"] = "mirror"
    keep, hemi, cls = hemisphere_mismatch(annot["structure_id"].to_numpy(),
                                          annot["mni_x"].to_numpy(), store.ontology)
    annot["hemisphere"] = hemi
    annot["structure"] = cls
    table = annot[["donor", "sample_id", "well_id", "copy", "structure_id", "structure_acronym",
                   "mni_x", "mni_y", "mni_z", "hemisphere", "structure"]].copy()
    table = table.rename(columns={"structure": "class"})
    table["status"] = np.where(keep, "kept", "dropped")
    table["reason"] = [
        "" if k else f"dropped: hemisphere mismatch ({h} structure at mni_x={x:g})"
        for k, h, x in zip(keep.tolist(), hemi.tolist(), annot["mni_x"].tolist(), strict=True)
    ]
    table["qc_row"] = -1
    table.loc[keep, "qc_row"] = np.arange(int(keep.sum()))
    kept = annot[keep].reset_index(drop=True)
    return _DonorSamples(donor, kept, np.asarray(src)[keep], table)


def _array(store: Any, donor: int, name: str) -> BlockArray:
    return passes.open_array(store.url, donor, name)


def _apply_similarity(store: Any, ds: _DonorSamples, rows: np.ndarray, t: float) -> None:
    """abagen's similarity threshold on the usable probes (before the intensity filter)."""
    x = passes.read_rows(_array(store, ds.donor, L.EXPRESSION), rows)[:, ds.src]
    keep = similarity_threshold(x, t)
    qc = ds.table["qc_row"].to_numpy()
    for i in np.flatnonzero(qc >= 0):
        if not keep[qc[i]]:
            ds.table.loc[i, ["status", "reason"]] = ["dropped", f"dropped: similarity "
                                                     f"threshold {t:g}"]
    new_qc = np.full(len(qc), -1)
    kept_idx = np.flatnonzero(qc >= 0)[keep[qc[qc >= 0]]]
    new_qc[kept_idx] = np.arange(len(kept_idx))
    ds.table["qc_row"] = new_qc
    ds.annotation = ds.annotation[keep].reset_index(drop=True)
    ds.src = ds.src[keep]


# --------------------------------------------------------------------------------------------
# block-wise reductions over the store (Dask tasks, :mod:`.passes`)
# --------------------------------------------------------------------------------------------
def ibf_signal(store: Any, donors: Sequence[_DonorSamples], rows: np.ndarray
               ) -> list[np.ndarray]:
    """Per donor the PACall count of each probe (``rows``, store rows) over the kept sample
    columns (a column kept twice counts twice): one pass over the PACall blocks."""
    return passes.ibf_signal(store.url, [ds.donor for ds in donors],
                             [ds.src for ds in donors], rows)


def structure_means(store: Any, ds: _DonorSamples, rows: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted structure ids, len(rows) × n_structures means)`` of one donor's kept samples
    (:func:`.passes.structure_means`)."""
    return passes.structure_means(store.url, ds.donor, ds.src,
                                  ds.annotation["structure_id"].to_numpy(), rows)


def ds_scores(store: Any, donors: Sequence[_DonorSamples], rows: np.ndarray) -> np.ndarray:
    """Differential stability of the probes at store ``rows`` (:func:`.passes.ds_scores`)."""
    return passes.ds_scores(store.url, [ds.donor for ds in donors], [ds.src for ds in donors],
                            [ds.annotation["structure_id"].to_numpy() for ds in donors], rows)


def pooled_moments(counts: np.ndarray, means: np.ndarray, variances: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pooled mean and std (ddof=1) from per-donor (D, P) counts, means and variances."""
    n = counts.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(counts > 0, means * counts, 0.0).sum(axis=0) / n
        within = np.where(counts > 1, variances * (counts - 1), 0.0).sum(axis=0)
        between = np.where(counts > 0, counts * (means - mean) ** 2, 0.0).sum(axis=0)
        var = np.where(n > 1, (within + between) / (n - 1), np.nan)
    return np.where(n > 0, mean, np.nan), np.sqrt(var)


# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# probe selection
# --------------------------------------------------------------------------------------------
def _scores(store: Any, donors: list[_DonorSamples], kept: pd.DataFrame, method: str,
            mode: str) -> list[np.ndarray] | None:
    """Scores for ``select_probes`` computed from the store (None for ``average``)."""
    rows = kept["row"].to_numpy()
    if method == "average":
        return None
    if method == "diff_stability":
        return [ds_scores(store, donors, rows)]
    if method == "rnaseq":  # the store's rnaseq/{id} groups (see .rnaseq)
        from .rnaseq import rnaseq_scores

        return [rnaseq_scores(store, donors, kept)]
    if method in ("max_intensity", "max_variance"):
        mom = passes.probe_moments(store.url, [ds.donor for ds in donors],
                                   [ds.src for ds in donors], rows)
        c, m, v = (np.stack([x[i] for x in mom]) for i in range(3))
        if mode == "aggregate":
            mean, std = pooled_moments(c, m, v)
            return [mean if method == "max_intensity" else std]
        out = []
        for k in range(len(donors)):
            mean, std = pooled_moments(c[k:k + 1], m[k:k + 1], v[k:k + 1])
            out.append(mean if method == "max_intensity" else std)
        return out
    # pc_loading / corr_*: the probes of multi-probe genes, all donors' samples in memory
    sym = kept["gene_symbol"].to_numpy()
    _, inv, cnt = np.unique(sym, return_inverse=True, return_counts=True)
    multi = np.flatnonzero(cnt[inv.reshape(-1)] > 1)
    sub = kept.iloc[multi].reset_index(drop=True)
    data = [passes.read_rows(_array(store, ds.donor, L.EXPRESSION),
                             sub["row"].to_numpy())[:, ds.src] for ds in donors]
    sids = [ds.annotation["structure_id"].to_numpy() for ds in donors]
    part = select_probes(data, sids, sub, method, mode)
    cols = ["score"] if mode == "aggregate" else [f"score_{k}" for k in range(len(donors))]
    out = []
    for c in cols:
        full = np.full(len(kept), np.nan)
        full[multi] = part.table[c].to_numpy()
        out.append(full)
    return out


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _zarr_one_fetch() -> Any:
    """zarr's ``async.concurrency`` at 1 for the block. zarr is not imported for it (a call
    served from the cache never needs zarr: ~0.15 s of imports): when it is not loaded yet,
    the setting is passed through the environment zarr reads its configuration from when
    (if) it is imported, and zarr's configuration is refreshed afterwards."""
    import os
    import sys

    if "zarr" in sys.modules:
        import zarr

        with zarr.config.set({"async.concurrency": 1}):
            yield
        return
    name = "ZARR_ASYNC__CONCURRENCY"
    before = os.environ.get(name)
    os.environ[name] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
        if "zarr" in sys.modules:
            sys.modules["zarr"].config.refresh()


def _one_fetch_per_call(fn: Any) -> Any:
    """Run ``fn`` with zarr fetching one chunk at a time (the passes run their own threads
    over blocks: same speed, 60–100 MB less transient chunk memory); restored afterwards."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _zarr_one_fetch():
            return fn(*args, **kwargs)

    return wrapper


@_one_fetch_per_call
def get_expression_data(
    store: Any,
    atlas: Any,
    atlas_info: Any = None,
    *,
    ibf_threshold: float = 0.5,
    probe_selection: str = "diff_stability",
    donor_probes: str = "aggregate",
    sim_threshold: float | None = None,
    lr_mirror: str | None = None,
    missing: str | None = None,
    tolerance: float = 2,
    sample_norm: str | None = "srs",
    gene_norm: str | None = "srs",
    norm_matched: bool = True,
    norm_structures: bool = False,
    region_agg: str = "donors",
    agg_metric: str = "mean",
    corrected_mni: bool = True,
    reannotated: bool = True,
    return_donors: bool = False,
    return_counts: bool = False,
    donors: str | Sequence[int] = "all",
    dtype: str = "float64",
    cache: bool = True,
    out: Any = None,
    match_rule: str = "abagen",
) -> ExpressionResult:
    """Region × gene expression from a converted store, as ``abagen.get_expression_data``.

    Parameters are abagen's (same names and defaults), plus:

    store : AtlasStore or path/URL
        A store written by ``atlas-engine convert``.
    atlas : path to a NIfTI label image, ``(labels, affine)``, :class:`VolumeAtlas` or the
        name of a shipped atlas ("desikan-killiany", :mod:`.atlases`)
        A group (MNI) volumetric atlas.
    atlas_info : path to a CSV, DataFrame or shipped atlas name, optional
        Columns id, hemisphere (L/R/B), structure (broad class).
    donors : "all" or donor ids
    dtype : "float64" (parity) or "float32" (values are computed in float64 either way;
        the output frames are cast).
    cache : reuse / write the atlas-independent products in the store's ``cache/`` group.
    out : path of a Zarr directory, optional
        Stream the regions × genes result there block by block instead of holding it
        (voxel-level atlases); ``expression`` is then a lazy xarray DataArray over it
        (:mod:`.output`).
    match_rule : "abagen" (default: abagen 0.1.3's matching) or "majority" (with atlas_info,
        the region with most voxels near the sample wins instead of the nearest centroid;
        see :mod:`.matching` and docs/abagen-pipeline.md).

    Returns
    -------
    ExpressionResult
    """
    from ..store.open import AtlasStore, open_store

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    st = store if isinstance(store, AtlasStore) else open_store(store)
    if cache and not isinstance(store, AtlasStore):
        st.cache_tables()  # the probe and sample tables as plain arrays in the store cache
    params = dict(ibf_threshold=float(ibf_threshold), probe_selection=probe_selection,
                  donor_probes=donor_probes, sim_threshold=sim_threshold, lr_mirror=lr_mirror,
                  missing=missing, tolerance=tolerance, sample_norm=sample_norm,
                  gene_norm=gene_norm, norm_matched=bool(norm_matched),
                  norm_structures=bool(norm_structures), region_agg=region_agg,
                  agg_metric=agg_metric, corrected_mni=bool(corrected_mni),
                  reannotated=bool(reannotated), return_donors=bool(return_donors),
                  return_counts=bool(return_counts), dtype=dtype)
    if match_rule != "abagen":  # recorded only when it departs from abagen
        params["match_rule"] = match_rule
    _check_params(params)
    method = SELECTION_METHODS.canonical(probe_selection)
    use = list(st.donors) if donors == "all" else [int(d) for d in donors]
    bad = sorted(set(use) - set(st.donors))
    if bad:
        raise ConfigError(f"donor(s) {bad} not in the store (complete donors: {st.donors})")
    if method == "diff_stability" and len(use) < 2:
        raise ConfigError("probe_selection='diff_stability' needs at least two donors")
    params["donors"] = use
    warm = threading.Thread(target=_warm_up, name="kernel-warm-up", daemon=True)
    warm.start()
    vatlas = _resolve_atlas(atlas, atlas_info)

    # ---- probes and sample QC -----------------------------------------------------------
    t0 = time.perf_counter()
    probes, probe_fate = probe_table(st, params["reannotated"])
    dsamples = [donor_samples(st, d, params["corrected_mni"], lr_mirror) for d in use]
    if sim_threshold is not None:
        for ds in dsamples:
            _apply_similarity(st, ds, probes["row"].to_numpy(), float(sim_threshold))
    timings["samples"] = time.perf_counter() - t0

    # ---- atlas-independent: IBF, selection, selected raw rows (cached) ------------------
    cache_params = {k: params[k] for k in ("probe_selection", "donor_probes", "sim_threshold",
                                           "lr_mirror", "corrected_mni", "reannotated",
                                           "ibf_threshold")}
    cache_params.update(donors=use, method=method, version=CACHE_VERSION)
    store_cache = StoreCache(st.url, _store_identity(st), enabled=cache)
    key = store_cache.key("selection", cache_params)
    hit = store_cache.load(key)
    computed = {"ibf": hit is None, "selection": hit is None}
    mode = "aggregate" if method in POOLED_ONLY else donor_probes
    t0 = time.perf_counter()
    if hit is None:
        signal = ibf_signal(st, dsamples, probes["row"].to_numpy())
        timings["ibf"] = time.perf_counter() - t0
        _release_memory()
    else:
        signal = [hit[f"signal_{k}"] for k in range(len(use))]
    ibf = _ibf_from_signal(signal, [len(ds.src) for ds in dsamples], ibf_threshold)
    kept = probes[ibf.keep].reset_index(drop=True)

    t0 = time.perf_counter()
    if hit is None:
        scores = _scores(st, dsamples, kept, method, mode)
    else:
        n_sc = int(hit["n_scores"][()])
        scores = [hit[f"score_{k}"] for k in range(n_sc)] if n_sc else None
    if method == "average":
        selection = select_probes([np.zeros((len(kept), 0))] * len(use),
                                  [np.zeros(0)] * len(use), kept, method, donor_probes)
    else:
        selection = select_probes([None] * len(use), [None] * len(use), kept, method,
                                  donor_probes, scores=scores)
    timings["selection"] = time.perf_counter() - t0
    _release_memory()
    writer = store_cache.writer(key) if hit is None else None
    if writer is not None:
        for k, sig in enumerate(signal):
            writer.add(f"signal_{k}", sig)
        for k, sc in enumerate(scores or []):
            writer.add(f"score_{k}", sc)
        writer.add("n_scores", np.asarray(0 if scores is None else len(scores)))
        writer.commit({"params": cache_params})
    # each donor's chosen raw rows (genes × all of its columns): an entry of their own,
    # read only when the sample-normalised matrices below are not cached, and written only
    # for sample_norm=None (they are re-read from the store for another sample_norm)
    rows_key = store_cache.key("rows", {"selection": key, "version": CACHE_VERSION})
    rows_hit = store_cache.load(rows_key) if hit is not None else None
    rows_writer = None
    computed["rows"] = False

    def chosen_rows(k: int) -> np.ndarray:
        """Genes × ALL of donor k's columns: from the cache, or read (and cached)."""
        nonlocal rows_writer
        if rows_hit is not None:
            return rows_hit[f"raw_{k}"]
        if not computed["rows"]:
            computed["rows"] = True
            # kept only when they are what the atlas-dependent part starts from (the
            # sample-normalised matrices are cached instead otherwise)
            rows_writer = store_cache.writer(rows_key) if sample_norm is None else None
        arr = _array(st, dsamples[k].donor, L.EXPRESSION)
        if method == "average":
            out = passes.gene_means(arr, kept["row"].to_numpy(), selection.codes,
                                    len(selection.genes))
        else:
            out = passes.read_rows(arr, kept["row"].to_numpy()[selection.rows[k]])
        if rows_writer is not None:
            rows_writer.add(f"raw_{k}", out)
        return out

    # ---- atlas-dependent: matching (all donors), then one donor at a time ---------------
    t0 = time.perf_counter()
    genes = np.asarray(selection.genes)
    all_labels = vatlas.labels[vatlas.labels != 0]
    labels = []
    for ds in dsamples:
        a = ds.annotation
        coords = a[["mni_x", "mni_y", "mni_z"]].to_numpy(dtype=np.float64)
        lab, how, radius = vatlas.label_samples(
            coords, tolerance, a["hemisphere"].to_numpy(), a["structure"].to_numpy(),
            rule=match_rule, return_how=True)
        _explain_matching(ds, vatlas, coords, lab, how, radius, tolerance)
        labels.append(lab)
    counts = _counts(labels, all_labels, use)
    empty = np.zeros(0, dtype=np.int64)
    if missing == "centroids":
        seen = np.unique(np.concatenate([lab[lab != 0] for lab in labels]))
        empty = np.setdiff1d(vatlas.labels, seen)
    timings["match"] = time.perf_counter() - t0
    sink = None
    if out is not None:
        from .output import RegionStream, check_stream_params

        check_stream_params(params)
        params["out"] = str(out)
        sink = RegionStream(out, vatlas, all_labels, empty, len(selection.genes), missing,
                            region_agg, agg_metric)

    # sample_norm works on each sample over the selected genes: independent of the atlas and
    # of which other samples are kept, so each donor's sample-normalised matrix (genes × all
    # of its columns) is cached too, when the raw rows hold no NaN (abagen skips genes that
    # are NaN in every kept sample, which would make it depend on the sample set)
    norm_key = norm_hit = norm_writer = None
    if sample_norm is not None:
        norm_key = store_cache.key("samplenorm", {"selection": key, "version": CACHE_VERSION,
                                                  "sample_norm": check_method(sample_norm)})
        norm_hit = store_cache.load(norm_key) if hit is not None else None
        norm_writer = store_cache.writer(norm_key) if norm_hit is None else None
    computed["sample_norm"] = sample_norm is not None and norm_hit is None

    t_sample_norm = [0.0, 0.0]  # normalising, writing the cache

    striped: dict[int, StripedMatrix] | None = None   # None: not computed yet

    def striped_sample_norm(k: int) -> StripedMatrix | None:
        """Donor k's chosen rows sample-normalised into the cache entry one stripe of columns
        (a chunk column of the store) at a time. On the first call every donor's stripes are
        read, normalised over the genes and written by Dask tasks (:func:`.passes.
        stripe_tasks`), so no genes × samples matrix is ever in memory. None (and the entry
        dropped) when a stripe holds NaN (see above) or cannot be written."""
        nonlocal norm_writer, striped
        if striped is None:
            computed["rows"] = True
            tasks = []
            for i, ds in enumerate(dsamples):
                tmp = norm_writer.tmp
                tasks += passes.stripe_tasks(
                    _array(st, ds.donor, L.EXPRESSION),
                    kept["row"].to_numpy()[selection.rows[i]], sample_norm,
                    lambda j, i=i, tmp=tmp: str(tmp / f"sn_{i}_{j}.npy"))
            done = passes.compute(tasks)
            t_sample_norm[0] += sum(t for _, t, _ in done)
            t_sample_norm[1] += sum(t for _, _, t in done)
            if any(status != "ok" for status, _, _ in done):
                norm_writer.abort()
                norm_writer = None
                striped = {}
            else:
                striped = {i: StripedMatrix.open(norm_writer.tmp, f"sn_{i}")
                           for i in range(len(dsamples))}
        return striped.get(k)

    def base_rows(k: int) -> tuple[np.ndarray, bool]:
        """Genes × all of donor k's columns, sample-normalised (True) or raw (False: the
        sample normalisation is left to the per-atlas path)."""
        nonlocal norm_writer
        if norm_hit is not None:
            return StripedMatrix.open(norm_hit.path, f"sn_{k}"), True
        if norm_writer is not None and sample_norm is not None and method != "average":
            striped = striped_sample_norm(k)
            if striped is not None:
                return striped, True
        raw = chosen_rows(k)
        if sample_norm is None:
            return raw, True
        if np.isnan(raw).any():
            raw = np.array(raw)  # off the cache file before the entry is dropped
            if norm_writer is not None:
                norm_writer.abort()
                norm_writer = None
            return raw, False
        t1 = time.perf_counter()
        sn = sample_normalise(raw, sample_norm)  # in place for srs: raw is not used again
        del raw
        t_sample_norm[0] += time.perf_counter() - t1
        if norm_writer is not None:
            t1 = time.perf_counter()
            norm_writer.add(f"sn_{k}", sn)
            t_sample_norm[1] += time.perf_counter() - t1
        return sn, True

    t0 = time.perf_counter()
    t_read = 0.0
    per_donor: list[np.ndarray] = []
    # the mean over donors (NaN skipped) kept as a running sum and count when nothing else
    # needs the per-donor values: the same additions in the same (donor) order
    running = region_agg == "donors" and agg_metric == "mean" and not return_donors \
        and sink is None \
        and not len(empty)
    # (genes × regions: the layout srs_region_means returns, so no strided passes)
    acc_sum = np.zeros((len(selection.genes), len(all_labels))) if running else None
    acc_cnt = np.zeros(acc_sum.shape, dtype=np.int32) if running else None

    def add_donor(values: np.ndarray) -> None:
        if not running:
            per_donor.append(values)
            return
        v = values.T
        ok = ~np.isnan(v)
        np.add(acc_sum, v, out=acc_sum, where=ok)
        np.add(acc_cnt, ok, out=acc_cnt, casting="unsafe")
    pooled: list[np.ndarray] = []
    picks, dists = [], []
    with_info = vatlas.atlas_info is not None
    for k, ds in enumerate(dsamples):
        t1 = time.perf_counter()
        base, normalised = base_rows(k)
        t_read += time.perf_counter() - t1
        a = ds.annotation
        lab = labels[k]
        cols = ds.src
        coords = a[["mni_x", "mni_y", "mni_z"]].to_numpy(dtype=np.float64)
        hemi = a["hemisphere"].to_numpy()
        cls = a["structure"].to_numpy()
        if norm_matched:
            nz = lab != 0
            cols, lab, coords, hemi, cls = cols[nz], lab[nz], coords[nz], hemi[nz], cls[nz]
        classes = cls.astype(str) if norm_structures else None
        if normalised and gene_norm is not None and len(cols):
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
        if (normalised and region_agg == "donors" and agg_metric == "mean" and not len(empty)
                and classes is None and gene_norm is not None and missing != "interpolate"
                and sink is None
                and check_method(gene_norm) == "srs"):
            # the default path: gene norm and region means block by block (no genes ×
            # samples matrix)
            add_donor(srs_region_means(base, cols, _label_codes(lab, all_labels),
                                       len(all_labels)).T)
            del base
            _release_memory()
            continue
        if normalised:
            xg = gene_normalise(base, cols, gene_norm, classes)  # genes × samples
        else:
            x = base[:, cols].T
            if len(x):
                x = normalize_blocks(x, sample_norm, gene_norm, classes)
            xg = np.ascontiguousarray(x.T)
        del base
        x = xg.T  # samples × genes (view)
        if sink is not None:  # spilled; the output is written after the last donor
            sink.add_donor(xg, lab, coords, hemi, cls)
            del x, xg
            _release_memory()
            continue
        if len(empty):
            m = lab != 0
            pk, dist = centroid_picks(vatlas, x[m], coords[m], empty,
                                      hemi[m] if with_info else None,
                                      cls[m] if with_info else None)
            picks.append(pk)
            dists.append(dist)
        fill_i = donor_fill(vatlas, lab, coords, hemi, cls) if missing == "interpolate" \
            else empty_fill(len(lab))
        if region_agg == "donors" and agg_metric == "mean":
            codes = _label_codes(lab, all_labels)
            add_donor(with_pseudo(group_mean_rows(xg, codes, len(all_labels)).T, fill_i, x,
                                  all_labels))
        elif region_agg == "donors":
            add_donor(with_pseudo(region_values(x, lab, all_labels, agg_metric), fill_i, x,
                                  all_labels))
        else:
            pooled.append(pooled_with_pseudo(x, lab, fill_i))
        del x, xg
        _release_memory()
    if norm_writer is not None:
        norm_writer.commit({"params": {"selection": key, "sample_norm": sample_norm}})
    if rows_writer is not None:  # every donor's rows were read (and added) above
        rows_writer.commit({"params": {"selection": key}})
    timings["read_rows"] = t_read - sum(t_sample_norm)
    timings["sample_norm"], timings["cache_write"] = t_sample_norm
    timings["normalise"] = time.perf_counter() - t0 - t_read

    t0 = time.perf_counter()
    fill = centroid_combine(picks, dists) if len(empty) and sink is None else None
    fill_rows = np.searchsorted(all_labels, empty)
    if sink is not None:
        combined = None
    elif region_agg == "donors":
        if fill is not None:
            for v in per_donor:
                v[fill_rows] = fill
        if running:
            with np.errstate(invalid="ignore", divide="ignore"):
                combined = np.ascontiguousarray(np.where(acc_cnt > 0, acc_sum / acc_cnt,
                                                         np.nan).T)
            del acc_sum, acc_cnt
        else:
            combined = None if return_donors else combine_donors(per_donor, agg_metric)
    else:
        combined = region_values(np.vstack([v for v, _ in pooled]),
                                 np.concatenate([lab for _, lab in pooled]), all_labels,
                                 agg_metric)
        if fill is not None:
            combined[fill_rows] = fill
    timings["aggregate"] = time.perf_counter() - t0

    out_dtype = np.float64 if dtype == "float64" else np.float32
    out_dtype = np.float64 if dtype == "float64" else np.float32
    index = pd.Index(all_labels, name="label")
    donor_frames = None
    if return_donors:
        donor_frames = {d: pd.DataFrame(v.astype(out_dtype), index=index.copy(),
                                        columns=pd.Index(genes, name="gene_symbol"))
                        for d, v in zip(use, per_donor, strict=True)}
        frame = donor_frames[use[0]]
        drop_mask = np.zeros(len(genes), dtype=bool)
    elif sink is not None:
        frame, keep_genes = sink.write(genes, out_dtype)
        drop_mask = ~keep_genes
    else:
        keep_genes = gene_keep(combined)
        frame = pd.DataFrame(combined[:, keep_genes].astype(out_dtype), index=index,
                             columns=pd.Index(genes[keep_genes], name="gene_symbol"))
        drop_mask = ~keep_genes

    from .explain import gene_table, probe_explanations, sample_table

    # the explanation tables are built when first asked for (most calls never look)
    tables = {
        "probes": lambda: probe_explanations(probe_fate, probes, ibf, selection, kept),
        "genes": lambda: gene_table(probe_fate, probes, ibf, selection, genes, drop_mask),
        "samples": lambda: sample_table(dsamples),
    }
    timings["total"] = time.perf_counter() - t_start
    return ExpressionResult(
        expression=frame, donors=donor_frames,
        counts=counts if return_counts else None, params=params,
        computed=computed, timings=timings, store_url=st.url, store_attrs=dict(st.attrs),
        tables=tables)


def normalize_blocks(x: np.ndarray, sample_norm: str | None, gene_norm: str | None,
                     classes: np.ndarray | None = None, block: int = 4096) -> np.ndarray:
    """:func:`~.normalize.normalize_donor` on samples × genes ``x``, a block of samples
    (sample_norm) or genes (gene_norm) at a time, so temporaries stay small. Both steps are
    independent per sample / per gene, so the result is the same. The default ``srs`` runs in
    a numba kernel (:mod:`._srs`) as Dask tasks. A float64 ``x`` may be overwritten."""
    from .passes import srs_columns

    out = np.asarray(x, dtype=np.float64)
    fast = ("srs", "scaled_rsig", "scaled_robust_sigmoid")
    if sample_norm in fast:
        # genes NaN in every sample are left out (and stay NaN), as normalize() does
        ok = ~np.all(np.isnan(out), axis=0)
        out = srs_columns(out.T).T if ok.all() else _on_columns(out, ok, lambda v: srs_columns(
            v.T).T)
        sample_norm = None
    if gene_norm in fast and classes is None:
        ok = ~np.all(np.isnan(out), axis=1)    # samples NaN for every gene are skipped
        if ok.all():
            out = srs_columns(out)
        else:
            res = np.full(out.shape, np.nan)
            res[ok] = srs_columns(out[ok])
            out = res
        gene_norm = None
    if sample_norm is not None:
        for a in range(0, out.shape[0], block // 8):
            out[a:a + block // 8] = normalize_donor(out[a:a + block // 8], sample_norm, None)
    if gene_norm is not None:
        for a in range(0, out.shape[1], block):
            out[:, a:a + block] = normalize_donor(out[:, a:a + block], None, gene_norm,
                                                  classes)
    return out


def sample_normalise(raw: np.ndarray, method: str) -> np.ndarray:
    """Genes × samples ``raw`` (no NaN) with each sample (column) normalised over the genes
    by ``method`` (abagen's ``sample_norm``); ``srs`` overwrites a float64 ``raw``."""
    if check_method(method) == "srs":
        return passes.srs_columns(raw, out=raw if raw.dtype == np.float64 else None)
    return normalize(raw, method, axis=0)


def gene_normalise(base: np.ndarray, cols: np.ndarray, method: str | None,
                   classes: np.ndarray | None = None) -> np.ndarray:
    """Genes × samples (C order): the columns ``cols`` of genes × samples ``base`` (repeats
    allowed), each gene normalised over those samples by ``method`` (abagen's ``gene_norm``;
    per value of ``classes`` when given). ``srs`` without classes runs in one numba pass
    straight from ``base``."""
    if method is not None and classes is None and check_method(method) == "srs":
        return passes.srs_rows(base, cols)
    if method is None or not len(cols):
        return np.ascontiguousarray(base[:, cols])
    x = np.ascontiguousarray(base[:, cols].T)
    return np.ascontiguousarray(normalize_blocks(x, None, method, classes).T)


def srs_region_means(base: np.ndarray, cols: np.ndarray, codes: np.ndarray, n_groups: int
                     ) -> np.ndarray:
    """Genes × groups: each gene of genes × samples ``base`` normalised (srs) over the
    samples ``cols``, then averaged per group ``codes`` (one per entry of ``cols``; -1 left
    out), one block of genes at a time."""
    return passes.srs_rows(base, cols, codes, n_groups)


def _label_codes(lab: np.ndarray, all_labels: np.ndarray) -> np.ndarray:
    """Position of each sample's label in the sorted ``all_labels`` (-1: not there, e.g. 0)."""
    if not len(all_labels):
        return np.full(len(lab), -1, dtype=np.int64)
    pos = np.clip(np.searchsorted(all_labels, lab), 0, len(all_labels) - 1)
    return np.where(all_labels[pos] == lab, pos, -1).astype(np.int64)


def _on_columns(x: np.ndarray, ok: np.ndarray, func: Any) -> np.ndarray:
    """``func`` applied to the columns ``ok`` of ``x``; the other columns NaN."""
    res = np.full(x.shape, np.nan)
    res[:, ok] = func(x[:, ok])
    return res


def _warm_up() -> None:
    """:func:`._srs.warm_up` (never raises: a failure here shows up in the real call)."""
    try:
        from ._srs import warm_up

        warm_up()
    except Exception:  # noqa: BLE001
        pass


def _release_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``; no-op elsewhere). The
    block-wise passes free many large temporaries from worker threads; without this their
    arenas keep the pages and the resident size ratchets up between steps."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _ibf_from_signal(signal: list[np.ndarray], n: list[int], threshold: float
                     ) -> IntensityFilter:
    """The pooled intensity filter (:func:`~.probes.intensity_filter`'s rule) from per-donor
    PACall sums and sample counts."""
    tot = np.sum(np.stack(signal), axis=0)
    total_n = int(np.sum(n))
    t = float(np.clip(threshold, 0.0, 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = tot / total_n
    return IntensityFilter(frac >= t, frac, tot, np.asarray(total_n), t)


def _store_identity(st: Any) -> dict[str, Any]:
    attrs = dict(st.attrs)
    return {"attrs": attrs, "url": str(Path(st.url).resolve()) if "://" not in st.url
            else st.url}


def _counts(labels: list[np.ndarray], all_labels: np.ndarray, donors: list[int]
            ) -> pd.DataFrame:
    from .regions import sample_counts

    c = sample_counts(labels, all_labels)
    return pd.DataFrame(c, index=pd.Index(all_labels, name="label"),
                        columns=pd.Index(donors, name="donor"))


def _explain_matching(ds: _DonorSamples, atlas: VolumeAtlas, coords: np.ndarray,
                      lab: np.ndarray, how: np.ndarray, radius: np.ndarray,
                      tolerance: float) -> None:
    """Fill label/match/radius/status/reason of one donor's kept samples in its explanation
    table (``match``: how the sample matched, :data:`~.matching.HOW`)."""
    qc = ds.table["qc_row"].to_numpy()
    idx = np.flatnonzero(qc >= 0)
    order = qc[idx]
    rejected = np.flatnonzero(how == 4)
    free = np.zeros(len(lab), dtype=np.int64)
    if rejected.size:  # the region the hemisphere/class filter refused
        free[rejected] = atlas.label_samples(coords[rejected], tolerance)
    labels = np.zeros(len(qc), dtype=np.int64)
    labels[idx] = lab[order]
    ds.table["label"] = labels
    match = np.full(len(qc), "", dtype=object)
    match[idx] = [HOW[int(h)] for h in how[order].tolist()]
    ds.table["match"] = match
    rad = np.full(len(qc), np.nan)
    rad[idx] = np.where(radius[order] >= 0, radius[order], np.nan)
    ds.table["match_radius_mm"] = rad
    reasons = ds.table["reason"].to_numpy().copy()
    status = ds.table["status"].to_numpy().copy()
    for i, j in zip(idx.tolist(), order.tolist(), strict=True):
        h, r = int(how[j]), int(radius[j])
        if lab[j] != 0:
            status[i] = "matched"
            if h == 1:
                reasons[i] = f"matched to region {lab[j]}: inside a labelled voxel"
            elif h == 3:
                reasons[i] = (f"matched to region {lab[j]}: several regions within {r} mm, "
                              "nearest centroid")
            else:
                reasons[i] = f"matched to region {lab[j]}: within {r} mm"
        elif h == 4:
            status[i] = "unmatched"
            reasons[i] = (f"unmatched: region {free[j]} within {tolerance:g} mm has another "
                          "hemisphere or class")
        else:
            status[i] = "unmatched"
            reasons[i] = f"unmatched: no atlas voxel within {tolerance:g} mm (too far)"
    ds.table["status"] = status
    ds.table["reason"] = reasons

