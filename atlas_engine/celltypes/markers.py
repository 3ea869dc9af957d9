"""Bridge to the brain: cell-type marker signatures scored across AHBA regions.

Marker rule (:func:`marker_signatures`), per cell type ``t`` from the per-type statistics of a
Cell Types store:

* candidates are genes expressed in at least ``min_frac`` of the type's cells (``frac``);
* each candidate's specificity is its margin ``logcpm[t] - max over other types of logcpm``
  (mean log2(CPM + 1); a positive margin = higher in ``t`` than in any other type);
* the signature is the ``n`` candidates with the largest positive margins (ties by symbol).

Scoring (:func:`score_regions`): the AHBA region × gene table (microarray store, collapsed to
genes) is z-scored per gene across regions; a type's score in a region is the mean z-score of its
signature genes found in the store (matched by symbol, case-insensitively so mouse symbols find
their human namesakes; an approximation of orthology). The result is a regions × cell types
table; :func:`plot_scores` draws it as a heatmap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .aggregate import CellAggregate, aggregate_cells


def marker_signatures(agg: CellAggregate, types: Sequence[str] | None = None, *, n: int = 20,
                      min_frac: float = 0.5) -> dict[str, list[str]]:
    """Marker genes of each cell type (see the module docstring for the rule).

    ``agg`` must hold the ``logcpm`` and ``frac`` statistics; ``types`` (group names, default
    all) picks the cell types.
    """
    for need in ("logcpm", "frac"):
        if need not in agg.stats:
            raise ConfigError(f"marker signatures need the {need!r} statistic")
    names = [str(g) for g in agg.groups.index]
    chosen = list(types) if types else names
    unknown = [t for t in chosen if t not in names]
    if unknown:
        raise ConfigError(f"cell types not in the store: {', '.join(unknown)}")
    if len(names) < 2:
        raise ConfigError("marker signatures need at least two cell types to compare")
    lc = np.nan_to_num(agg.stats["logcpm"], nan=-np.inf)
    frac = np.nan_to_num(agg.stats["frac"], nan=0.0)
    symbols = np.asarray(agg.genes.index.astype(str))
    # best and second-best type per gene, so the margin over the others is one subtraction
    order = np.argsort(-lc, axis=0, kind="stable")
    best, second = order[0], order[1]
    cols = np.arange(lc.shape[1])
    out: dict[str, list[str]] = {}
    for t in chosen:
        g = names.index(t)
        other = np.where(best == g, lc[second, cols], lc[best, cols])
        margin = lc[g] - other
        ok = (frac[g] >= min_frac) & (margin > 0) & np.isfinite(margin)
        idx = np.flatnonzero(ok)
        rank = np.lexsort((symbols[idx], -margin[idx]))
        out[t] = symbols[idx[rank[:n]]].tolist()
    return out


@dataclass
class RegionScores:
    """Regions × cell types scores and what went into them."""

    scores: pd.DataFrame
    signatures: dict[str, list[str]]
    found: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)


def score_regions(regions: pd.DataFrame, signatures: dict[str, list[str]]) -> RegionScores:
    """Mean per-gene z-score (across regions) of each signature, per region.

    ``regions`` is regions × genes (columns are gene symbols). Genes are matched
    case-insensitively; a signature with no gene found scores NaN everywhere.
    """
    upper = {str(c).upper(): c for c in regions.columns}
    values = regions.astype(float)
    sd = values.std(axis=0, ddof=1).replace(0, np.nan)
    z = (values - values.mean(axis=0)) / sd
    scores = {}
    found: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    for t, genes in signatures.items():
        cols = [upper[g.upper()] for g in genes if g.upper() in upper]
        found[t] = [str(c) for c in cols]
        missing[t] = [g for g in genes if g.upper() not in upper]
        scores[t] = z[cols].mean(axis=1, skipna=True) if cols else pd.Series(np.nan, z.index)
    return RegionScores(pd.DataFrame(scores, index=regions.index), signatures, found, missing)


def map_cell_types(cell_store: str, ahba_store: str, *, by: str = "cluster",
                   types: Sequence[str] | None = None, n: int = 20, min_frac: float = 0.5,
                   regions: str = "depth:5") -> tuple[RegionScores, pd.DataFrame]:
    """Signatures from ``cell_store`` scored on ``ahba_store`` regions (``--by`` of AHBA
    aggregation: ``depth:N``, ``structure``, ...). Returns the scores and the regions table
    (structure id, acronym, name)."""
    from ..aggregate.api import aggregate

    agg = aggregate_cells(cell_store, by, ["logcpm", "frac"])
    sigs = marker_signatures(agg, types, n=n, min_frac=min_frac)
    wanted = sorted({g for gs in sigs.values() for g in gs})
    if not wanted:
        raise ConfigError("no marker genes pass the rule (lower --min-frac?)")
    res = aggregate(ahba_store, by=regions, collapse="mean")
    table = res.to_frame()
    meta = table[["structure_id", "acronym", "name"]]
    body = table.drop(columns=["structure_id", "acronym", "name"])
    body.index = meta["acronym"].astype(str)
    keep = body.dropna(axis=0, how="all")
    scored = score_regions(keep, sigs)
    return scored, meta


def plot_scores(scores: pd.DataFrame, path: str | Path) -> Path:
    """Heatmap PNG of a regions × cell types score table (each type z-scored across regions)."""
    from ..report.heatmap import plot_heatmap

    return plot_heatmap(scores.dropna(axis=1, how="all"), path, top=scores.shape[1],
                        title="Cell-type marker signatures across regions (z-scored)")


def write_scores(scored: RegionScores, out: str | Path) -> list[Path]:
    """The scores table (``.csv``) and the signatures (``<stem>.signatures.csv``: type, rank,
    gene, found in the AHBA store)."""
    out = Path(out)
    scored.scores.to_csv(out)
    rows: list[dict[str, Any]] = []
    for t, genes in scored.signatures.items():
        for k, g in enumerate(genes):
            rows.append({"cell_type": t, "rank": k + 1, "gene": g,
                         "in_ahba": g not in scored.missing.get(t, [])})
    sig = out.with_name(f"{out.stem}.signatures.csv")
    pd.DataFrame(rows, columns=["cell_type", "rank", "gene", "in_ahba"]).to_csv(sig, index=False)
    return [out, sig]
