"""Cell metadata tables to an AnnData ``obs`` (pure table work, no matrix I/O).

Portal ``metadata.csv``: every item except ``sample_name`` comes as ``{item}_label``,
``{item}_order`` (mouse 10x: ``{item}_id``) and ``{item}_color`` columns, in label-first (M1,
mouse) or colour-first (MCA) order; MCA names the alias triple's order column
``cell_type_order``. Each item becomes one categorical ``obs[item]`` whose categories are sorted
by the order column, with the colours in ``uns[f"{item}_colors"]`` (scanpy's convention: one
colour per category, same order) and the order in ``uns[f"{item}_order"]``. Empty labels are
missing values (MCA's outliers have an empty ``class_label``).

2018 ``samples-columns.csv``: plain columns; text columns with few distinct values become
categoricals (``class``, ``cluster``, ``subclass``, ...).

Both get ``donor`` and ``region`` aliases when the set has them under another name.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..errors import FormatError

#: obs aliases: the first present source column is copied under the alias name.
ALIASES: dict[str, tuple[str, ...]] = {
    "donor": ("external_donor_name", "donor_id", "donor"),
    "region": ("region", "brain_region"),
}
_ORDER_SUFFIXES = ("_order", "_id")


def _order_column(df: pd.DataFrame, item: str) -> str | None:
    for suffix in _ORDER_SUFFIXES:
        if f"{item}{suffix}" in df.columns:
            return f"{item}{suffix}"
    if item == "cell_type_alias" and "cell_type_order" in df.columns:
        return "cell_type_order"
    return None


def _categorical_by_order(labels: pd.Series, order: pd.Series | None, colors: pd.Series | None,
                          source: str, item: str) -> tuple[pd.Categorical, list[str], list]:
    lab = labels.where(labels != "", None)
    present = lab.notna()
    frame = pd.DataFrame({"label": lab[present]})
    if order is not None:
        num = pd.to_numeric(order[present], errors="coerce")
        frame["order"] = num
    if colors is not None:
        frame["color"] = colors[present]
    firsts = frame.drop_duplicates("label")
    if order is not None:
        firsts = firsts.sort_values(["order", "label"], kind="stable", na_position="last")
        bad = frame.groupby("label")["order"].nunique()
        if (bad > 1).any():
            name = bad[bad > 1].index[0]
            raise FormatError(source, f"{item} label {name!r} has several order values",
                              expected="one order per label")
    else:
        firsts = firsts.sort_values("label", kind="stable")
    cats = firsts["label"].astype(str).tolist()
    cat = pd.Categorical(lab.where(present, None), categories=cats)
    cols = firsts["color"].astype(str).tolist() if colors is not None else []
    ords = firsts["order"].tolist() if order is not None else []
    return cat, cols, ords


def portal_obs(meta: pd.DataFrame, source: str) -> tuple[pd.DataFrame, dict]:
    """``obs`` and ``uns`` entries from a portal ``metadata.csv`` (read as text, index not set).

    Raises :class:`FormatError` when ``sample_name`` is missing or repeated.
    """
    if "sample_name" not in meta.columns:
        raise FormatError(source, "no sample_name column", line=1,
                          expected="sample_name as the first column")
    dup = meta["sample_name"].duplicated()
    if dup.any():
        pos = int(np.flatnonzero(dup.to_numpy())[0])
        raise FormatError(source, f"sample_name {meta['sample_name'].iloc[pos]!r} repeated",
                          line=pos + 2, column=1, expected="one row per cell")
    obs: dict[str, object] = {}
    uns: dict[str, object] = {}
    used = {"sample_name"}
    for col in meta.columns:
        if not col.endswith("_label"):
            continue
        item = col[: -len("_label")]
        order_col = _order_column(meta, item)
        color_col = f"{item}_color" if f"{item}_color" in meta.columns else None
        cat, colors, order = _categorical_by_order(
            meta[col], meta[order_col] if order_col else None,
            meta[color_col] if color_col else None, source, item)
        obs[item] = cat
        if colors:
            uns[f"{item}_colors"] = np.asarray(colors, dtype=object)
        if order:
            uns[f"{item}_order"] = np.asarray(order, dtype=np.float64)
        used.update(c for c in (col, order_col, color_col) if c)
    for col in meta.columns:
        if col not in used:
            obs[col] = _plain_column(meta[col])
    frame = pd.DataFrame(obs, index=pd.Index(meta["sample_name"].astype(str), name="sample_name"))
    return _with_aliases(frame), uns


def _plain_column(values: pd.Series) -> object:
    num = pd.to_numeric(values, errors="coerce")
    text = values.astype(str)
    if num.notna().sum() == (text != "").sum() and num.notna().any():
        return num.to_numpy()
    if values.nunique(dropna=True) <= max(50, len(values) // 20):
        lab = values.where(text != "", None)
        return pd.Categorical(lab, categories=sorted(lab.dropna().astype(str).unique()))
    return text.to_numpy(dtype=object)


def samples_obs(samples: pd.DataFrame, source: str) -> pd.DataFrame:
    """``obs`` from a 2018 ``samples-columns.csv`` (read as text)."""
    if "sample_name" not in samples.columns:
        raise FormatError(source, "no sample_name column", line=1, expected="sample_name")
    obs = {c: _plain_column(samples[c]) for c in samples.columns if c != "sample_name"}
    frame = pd.DataFrame(obs, index=pd.Index(samples["sample_name"].astype(str),
                                             name="sample_name"))
    return _with_aliases(frame)


def _with_aliases(obs: pd.DataFrame) -> pd.DataFrame:
    for alias, sources in ALIASES.items():
        if alias in obs.columns:
            continue
        for src in sources:
            if src in obs.columns:
                obs[alias] = obs[src]
                break
    return obs


def align_obs(cells: pd.Index, obs: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, object]]:
    """``obs`` rows in matrix cell order, and a report of the mismatches.

    Cells of the matrix without a metadata row keep missing labels; metadata rows without a
    cell are left out. Both are counted and their first names listed in the report (nothing is
    dropped silently).
    """
    have = cells.isin(obs.index)
    extra = ~obs.index.isin(cells)
    aligned = obs.reindex(cells)
    for col in aligned.columns:
        if isinstance(obs[col].dtype, pd.CategoricalDtype):
            aligned[col] = pd.Categorical(aligned[col], categories=obs[col].cat.categories)
    report: dict[str, object] = {
        "cells": int(len(cells)),
        "cells_without_metadata": int((~have).sum()),
        "cells_without_metadata_first": [str(c) for c in cells[~have][:10]],
        "metadata_rows_without_cells": int(extra.sum()),
        "metadata_rows_without_cells_first": [str(c) for c in obs.index[extra][:10]],
    }
    return aligned, report


def var_from_genes(genes: pd.DataFrame, symbol_col: str) -> pd.DataFrame:
    """``var`` indexed by gene symbol (``gene_symbol`` also kept as a column)."""
    var = genes.copy()
    var.index = pd.Index(genes[symbol_col].astype(str), name="gene")
    return var.drop(columns=[symbol_col]).assign(gene_symbol=var.index.to_numpy(dtype=object))


def string_mapping(d: Mapping[str, object]) -> dict[str, object]:
    """A report dict made safe for ``uns`` (lists of str, ints, str)."""
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, (list, tuple)):
            out[k] = np.asarray([str(x) for x in v], dtype=object)
        elif isinstance(v, (int, np.integer, float, str)):
            out[k] = v
        else:
            out[k] = str(v)
    return out
