"""Developmental trajectories from a BrainSpan store: expression of a gene list over age, per
structure group, as a tidy table and a figure.

The table comes from :func:`~atlas_engine.aggregate.brainspan.aggregate_brainspan` (one engine
pass, ``by="age,<groups>"``, donors combined), so each line point is the mean of donor means
at that age in that group; the per-sample points of the figure are the raw values of the
selected genes (read once, small).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..sources.devtime import PERIODS, period_bounds_years
from .brainspan import aggregate_brainspan, select_genes

GROUP_KEYS = ("region", "structure")


def trajectory_table(
    store: Any,
    genes: str | Sequence[str],
    *,
    group_by: str = "region",
    transform: str = "log2",
    combine: str = "combined",
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Tidy trajectories and per-sample points for ``genes``.

    Returns
    -------
    (table, points, missing)
        ``table``: one row per gene, group and age: ``gene``, ``<group_by>``, ``age``,
        ``age_years``, ``age_pcd``, ``period``, ``value`` (mean of donor means, of
        ``log2(RPKM+1)`` for ``transform="log2"``), ``n_samples``, ``n_donors``; ordered by gene,
        group and age. ``points``: one row per gene and sample with the same columns plus
        ``donor_id`` and ``structure``. ``missing``: names not in the store.
    """
    from ..store import layout as L
    from ..store.blockread import BlockArray
    from ..store.brainspan import GROUP, BrainSpanStore, open_brainspan
    from .rowtasks import read_rows

    if group_by not in GROUP_KEYS:
        raise ConfigError(f"--group-by {group_by!r}: expected one of {', '.join(GROUP_KEYS)}")
    bs = store if isinstance(store, BrainSpanStore) else open_brainspan(os.fspath(store))
    res = aggregate_brainspan(bs, by=f"age,{group_by}", genes=genes, combine=combine,
                              transform=transform)
    long = res.to_long()
    long = long.rename(columns={"structure": group_by} if group_by == "structure" else {})
    keep = ["gene", group_by, "age", "age_years", "age_pcd", "period", "value", "n_values",
            "n_samples", "n_donors"]
    table = long[keep].copy()
    table["age"] = table["age"].astype(str)
    table = table.sort_values(["gene", group_by, "age_pcd"], kind="stable").reset_index(drop=True)

    rows, _ = select_genes(bs.genes, genes)
    # the selected genes' rows (all samples), as float64: a task per chunk row
    raw = read_rows(BlockArray.open(bs.url, f"{GROUP}/{L.EXPRESSION}"), rows)
    if transform == "log2":
        raw = np.log2(raw + 1.0)
    s = bs.samples.reset_index(drop=True)
    names = res.feature_names
    pts = []
    for k, name in enumerate(names):
        pts.append(pd.DataFrame({
            "gene": name, group_by: s["structure_acronym" if group_by == "structure"
                                      else "region"].to_numpy(),
            "structure": s["structure_acronym"].to_numpy(), "donor_id": s["donor_id"].to_numpy(),
            "age": s["age"].astype(str).to_numpy(), "age_years": s["age_years"].to_numpy(),
            "age_pcd": s["age_pcd"].to_numpy(), "period": s["period"].to_numpy(),
            "value": raw[k]}))
    points = pd.concat(pts, ignore_index=True)
    return table, points, res.missing_genes


def _axis_x(frame: pd.DataFrame, log_age: bool) -> np.ndarray:
    # log age: post-conception days on a log axis (prenatal weeks stay readable); else years
    return frame["age_pcd"].to_numpy() if log_age else frame["age_years"].to_numpy()


def plot_trajectories(
    table: pd.DataFrame,
    points: pd.DataFrame | None,
    path: str | os.PathLike,
    *,
    group_by: str = "region",
    log_age: bool = True,
    groups: Sequence[str] | None = None,
    ylabel: str = "log2(RPKM + 1)",
    dpi: int = 150,
) -> Path:
    """One panel per gene: a line per structure group (mean of donor means by age), the samples
    as faint points, birth marked, Kang periods shaded and labelled. ``log_age``: x is
    post-conception days on a log scale (default), else postnatal years on a linear one."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    genes = list(dict.fromkeys(table["gene"]))
    if not genes:
        raise ConfigError("nothing to plot: the trajectory table is empty")
    chosen = list(dict.fromkeys(table[group_by])) if groups is None else list(groups)
    ncol = min(2, len(genes))
    nrow = math.ceil(len(genes) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.4 * ncol, 3.6 * nrow), squeeze=False,
                             constrained_layout=True)
    cmap = plt.get_cmap("tab10")
    colour = {g: cmap(i % 10) for i, g in enumerate(chosen)}
    birth = 38 * 7 if log_age else 0.0
    for ax, gene in zip(axes.flat, genes, strict=False):
        t = table[table["gene"] == gene]
        lo_x = float(_axis_x(t, log_age).min())
        hi_x = float(_axis_x(t, log_age).max())
        for i, p in enumerate(PERIODS):
            a, b = period_bounds_years(p.code)
            if log_age:
                a, b = 38 * 7 + a * 365, 38 * 7 + b * 365
            a, b = max(a, lo_x * (0.9 if log_age else 1) - (0 if log_age else 1)), min(
                b, hi_x * (1.1 if log_age else 1) + (0 if log_age else 1))
            if b <= a:
                continue
            if i % 2 == 0:
                ax.axvspan(a, b, color="0.93", lw=0, zorder=0)
            wide = (math.log(b / a) if log_age else b - a) / (
                math.log(hi_x / lo_x) if log_age and hi_x > lo_x else max(hi_x - lo_x, 1e-9))
            if wide < 0.03:
                continue
            ax.text(math.sqrt(a * b) if log_age else (a + b) / 2, 1.0, p.code,
                    transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=6,
                    color="0.4")
        ax.axvline(birth, color="k", lw=0.8, ls="--", zorder=1)
        ax.text(birth, 0.02, " birth", transform=ax.get_xaxis_transform(), fontsize=7)
        for g in chosen:
            if points is not None:
                pp = points[(points["gene"] == gene) & (points[group_by] == g)]
                ax.scatter(_axis_x(pp, log_age), pp["value"], s=5, alpha=0.35,
                           color=colour[g], lw=0, zorder=2)
            tt = t[t[group_by] == g].dropna(subset=["value"])
            ax.plot(_axis_x(tt, log_age), tt["value"], "-o", ms=2.5, lw=1.4, color=colour[g],
                    label=str(g), zorder=3)
        if log_age:
            ax.set_xscale("log")
            ticks = [(f"{w} pcw", w * 7) for w in (8, 16, 26)] + [
                (f"{y} y", 38 * 7 + y * 365) for y in (1, 4, 12, 40)]
            ticks = [(lab, v) for lab, v in ticks if lo_x * 0.8 <= v <= hi_x * 1.2]
            ax.set_xticks([v for _, v in ticks], [lab for lab, _ in ticks], fontsize=7)
            ax.minorticks_off()
            ax.set_xlabel("age (post-conception days, log scale)")
        else:
            ax.set_xlabel("age (postnatal years)")
        ax.set_ylabel(ylabel)
        ax.set_title(gene, loc="left", fontsize=10, fontweight="bold")
    for ax in list(axes.flat)[len(genes):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False,
               title=group_by)
    out = Path(path)
    from ..atomic import atomic_output

    atomic_output(out, lambda p: fig.savefig(p, dpi=dpi, format=out.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return out
