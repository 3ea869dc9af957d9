"""abagen's ``get_expression_data`` on a converted store, in bounded memory.

:func:`get_expression_data` reads top to bottom as abagen's steps (docs/abagen-pipeline.md);
each step lives in a module named for what it does:

1. parameters validated once (:mod:`.params`), the atlas resolved (:mod:`.atlas_input`);
2. the probe table and each donor's sample QC (:mod:`.sample_qc`);
3. the intensity filter and 4. the probe-selection scores (:mod:`.scoring`), read from the
   store by Dask tasks over (donor, chunk row) (:mod:`.passes`, on one block reader);
5. each donor's chosen rows, raw or sample-normalised (:mod:`.chosen`);
6. samples matched to regions (:mod:`.match_samples`);
7. gene normalisation and region values per donor, combined across donors
   (:mod:`.region_pass`, :mod:`.donor_norm`);
8. the result frames and the explanation tables (:mod:`.result`, :mod:`.explain`).

Steps 3–5 do not depend on the atlas: they are cached in the store (:mod:`.cache`) and reused
by later calls with the same sample/probe parameters. Every pass over the store's arrays is a
Dask graph computed by the active scheduler: Dask's threads, or the workers of a
``dask.distributed`` client (``aggregate --workers`` / ``--scheduler``).
"""

from __future__ import annotations

import functools
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..choices import (
    AGG_METRICS,
    DONOR_PROBES,
    MATCH_RULES,
    MIRROR_MODES,
    MISSING,
    NORMALIZER_NAMES,
    PROBE_SELECTIONS,
    REGION_AGG,
)
from ..errors import ConfigError, DamagedCacheError
from ..malloc import trim
from .atlas_input import resolve_atlas
from .cache import CACHE_GROUP, StoreCache
from .chosen import ChosenRows
from .donor_norm import gene_normalise, normalize_blocks, sample_normalise, srs_region_means
from .match_samples import match_donors, sample_counts_frame
from .params import CACHE_VERSION, PipelineParams
from .probes import select_probes
from .region_pass import RegionPass
from .regions import gene_keep
from .registry import fill_choices
from .result import DonorSamples, ExpressionResult
from .sample_qc import apply_similarity, donor_samples, probe_table
from .scoring import (
    ds_scores,
    ibf_from_signal,
    ibf_signal,
    pooled_moments,
    selection_scores,
    structure_means,
)

__all__ = [
    "CACHE_VERSION", "DonorSamples", "ExpressionResult", "PipelineParams", "donor_samples",
    "ds_scores", "gene_normalise", "get_expression_data", "ibf_signal", "normalize_blocks",
    "pooled_moments", "probe_table", "sample_normalise", "srs_region_means",
    "structure_means",
]


def _recompute_damaged_cache(fn: Any) -> Any:
    """Run ``fn``; when a cache entry turns out damaged as it is read (a stripe segment
    failing its checksum: :class:`~atlas_engine.errors.DamagedCacheError`), remove the entry
    and run ``fn`` once more, which recomputes the product from the store."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DamagedCacheError as exc:
            entry = Path(exc.entry)
            if entry.parent.name == CACHE_GROUP:
                shutil.rmtree(entry, ignore_errors=True)
            return fn(*args, **kwargs)

    return wrapper


@fill_choices(
    probe_selection=PROBE_SELECTIONS, donor_probes=DONOR_PROBES, lr_mirror=MIRROR_MODES,
    missing=MISSING, region_agg=REGION_AGG, agg_metric=AGG_METRICS, match_rule=MATCH_RULES,
    norm=NORMALIZER_NAMES)
@_recompute_damaged_cache
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

    abagen 0.1.3's parameters keep its names, defaults and meaning (each step is described in
    docs/abagen-pipeline.md); the last six are this engine's.

    Parameters
    ----------
    store : AtlasStore or str
        A store written by ``atlas-engine convert`` (path or URL).
    atlas : str, nibabel image, tuple or VolumeAtlas
        A group (MNI) volumetric atlas: a NIfTI label image (its path, or the image as
        nibabel or nilearn gives it), ``(labels, affine)``, a
        :class:`~.matching.VolumeAtlas`, or the name of a shipped atlas
        (``"desikan-killiany"``, :mod:`.atlases`).
    atlas_info : str or DataFrame, optional
        Columns ``id``, ``hemisphere`` (L/R/B) and ``structure`` (broad class), as a CSV path,
        a DataFrame or a shipped atlas name. With it, samples match only regions of their own
        hemisphere and class.
    ibf_threshold : float
        Intensity filter, in [0, 1]: a probe is kept when it is above background (PACall) in
        more than this share of the samples.
    probe_selection : str
        How one probe is chosen per gene: <choices:probe_selection>.
    donor_probes : str
        Select probes on the donors pooled, per donor, or the probe most donors chose:
        <choices:donor_probes>.
    sim_threshold : float, optional
        Drop a donor's samples whose summed correlation with its other samples is below
        mean − ``sim_threshold`` · std.
    lr_mirror : str, optional
        Mirror samples across the midline: None, <choices:lr_mirror>.
    missing : str, optional
        Fill regions without a matched sample: None (left empty), <choices:missing>.
    tolerance : float
        How far (mm) outside the atlas a sample may lie and still be matched, searched in
        1 mm steps.
    sample_norm, gene_norm : str, optional
        Normalisation of each sample over genes, then of each gene over a donor's samples:
        None, <choices:norm>.
    norm_matched : bool
        Normalise genes over the matched samples only (else every sample kept by QC).
    norm_structures : bool
        Normalise genes separately within each broad structural class.
    region_agg : str
        Average per donor then across donors, or pool all samples: <choices:region_agg>.
    agg_metric : str
        The average: <choices:agg_metric>.
    corrected_mni : bool
        Use the corrected MNI coordinates of the samples (the bundled table of real well ids).
    reannotated : bool
        Use the reannotated probe-to-gene table (the bundled one of real probe names).
    return_donors : bool
        Also return one regions × genes frame per donor (``result.donors``).
    return_counts : bool
        Also return the number of samples matched to each region per donor
        (``result.counts``).
    donors : "all" or sequence of int
        The donors to use (ids as in the store).
    dtype : str
        ``"float64"`` (parity with abagen) or ``"float32"``; values are computed in float64
        either way and the output frames cast.
    cache : bool
        Reuse and write the atlas-independent products (intensity filter, probe selection,
        sample-normalised rows) in the store's ``cache/`` group, so a second atlas starts
        from them.
    out : str or Path, optional
        A Zarr directory to stream the regions × genes result to, block by block, instead of
        holding it (voxel-level atlases); ``result.expression`` is then a lazy xarray
        DataArray over it (:mod:`.output`).
    match_rule : str
        One of <choices:match_rule>: ``"abagen"`` is abagen 0.1.3's matching; with
        ``"majority"`` (and ``atlas_info``) the region with most voxels near the sample wins
        instead of the nearest centroid (see :mod:`.matching` and docs/abagen-pipeline.md).

    Returns
    -------
    ExpressionResult
        ``expression`` (regions × genes, index ``label``), ``donors`` and ``counts`` when
        asked for, the parameters and provenance, and the explanation tables ``probes``,
        ``genes`` and ``samples`` (why each probe, gene and sample was kept or dropped).

    Raises
    ------
    ConfigError
        A parameter outside its valid values, or an option combination abagen refuses.
    StoreNotFoundError
        No store at ``store``.
    """
    from ..store.open import AtlasStore, open_store

    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    # 1. parameters, donors, atlas ------------------------------------------------------------
    p = PipelineParams(
        ibf_threshold=ibf_threshold, probe_selection=probe_selection, donor_probes=donor_probes,
        sim_threshold=sim_threshold, lr_mirror=lr_mirror, missing=missing, tolerance=tolerance,
        sample_norm=sample_norm, gene_norm=gene_norm, norm_matched=norm_matched,
        norm_structures=norm_structures, region_agg=region_agg, agg_metric=agg_metric,
        corrected_mni=corrected_mni, reannotated=reannotated, return_donors=return_donors,
        return_counts=return_counts, dtype=dtype, match_rule=match_rule)
    params = p.record()
    st = store if isinstance(store, AtlasStore) else open_store(store)
    if cache and not isinstance(store, AtlasStore):
        st.cache_tables()  # the probe and sample tables as plain arrays in the store cache
    use = _donors(st, donors, p.method)
    params["donors"] = use
    warm = threading.Thread(target=_warm_up, name="kernel-warm-up", daemon=True)
    warm.start()
    vatlas = resolve_atlas(atlas, atlas_info)

    # 2. probes and sample QC -----------------------------------------------------------------
    t0 = time.perf_counter()
    probes, probe_fate = probe_table(st, p.reannotated)
    dsamples = [donor_samples(st, d, p.corrected_mni, p.lr_mirror) for d in use]
    if p.sim_threshold is not None:
        for ds in dsamples:
            apply_similarity(st, ds, probes["row"].to_numpy(), float(p.sim_threshold))
    timings["samples"] = time.perf_counter() - t0

    # 3. intensity filter (atlas-independent: cached) -----------------------------------------
    cache_params = p.cache_params(use)
    store_cache = StoreCache(st.url, _store_identity(st), enabled=cache)
    key = store_cache.key("selection", cache_params)
    hit = store_cache.load(key)
    computed = {"ibf": hit is None, "selection": hit is None}
    t0 = time.perf_counter()
    if hit is None:
        signal = ibf_signal(st, dsamples, probes["row"].to_numpy())
        timings["ibf"] = time.perf_counter() - t0
        trim()
    else:
        signal = [hit[f"signal_{k}"] for k in range(len(use))]
    ibf = ibf_from_signal(signal, [len(ds.src) for ds in dsamples], p.ibf_threshold)
    kept = probes[ibf.keep].reset_index(drop=True)

    # 4. probe selection (cached with the filter) ---------------------------------------------
    t0 = time.perf_counter()
    if hit is None:
        scores = selection_scores(st, dsamples, kept, p.method, p.selection_mode)
    else:
        n_sc = int(hit["n_scores"][()])
        scores = [hit[f"score_{k}"] for k in range(n_sc)] if n_sc else None
    if p.method == "average":
        selection = select_probes([np.zeros((len(kept), 0))] * len(use),
                                  [np.zeros(0)] * len(use), kept, p.method, p.donor_probes)
    else:
        selection = select_probes([None] * len(use), [None] * len(use), kept, p.method,
                                  p.donor_probes, scores=scores)
    timings["selection"] = time.perf_counter() - t0
    trim()
    if hit is None:
        _cache_selection(store_cache, key, cache_params, signal, scores)

    # 5. each donor's chosen rows (read lazily in step 7; cached) -----------------------------
    chosen = ChosenRows(st.url, dsamples, kept, selection, p.method, p.sample_norm,
                        store_cache, key, selection_cached=hit is not None)
    computed["rows"] = False
    computed["sample_norm"] = chosen.normalised_here

    # 6. samples to regions -------------------------------------------------------------------
    t0 = time.perf_counter()
    genes = np.asarray(selection.genes)
    all_labels = vatlas.labels[vatlas.labels != 0]
    labels = match_donors(vatlas, dsamples, p.tolerance, p.match_rule)
    counts = sample_counts_frame(labels, all_labels, use)
    empty = np.zeros(0, dtype=np.int64)
    if p.missing == "centroids":
        seen = np.unique(np.concatenate([lab[lab != 0] for lab in labels]))
        empty = np.setdiff1d(vatlas.labels, seen)
    timings["match"] = time.perf_counter() - t0
    sink = None
    if out is not None:
        from .output import RegionStream, check_stream_params

        check_stream_params(params)
        params["out"] = str(out)
        sink = RegionStream(out, vatlas, all_labels, empty, len(genes), p.missing,
                            p.region_agg, p.agg_metric)

    # 7. per donor: gene normalisation and region values; then across donors ------------------
    t0 = time.perf_counter()
    t_read = 0.0
    regions = RegionPass(p, vatlas, all_labels, empty, len(genes), sink, srs_region_means)
    for k, ds in enumerate(dsamples):
        t1 = time.perf_counter()
        base, normalised = chosen.base(k)
        t_read += time.perf_counter() - t1
        regions.add(ds, labels[k], base, normalised)
        del base
    regions.flush()
    chosen.commit()
    computed["rows"] = chosen.read
    timings["read_rows"] = t_read - chosen.t_sample_norm - chosen.t_cache_write
    timings["sample_norm"], timings["cache_write"] = chosen.t_sample_norm, chosen.t_cache_write
    timings["normalise"] = time.perf_counter() - t0 - t_read
    t0 = time.perf_counter()
    combined = regions.finish()
    timings["aggregate"] = time.perf_counter() - t0

    # 8. result frames and explanations -------------------------------------------------------
    out_dtype = np.float64 if p.dtype == "float64" else np.float32
    index = pd.Index(all_labels, name="label")
    donor_frames = None
    if p.return_donors:
        donor_frames = {d: pd.DataFrame(v.astype(out_dtype), index=index.copy(),
                                        columns=pd.Index(genes, name="gene_symbol"))
                        for d, v in zip(use, regions.per_donor, strict=True)}
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
        counts=counts if p.return_counts else None, params=params,
        computed=computed, timings=timings, store_url=st.url, store_attrs=dict(st.attrs),
        tables=tables)


def _donors(st: Any, donors: str | Sequence[int], method: str) -> list[int]:
    """The donor ids to use, each checked against the store."""
    use = list(st.donors) if donors == "all" else [int(d) for d in donors]
    bad = sorted(set(use) - set(st.donors))
    if bad:
        raise ConfigError(f"donor(s) {bad} not in the store (complete donors: {st.donors})")
    if method == "diff_stability" and len(use) < 2:
        raise ConfigError("probe_selection='diff_stability' needs at least two donors")
    return use


def _cache_selection(store_cache: StoreCache, key: str, cache_params: dict[str, Any],
                     signal: list[np.ndarray], scores: list[np.ndarray] | None) -> None:
    """Write the intensity-filter signal and the selection scores to the cache."""
    writer = store_cache.writer(key)
    if writer is None:
        return
    for k, sig in enumerate(signal):
        writer.add(f"signal_{k}", sig)
    for k, sc in enumerate(scores or []):
        writer.add(f"score_{k}", sc)
    writer.add("n_scores", np.asarray(0 if scores is None else len(scores)))
    writer.commit({"params": cache_params})


def _warm_up() -> None:
    """:func:`atlas_engine.kernels.srs.warm_up` (never raises: a failure here shows up in the real call)."""
    try:
        from ..kernels.srs import warm_up

        warm_up()
    except Exception:  # noqa: BLE001
        pass


def _store_identity(st: Any) -> dict[str, Any]:
    attrs = dict(st.attrs)
    return {"attrs": attrs, "url": str(Path(st.url).resolve()) if "://" not in st.url
            else st.url}
