"""Explanations of a :func:`~.expression.get_expression_data` run: per-probe, per-gene and
per-sample tables saying what happened and why, a methods paragraph and JSON provenance."""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .intensity import IntensityFilter
from .probes import ProbeSelection

if TYPE_CHECKING:
    from .expression import ExpressionResult


def probe_explanations(fate: pd.DataFrame, probes: pd.DataFrame, ibf: IntensityFilter,
                       selection: ProbeSelection, kept: pd.DataFrame) -> pd.DataFrame:
    """Every store probe: annotation used, IBF fraction, score, chosen or not and why."""
    out = fate.drop(columns=["row"]).copy()
    pos = pd.Series(np.arange(len(probes)), index=probes["probe_id"].to_numpy())
    where = pos.reindex(out["probe_id"].to_numpy()).to_numpy()
    usable = ~np.isnan(where)
    w = where[usable].astype(np.int64)
    frac = np.full(len(out), np.nan)
    frac[usable] = ibf.fraction[w]
    out["ibf_fraction"] = frac
    out["ibf_kept"] = False
    out.loc[usable, "ibf_kept"] = ibf.keep[w]
    sel = selection.table.set_index("probe_id")
    score_cols = [c for c in sel.columns if c.startswith("score")]
    for c in score_cols:
        out[c] = sel[c].reindex(out["probe_id"].to_numpy()).to_numpy()
    # a probe the selection never saw (left out before it) is not selected
    chosen = sel["selected"].astype(bool).reindex(out["probe_id"].to_numpy(), fill_value=False)
    out["selected"] = chosen.to_numpy(dtype=bool)
    reasons = out["reason"].to_numpy().astype(object)
    ibf_reasons = np.asarray(ibf.reasons(), dtype=object)
    sel_reason = sel["reason"].reindex(out["probe_id"].to_numpy()).to_numpy()
    # a usable probe: the intensity filter's reason when it dropped the probe, else the
    # selection's
    at = np.flatnonzero(usable)
    reasons[at] = np.where(ibf.keep[w], sel_reason[at], ibf_reasons[w])
    out["reason"] = reasons
    return out


def gene_table(fate: pd.DataFrame, probes: pd.DataFrame, ibf: IntensityFilter,
               selection: ProbeSelection, genes: np.ndarray, dropped_after: np.ndarray
               ) -> pd.DataFrame:
    """Every gene symbol seen (store annotation and, if used, reannotation): kept or why not."""
    sym_used = probes["gene_symbol"].astype(str).to_numpy()
    all_syms = sorted(set(sym_used) | set(fate["gene_symbol"].astype(str)))
    index = pd.Index(all_syms, dtype=object)
    npb = pd.Series(sym_used).value_counts().reindex(index, fill_value=0).to_numpy(np.int64)
    nib = pd.Series(sym_used[ibf.keep]).value_counts().reindex(index, fill_value=0) \
        .to_numpy(np.int64)
    if selection.rows and selection.method != "average":
        r = np.asarray(selection.rows[0])
        kept_ids = selection.table["probe_id"].to_numpy()
        ids = pd.Series(np.where(r >= 0, kept_ids[np.maximum(r, 0)], -1),
                        index=pd.Index(np.asarray(selection.genes), dtype=object))
        chosen = ids[r >= 0].reindex(index).to_numpy()     # NaN where no probe was chosen
        if not np.isnan(chosen).any():
            chosen = chosen.astype(np.int64)
    else:
        chosen = np.full(len(index), None, dtype=object)
    genes = np.asarray(genes)
    dropped_after = np.asarray(dropped_after, dtype=bool)
    in_out = index.isin(genes[~dropped_after])
    late = index.isin(genes[dropped_after])
    selected = index.isin(genes)
    no_annotation = ("not in the reannotation / no Entrez id" if "reannotated_symbol" in fate
                     else "no Entrez id")
    # the first that applies, in this order
    cases = [(in_out, "in the output"),
             (late, "non-finite after normalisation in a region with data "
                    "(post-aggregation drop)"),
             (npb == 0, no_annotation),
             (nib == 0, "no probe passed the intensity filter"),
             (~selected, f"{selection.method} score is NaN for every probe")]
    reason = np.full(len(index), "unknown", dtype=object)
    decided = np.zeros(len(index), dtype=bool)
    for mask, why in cases:
        reason[mask & ~decided] = why
        decided |= mask
    status = np.where(in_out, "kept", "dropped").astype(object)
    return pd.DataFrame({"gene_symbol": np.asarray(all_syms, dtype=object), "n_probes": npb,
                         "n_probes_ibf": nib, "selected_probe_id": chosen, "status": status,
                         "reason": reason})


def sample_table(donors: list[Any]) -> pd.DataFrame:
    """Every sample (and mirrored copy) of every donor: region or why not."""
    parts = []
    for ds in donors:
        t = ds.table.drop(columns=["qc_row"]).copy()
        if "label" not in t:
            t["label"] = 0
        parts.append(t)
    out = pd.concat(parts, ignore_index=True)
    return out


def _n(result: ExpressionResult, table: str, col: str, value: str) -> int:
    return int((getattr(result, table)[col] == value).sum())


def methods_text(result: ExpressionResult) -> str:
    """A methods paragraph in the style of abagen's reports."""
    p = result.params
    n_donors = len(p["donors"])
    probes = result.probes
    n_ibf = int(probes["ibf_kept"].sum())
    genes = result.genes
    n_kept = _n(result, "genes", "status", "kept")
    samples = result.samples
    n_match = _n(result, "samples", "status", "matched")
    parts = [
        f"Regional microarray expression data were obtained from {n_donors} post-mortem "
        "brains provided by the Allen Human Brain Atlas (AHBA, https://human.brain-map.org; "
        "Hawrylycz et al., 2012). Data were processed with atlas-engine, following the "
        "abagen pipeline (Markello et al., 2021), from the store at "
        f"{result.store_url}.",
    ]
    if p["reannotated"]:
        parts.append("Microarray probes were reannotated using data provided by "
                     "Arnatkevičiūtė et al., 2019; probes not matched to a valid Entrez ID "
                     "were discarded.")
    else:
        parts.append("Probes without a valid Entrez ID in the AHBA annotation were "
                     "discarded.")
    parts.append(
        f"Probes were filtered by their expression intensity relative to background noise "
        f"(Quackenbush, 2002): probes with intensity above background in fewer than "
        f"{p['ibf_threshold'] * 100:g}% of samples across donors were discarded, leaving "
        f"{n_ibf} probes.")
    sel = {"diff_stability": "the probe with the most consistent pattern of regional "
                             "variation across donors (differential stability; Hawrylycz et "
                             "al., 2015)",
           "max_intensity": "the probe with the highest mean expression",
           "max_variance": "the probe with the highest variance",
           "pc_loading": "the probe with the highest loading on the first principal "
                         "component of the gene's probes",
           "corr_intensity": "the probe with the highest correlation to the other probes of "
                             "the gene (intensity fallback)",
           "corr_variance": "the probe with the highest correlation to the other probes of "
                            "the gene (variance fallback)",
           "average": "the mean of all probes of the gene"}
    parts.append(f"When several probes indexed the same gene, the gene was represented by "
                 f"{sel.get(p['probe_selection'], p['probe_selection'])}.")
    if p["corrected_mni"]:
        parts.append("MNI coordinates of tissue samples were updated to those generated via "
                     "non-linear registration (https://github.com/chrisfilo/alleninf).")
    if p["lr_mirror"]:
        parts.append(f"Samples were mirrored across hemispheres ({p['lr_mirror']}).")
    parts.append(
        "Samples whose hemisphere annotation disagreed with their MNI x coordinate were "
        f"discarded. Samples were assigned to the region containing them, or within "
        f"{p['tolerance']} mm of it, constrained by hemisphere and structural class; "
        f"{n_match} of {len(samples)} samples were matched.")
    if p["missing"] == "centroids":
        parts.append("Regions without any sample were given the inverse-distance weighted "
                     "mean of the samples nearest their centroid in each donor.")
    if p["sample_norm"]:
        parts.append(f"Inter-subject variation was addressed by normalising each sample "
                     f"across genes ({p['sample_norm']}) and")
    else:
        parts.append("Inter-subject variation was addressed by")
    scope = "matched samples" if p["norm_matched"] else "all samples"
    per = ", separately per structural class" if p["norm_structures"] else ""
    parts.append(f"normalising each gene across the {scope} of each donor ({p['gene_norm']}"
                 f"{per}).")
    agg = ("averaged within donors and then across donors" if p["region_agg"] == "donors"
           else "pooled across donors")
    parts.append(f"Samples assigned to the same region were {agg} ({p['agg_metric']}); "
                 f"{n_kept} of {len(genes)} genes were kept.")
    return " ".join(parts)


def provenance(result: ExpressionResult) -> dict[str, Any]:
    """Everything needed to reproduce the run: parameters, store, versions, counts."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for pkg in ("atlas-engine", "numpy", "pandas", "scipy", "zarr", "numba"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    counts = {
        "probes_in_store": len(result.probes),
        "probes_ibf_kept": int(result.probes["ibf_kept"].sum()),
        "probes_selected": int(result.probes["selected"].sum()),
        "genes_kept": _n(result, "genes", "status", "kept"),
        "genes_dropped": _n(result, "genes", "status", "dropped"),
        "samples": len(result.samples),
        "samples_matched": _n(result, "samples", "status", "matched"),
        "samples_unmatched": _n(result, "samples", "status", "unmatched"),
        "samples_dropped": _n(result, "samples", "status", "dropped"),
        "regions": int(result.expression.shape[0]),
    }
    return {"params": result.params, "store": {"url": result.store_url,
                                               "attrs": result.store_attrs},
            "versions": versions, "counts": counts, "computed": result.computed,
            "timings_s": {k: round(v, 4) for k, v in result.timings.items()}}
