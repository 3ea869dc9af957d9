"""Heatmap of a region × gene matrix (matplotlib, Agg backend; no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_output


def top_variable_genes(table: pd.DataFrame, n: int = 50) -> list[str]:
    """The ``n`` genes (columns) with the largest variance across regions (rows), NaN-skipping."""
    var = table.var(axis=0, skipna=True, ddof=1).dropna()
    return list(var.sort_values(ascending=False, kind="stable").index[:n])


def region_labels(groups: pd.DataFrame, hemisphere: pd.Series | None = None) -> pd.Series:
    """Row labels for regions, indexed by ``structure_id``: the acronym, with `` (L)`` /
    `` (R)`` when the structure belongs to one hemisphere (left and right share acronyms in
    the Allen ontology), and the structure id added to any label that is still repeated.

    ``groups`` has ``structure_id`` and ``acronym`` columns; ``hemisphere`` maps structure id
    → ``"L"``, ``"R"`` or ``""`` (the ontology's column)."""
    ids = groups["structure_id"].to_numpy()
    labels = groups["acronym"].astype(str).to_numpy().astype(object)
    if hemisphere is not None:
        hemi = pd.Series(hemisphere).reindex(ids).fillna("").astype(str).to_numpy()
        labels = np.array([f"{a} ({h})" if h in ("L", "R") else a
                           for a, h in zip(labels, hemi, strict=True)], dtype=object)
    out = pd.Series(labels, index=ids)
    dup = out.duplicated(keep=False).to_numpy()
    if dup.any():
        out[dup] = [f"{lab} [{sid}]" for lab, sid in zip(out[dup], ids[dup], strict=True)]
    return out


def plot_heatmap(
    table: pd.DataFrame,
    path: str | Path,
    *,
    top: int = 50,
    row_labels: pd.Series | None = None,
    title: str | None = None,
    ylabel: str = "structure",
) -> Path:
    """Write a PNG heatmap of the ``top`` most variable genes, each z-scored across regions.

    ``table`` is regions × genes; ``row_labels`` (indexed like ``table``) replaces the row names
    (e.g. :func:`region_labels`). The default title says how many genes of how many are shown
    for how many regions. Returns the written path.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = Path(path)
    genes = top_variable_genes(table, top)
    if title is None:
        title = (f"{len(genes)} most variable of {table.shape[1]} genes across "
                 f"{table.shape[0]} regions (z-scored per gene)")
    sub = table.loc[:, genes].astype(float)
    z = (sub - sub.mean(axis=0)) / sub.std(axis=0, ddof=1).replace(0, np.nan)
    labels = [str(row_labels.get(i, i)) if row_labels is not None else str(i) for i in sub.index]
    h = max(3.0, 0.18 * len(sub.index) + 1.5)
    w = max(4.0, 0.18 * len(genes) + 2.5)
    fig, ax = plt.subplots(figsize=(min(w, 30), min(h, 40)))
    im = ax.imshow(z.to_numpy(), aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3,
                   interpolation="nearest")
    ax.set_xticks(range(len(genes)))
    ax.set_xticklabels(genes, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=6)
    ax.set_xlabel("gene")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="z-score", shrink=0.6)
    fig.tight_layout()
    try:
        return atomic_output(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
