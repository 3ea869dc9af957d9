"""Cross-reference Allen region expression with GTEx tissue medians, gene by gene.

1. GTEx's brain tissues are mapped to Allen structures by an editable CSV
   (``atlas_engine/data/gtex_brain_tissues.csv``: ``gtex_tissue``, ``ahba_structures``,
   ``brainspan_structures`` — names/acronyms separated by ``;`` — and ``note``).
2. Allen values per tissue: the AHBA store aggregated by the mapped structures (each with its
   descendants; probes collapsed to genes by their mean; donors combined), or the BrainSpan store
   (``log2(RPKM + 1)``, adult donors only: 20 years and older, GTEx's donor ages), a tissue
   mapped to several structures taking the mean of their values.
3. Genes are matched by unversioned Ensembl id where the Allen side has one (BrainSpan), else by
   symbol (AHBA: Probes.csv carries no Ensembl id); a symbol naming several GTEx genes is not
   matched, and every unmatched gene is listed with the reason.
4. Per gene, over the mapped tissues with values on both sides: Spearman and Pearson correlation
   of the Allen values (log2 already) with ``log2(TPM + 1)``, and the number of tissues.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, FormatError
from .gct import GctTable, read_gct

MAP_COLUMNS = ("gtex_tissue", "ahba_structures", "brainspan_structures", "note")
#: BrainSpan donors at least this old (years) stand in for GTEx's adult donors (20-79)
ADULT_YEARS = 20.0
MIN_TISSUES = 3


def default_tissue_map_path() -> Path:
    return Path(str(resources.files("atlas_engine") / "data" / "gtex_brain_tissues.csv"))


def load_tissue_map(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The tissue map CSV (default: the packaged one) with list columns ``ahba`` and
    ``brainspan``; a malformed file raises :class:`FormatError` naming the line."""
    p = Path(path) if path is not None else default_tissue_map_path()
    try:
        t = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise FormatError(p, f"cannot read ({exc})", expected=",".join(MAP_COLUMNS)) from None
    if tuple(t.columns[:3]) != MAP_COLUMNS[:3]:
        raise FormatError(p, f"header {list(t.columns)}", line=1, expected=",".join(MAP_COLUMNS))
    dup = t["gtex_tissue"].duplicated()
    if dup.any():
        k = int(np.flatnonzero(dup.to_numpy())[0])
        raise FormatError(p, f"tissue {t['gtex_tissue'].iat[k]!r} appears again", line=k + 2,
                          column=1, expected="one row per GTEx tissue")
    split = lambda s: [x.strip() for x in str(s).split(";") if x.strip()]  # noqa: E731
    t["ahba"] = t["ahba_structures"].map(split)
    t["brainspan"] = t["brainspan_structures"].map(split)
    if "note" not in t:
        t["note"] = ""
    return t


@dataclass
class AllenTissues:
    """Allen values per GTEx tissue: ``values`` genes × tissues (log2 scale), ``genes``
    (``gene`` name, ``symbol``, ``ensembl`` or empty), ``tissues`` (the map with the resolved
    structures and why a tissue has no value)."""

    values: pd.DataFrame
    genes: pd.DataFrame
    tissues: pd.DataFrame
    source: str


def ahba_tissues(store: Any, tissue_map: pd.DataFrame) -> AllenTissues:
    """Allen values per tissue from an AHBA microarray store (see the module doc)."""
    from ..aggregate.api import aggregate
    from ..store.open import AtlasStore, open_store

    st = store if isinstance(store, AtlasStore) else open_store(os.fspath(store))
    resolved: dict[str, int] = {}
    status = []
    for names in tissue_map["ahba"]:
        bad = []
        for n in names:
            try:
                resolved.setdefault(n, st.ontology.lookup(n))
            except ConfigError as exc:
                bad.append(str(exc))
        status.append("; ".join(bad))
    ids = list(dict.fromkeys(resolved.values()))
    if not ids:
        raise ConfigError("no GTEx tissue maps to a structure of the store's ontology")
    res = aggregate(st, by=ids, collapse="mean")
    by_id = {int(s): k for k, s in enumerate(res.groups["structure_id"])}
    cols, notes = {}, []
    for (_, row), bad in zip(tissue_map.iterrows(), status, strict=True):
        ks = [by_id[resolved[n]] for n in row["ahba"] if n in resolved]
        if not ks:
            notes.append(bad or "no AHBA structure mapped")
            continue
        with np.errstate(invalid="ignore"):
            v = res.values[ks]
            cols[row["gtex_tissue"]] = np.nanmean(np.where(np.isnan(v), np.nan, v), axis=0) \
                if np.isfinite(v).any() else np.full(v.shape[1], np.nan)
        empty = res.groups["n_samples"].to_numpy()[ks].sum() == 0
        notes.append("no samples in the mapped structures" if empty else (bad or ""))
    names = res.feature_names
    values = pd.DataFrame(cols, index=names)
    genes = pd.DataFrame({"gene": names, "symbol": names, "ensembl": ""})
    tissues = tissue_map.assign(status=notes)
    return AllenTissues(values=values, genes=genes, tissues=tissues, source="ahba")


def brainspan_tissues(store: Any, tissue_map: pd.DataFrame,
                      min_years: float = ADULT_YEARS) -> AllenTissues:
    """Allen values per tissue from a BrainSpan store: ``log2(RPKM + 1)`` of donors at least
    ``min_years`` old, by structure, donors combined."""
    from ..aggregate.brainspan import aggregate_brainspan
    from ..store.brainspan import BrainSpanStore, open_brainspan

    bs = store if isinstance(store, BrainSpanStore) else open_brainspan(os.fspath(store))
    s = bs.samples
    adults = sorted(set(s.loc[s["age_years"] >= min_years, "donor_id"].astype(int)))
    if not adults:
        raise ConfigError(f"the BrainSpan store has no donor aged {min_years:g} years or more")
    res = aggregate_brainspan(bs, by="structure", transform="log2", donors=adults)
    idx = {a: k for k, a in enumerate(res.groups["structure"].astype(str))}
    cols, notes = {}, []
    for _, row in tissue_map.iterrows():
        ks = [idx[a] for a in row["brainspan"] if a in idx]
        if not ks:
            notes.append("no BrainSpan structure mapped" if not row["brainspan"] else
                         f"no adult samples of {', '.join(row['brainspan'])}")
            continue
        cols[row["gtex_tissue"]] = np.nanmean(res.values[ks], axis=0)
        notes.append("")
    f = res.features
    names = res.feature_names
    values = pd.DataFrame(cols, index=names)
    genes = pd.DataFrame({"gene": names, "symbol": f["gene_symbol"].astype(str).to_numpy(),
                          "ensembl": f["ensembl_gene_id"].astype(str).str.split(".").str[0]
                          .to_numpy()})
    return AllenTissues(values=values, genes=genes, tissues=tissue_map.assign(status=notes),
                        source="brainspan")


def match_genes(allen: pd.DataFrame, gtex: pd.DataFrame) -> pd.DataFrame:
    """For each Allen gene (``symbol``, ``ensembl``): the GTEx row it matches (``gtex_row``,
    -1 = none), ``matched_by`` (``ensembl``/``symbol``/empty) and ``reason`` when unmatched."""
    ens_row = {e: i for i, e in enumerate(gtex["ensembl"].astype(str))}
    sym_rows: dict[str, list[int]] = {}
    for i, sym in enumerate(gtex["symbol"].astype(str)):
        sym_rows.setdefault(sym, []).append(i)
    names = gtex["name"].astype(str).to_numpy()
    rows, how, why = [], [], []
    for sym, ens in zip(allen["symbol"].astype(str), allen["ensembl"].astype(str), strict=True):
        if ens and ens in ens_row:
            rows.append(ens_row[ens])
            how.append("ensembl")
            why.append("")
            continue
        hits = sym_rows.get(sym, [])
        if len(hits) == 1:
            rows.append(hits[0])
            how.append("symbol")
            why.append("")
        elif len(hits) > 1:
            rows.append(-1)
            how.append("")
            why.append(f"symbol names {len(hits)} GTEx genes ({', '.join(names[hits])})")
        else:
            rows.append(-1)
            how.append("")
            why.append("Ensembl id and symbol not in GTEx" if ens else
                       "symbol not in GTEx (no Ensembl id on the Allen side)")
    return pd.DataFrame({"gtex_row": rows, "matched_by": how, "reason": why})


def _rank_rows(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=1)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / den
    return np.where(den > 0, np.clip(r, -1.0, 1.0), np.nan)


def row_correlations(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, Spearman and Pearson of ``x`` and ``y`` over the columns finite in both, and
    that count (NaN correlations with fewer than :data:`MIN_TISSUES` or a constant row)."""
    ok = np.isfinite(x) & np.isfinite(y)
    n = ok.sum(axis=1)
    sp = np.full(len(x), np.nan)
    pe = np.full(len(x), np.nan)
    full = ok.all(axis=1) & (n >= MIN_TISSUES)
    if full.any():
        pe[full] = _pearson_rows(x[full], y[full])
        sp[full] = _pearson_rows(_rank_rows(x[full]), _rank_rows(y[full]))
    for i in np.flatnonzero(~full & (n >= MIN_TISSUES)):
        a, b = x[i, ok[i]][None], y[i, ok[i]][None]
        pe[i] = _pearson_rows(a, b)[0]
        sp[i] = _pearson_rows(_rank_rows(a), _rank_rows(b))[0]
    return sp, pe, n


@dataclass
class CrossrefResult:
    genes: pd.DataFrame          # one row per matched gene with its correlations
    unmatched: pd.DataFrame      # gene, symbol, reason
    tissues: pd.DataFrame        # the tissue map with status and across-gene correlations
    allen: pd.DataFrame          # matched genes × tissues, Allen values
    gtex: pd.DataFrame           # matched genes × tissues, log2(TPM + 1)
    summary: dict[str, Any] = field(default_factory=dict)

    def write(self, out: str | os.PathLike) -> list[Path]:
        """``out`` (.csv/.parquet: the per-gene table) plus ``<stem>.unmatched.csv``,
        ``<stem>.tissues.csv`` and ``<stem>.summary.json``."""
        from ..atomic import atomic_output
        from ..report.tables import side_path

        out = Path(out)
        if out.suffix.lower() not in (".csv", ".parquet"):
            raise ConfigError(f"--out {out}: use .csv or .parquet")
        paths = []
        if out.suffix.lower() == ".parquet":
            paths.append(atomic_output(out, lambda p: self.genes.to_parquet(p, index=False)))
        else:
            paths.append(atomic_output(out, lambda p: self.genes.to_csv(p, index=False)))
        for what, frame in (("unmatched", self.unmatched), ("tissues", self.tissues)):
            sp = side_path(out, what)
            paths.append(atomic_output(sp, lambda p, f=frame: f.to_csv(p, index=False)))
        sj = side_path(out, "summary", ".json")
        paths.append(atomic_output(sj, lambda p: Path(p).write_text(
            json.dumps(self.summary, indent=1, default=str) + "\n")))
        return paths


def crossref(
    allen: AllenTissues,
    gct: GctTable | str | os.PathLike,
) -> CrossrefResult:
    """Per-gene agreement of ``allen`` with a GTEx median-TPM table over the mapped tissues."""
    table = gct if isinstance(gct, GctTable) else read_gct(gct)
    missing_t = [t for t in allen.values.columns if t not in table.values.columns]
    if missing_t:
        raise ConfigError(f"{table.path}: no column for the mapped tissues {missing_t}")
    tissues = list(allen.values.columns)
    if len(tissues) < MIN_TISSUES:
        raise ConfigError(f"only {len(tissues)} GTEx tissues have Allen values; correlations "
                          f"need at least {MIN_TISSUES}")
    m = match_genes(allen.genes, table.genes)
    hit = m["gtex_row"].to_numpy() >= 0
    x = allen.values.to_numpy(dtype=np.float64)[hit]
    rows = m["gtex_row"].to_numpy()[hit]
    y = np.log2(table.values[tissues].to_numpy(dtype=np.float64)[rows] + 1.0)
    sp, pe, n = row_correlations(x, y)
    g = allen.genes[hit].reset_index(drop=True)
    genes = pd.DataFrame({
        "gene": g["gene"], "symbol": g["symbol"],
        "gtex_id": table.genes["name"].to_numpy()[rows],
        "matched_by": m["matched_by"].to_numpy()[hit], "n_tissues": n,
        "spearman": sp, "pearson": pe,
    })
    few = n < MIN_TISSUES
    const = ~few & np.isnan(sp)
    genes["note"] = np.where(few, f"fewer than {MIN_TISSUES} tissues with values on both sides",
                             np.where(const, "constant across tissues on one side", ""))
    unmatched = allen.genes[~hit][["gene", "symbol", "ensembl"]].reset_index(drop=True)
    unmatched["reason"] = m["reason"].to_numpy()[~hit]
    # across genes, per tissue: how well the Allen and GTEx gene profiles agree
    tt = allen.tissues.copy()
    across_sp, across_n = [], []
    for t in tt["gtex_tissue"]:
        if t not in tissues:
            across_sp.append(np.nan)
            across_n.append(0)
            continue
        j = tissues.index(t)
        s_, _, k = row_correlations(x[:, j][None], y[:, j][None])
        across_sp.append(float(s_[0]))
        across_n.append(int(k[0]))
    tt["spearman_across_genes"] = across_sp
    tt["n_genes"] = across_n
    tt["ahba_structures"] = tt["ahba"].map(";".join)
    tt["brainspan_structures"] = tt["brainspan"].map(";".join)
    tt = tt.drop(columns=["ahba", "brainspan"])
    valid = genes["spearman"].dropna()
    summary = {
        "source": allen.source, "gtex_file": table.path, "tissues_used": tissues,
        "genes_allen": int(len(allen.genes)), "genes_matched": int(hit.sum()),
        "matched_by": {k: int(v) for k, v in genes["matched_by"].value_counts().items()},
        "genes_unmatched": int((~hit).sum()),
        "unmatched_reasons": {k: int(v) for k, v in
                              unmatched["reason"].str.replace(r" \(.*\)$", "", regex=True)
                              .value_counts().items()},
        "genes_with_correlation": int(valid.size),
        "spearman_median": float(valid.median()) if valid.size else None,
        "spearman_quartiles": [float(q) for q in valid.quantile([0.25, 0.75])] if valid.size
        else None,
        "share_spearman_positive": float((valid > 0).mean()) if valid.size else None,
        "pearson_median": float(genes["pearson"].dropna().median()) if valid.size else None,
    }
    return CrossrefResult(genes=genes, unmatched=unmatched, tissues=tt,
                          allen=pd.DataFrame(x, columns=tissues, index=g["gene"]),
                          gtex=pd.DataFrame(y, columns=tissues, index=g["gene"]),
                          summary=summary)


def plot_gene(result: CrossrefResult, gene: str, path: str | os.PathLike, *,
              allen_label: str = "AHBA region mean (log2)", dpi: int = 150) -> Path:
    """Scatter of one gene: GTEx ``log2(TPM + 1)`` against the Allen value, one labelled point
    per tissue, with the correlations in the title."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..atomic import atomic_output

    names = result.genes["gene"].astype(str)
    k = np.flatnonzero((names == gene).to_numpy() |
                       (result.genes["symbol"].astype(str) == gene).to_numpy())
    if k.size == 0:
        why = result.unmatched.loc[result.unmatched["gene"].astype(str) == gene, "reason"]
        raise ConfigError(f"gene {gene!r} is not in the cross-reference"
                          + (f": {why.iloc[0]}" if len(why) else ""))
    row = result.genes.iloc[int(k[0])]
    x = result.gtex.iloc[int(k[0])]
    y = result.allen.iloc[int(k[0])]
    fig, ax = plt.subplots(figsize=(6.2, 4.6), constrained_layout=True)
    ax.scatter(x, y, s=28, color="tab:blue", zorder=3)
    for t in x.index:
        if np.isfinite(x[t]) and np.isfinite(y[t]):
            ax.annotate(t.replace("Brain - ", ""), (x[t], y[t]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ok = np.isfinite(x.to_numpy()) & np.isfinite(y.to_numpy())
    if ok.sum() >= 2:
        b, a = np.polyfit(x.to_numpy()[ok], y.to_numpy()[ok], 1)
        xs = np.linspace(x[ok].min(), x[ok].max(), 10)
        ax.plot(xs, a + b * xs, color="0.5", lw=1, ls="--", zorder=2)
    ax.set_xlabel("GTEx median log2(TPM + 1)")
    ax.set_ylabel(allen_label)
    ax.set_title(f"{row['symbol']} ({row['gtex_id']}): Spearman {row['spearman']:.2f}, "
                 f"Pearson {row['pearson']:.2f}, n = {row['n_tissues']}", fontsize=9)
    out = Path(path)
    atomic_output(out, lambda p: fig.savefig(p, dpi=dpi, format=out.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return out
