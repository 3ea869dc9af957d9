"""Heatmap of a region × gene matrix (matplotlib, Agg backend; no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def top_variable_genes(table: pd.DataFrame, n: int = 50) -> list[str]:
    """The ``n`` genes (columns) with the largest variance across regions (rows), NaN-skipping."""
    var = table.var(axis=0, skipna=True, ddof=1).dropna()
    return list(var.sort_values(ascending=False, kind="stable").index[:n])


def plot_heatmap(
    table: pd.DataFrame,
    path: str | Path,
    *,
    top: int = 50,
    row_labels: pd.Series | None = None,
    title: str = "Top variable genes (z-scored across regions)",
) -> Path:
    """Write a PNG heatmap of the ``top`` most variable genes, each z-scored across regions.

    ``table`` is regions × genes; ``row_labels`` (indexed like ``table``) replaces the row names
    (e.g. structure acronyms). Returns the written path.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = Path(path)
    genes = top_variable_genes(table, top)
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
    ax.set_ylabel("structure")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="z-score", shrink=0.6)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
