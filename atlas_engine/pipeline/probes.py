"""Intensity-based probe filtering and probe → gene selection (abagen's ``probes_.py``).

Inputs are plain arrays: per donor a probes × samples matrix of raw log2 values (rows in the
order of the probe table), per donor the samples' AHBA ``structure_id``, and a probe table with
columns ``probe_id`` and ``gene_symbol``. For parity with abagen the probe table should be sorted
by ``probe_id`` (ties go to the first probe in table order).

Every probe gets a score and a reason saying why it was or was not chosen, so the caller can
write an explanation table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from ..choices import DONOR_PROBES
from ..errors import ConfigError
from ._stats import column_corr, group_mean_columns, rank_average
from .registry import Registry, check_choice

# --------------------------------------------------------------------------------------------
# intensity-based filter (§4.5)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntensityFilter:
    """Result of :func:`intensity_filter`.

    ``fraction`` is the share of samples above background per probe: (P,) pooled over donors, or
    (P, D) per donor when ``per_donor=True`` (then a probe is kept only if every donor passes).
    """

    keep: np.ndarray
    fraction: np.ndarray
    signal: np.ndarray
    n_samples: np.ndarray
    threshold: float

    def reasons(self) -> list[str]:
        frac = self.fraction if self.fraction.ndim == 1 else self.fraction.min(axis=1)
        word = "above background in" if self.fraction.ndim == 1 else "lowest donor share"
        return [
            f"{'kept' if k else 'dropped'} by intensity filter: {word} {f:.3f} "
            f"{'>=' if k else '<'} {self.threshold:g}"
            for k, f in zip(self.keep.tolist(), frac.tolist(), strict=True)
        ]


def intensity_filter(
    pacall: Sequence[np.ndarray], threshold: float = 0.5, per_donor: bool = False
) -> IntensityFilter:
    """Keep probes above background in at least ``threshold`` of the samples.

    Parameters
    ----------
    pacall : sequence of (P, S_d) bool arrays
        Per donor the PACall flags of the samples left after sample QC (mirrored duplicates
        included as extra columns).
    threshold : float
        Clipped to [0, 1]; a probe is kept when ``signal / n >= threshold``.
    per_donor : bool
        False (abagen): pool every donor's samples. True: the fraction is computed per donor
        and a probe must pass in every donor.
    """
    if not pacall:
        raise ConfigError("intensity filter needs at least one donor")
    t = float(np.clip(threshold, 0.0, 1.0))
    signal = np.column_stack([np.asarray(p).sum(axis=1, dtype=np.int64) for p in pacall])
    n = np.asarray([np.asarray(p).shape[1] for p in pacall], dtype=np.int64)
    if per_donor:
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = signal / n
        keep = np.all(frac >= t, axis=1)
        return IntensityFilter(keep, frac, signal, n, t)
    tot_signal = signal.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = tot_signal / n.sum()
    return IntensityFilter(frac >= t, frac, tot_signal, np.asarray(n.sum()), t)


# --------------------------------------------------------------------------------------------
# probe scores
# --------------------------------------------------------------------------------------------


def structure_means(x: np.ndarray, structure_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of every probe over each structure's samples: (sorted ids, P × n_structures),
    Kahan-summed in sample order as pandas' groupby mean (abagen's ``_groupby_structure_id``),
    the same arithmetic as the store path (:func:`.passes.structure_means`), so both see the
    same ties when the means are ranked."""
    from ..kernels.compensated import group_mean_compensated

    uniq, codes = np.unique(np.asarray(structure_ids), return_inverse=True)
    return uniq, group_mean_compensated(np.asarray(x, dtype=np.float64), codes.reshape(-1),
                                        len(uniq))


def diff_stability(
    expression: Sequence[np.ndarray], structure_ids: Sequence[np.ndarray]
) -> np.ndarray:
    """Differential stability per probe (abagen ``_diff_stability``), needs ≥ 2 donors.

    Per donor the structure means; per donor pair the Spearman correlation (average-tie ranks,
    ddof=1 z-scores) over the structures both donors have; DS = the plain mean over pairs (a NaN
    in any pair gives NaN).
    """
    if len(expression) < 2:
        raise ConfigError("differential stability needs at least two donors")
    means = [structure_means(x, s) for x, s in zip(expression, structure_ids, strict=True)]
    return diff_stability_from_means(means)


def diff_stability_from_means(means: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """:func:`diff_stability` from per-donor ``(sorted structure ids, P × n_structures means)``
    (e.g. computed block-wise from a store)."""
    if len(means) < 2:
        raise ConfigError("differential stability needs at least two donors")
    from ..kernels.ranks import mean_pair_spearman

    pairs, cols = [], []
    for (d1, (ids1, _)), (d2, (ids2, _)) in combinations(enumerate(means), 2):
        _, i1, i2 = np.intersect1d(ids1, ids2, return_indices=True)
        pairs.append((d1, d2))
        cols.append((i1, i2))
    return mean_pair_spearman([np.asarray(m, dtype=np.float64) for _, m in means], pairs, cols)


def rnaseq_correlation(
    expression: Sequence[np.ndarray],
    structure_ids: Sequence[np.ndarray],
    gene_symbols: np.ndarray,
    rnaseq: Sequence[tuple[int, pd.DataFrame, np.ndarray]],
) -> np.ndarray:
    """Per probe, the nan-mean over RNA-seq donors of the Spearman correlation between the
    probe's microarray structure means and its gene's TPM structure means (abagen ``_rnaseq``).

    ``rnaseq`` holds ``(donor position in expression, TPM genes × samples frame indexed by gene
    symbol, structure id per RNA-seq sample)``. RNA-seq genes with a (near) zero SD over
    structures are ignored. Probes with no RNA-seq gene get NaN.
    """
    syms = np.asarray(gene_symbols).astype(str)
    out = np.full((len(syms), len(rnaseq)), np.nan)
    for n, (pos, tpm, rna_sid) in enumerate(rnaseq):
        mid, micro = structure_means(expression[pos], structure_ids[pos])
        rid, rna = structure_means(np.asarray(tpm, dtype=np.float64), rna_sid)
        rna_genes = np.asarray(tpm.index).astype(str)
        ok = ~np.isclose(np.std(rna, axis=1, ddof=1), 0)
        rna, rna_genes = rna[ok], rna_genes[ok]
        common, im, ir = np.intersect1d(mid, rid, return_indices=True)
        row_of = pd.Index(rna_genes)
        where = row_of.get_indexer(syms)
        mask = where >= 0
        if not mask.any():
            continue
        m = rank_average(micro[mask][:, im], axis=1)
        r = rank_average(rna[where[mask]][:, ir], axis=1)
        out[mask, n] = column_corr(m.T, r.T)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(out, axis=1)


def _concat(expression: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(x, dtype=np.float64) for x in expression], axis=1)


def _interleave(expression: Sequence[np.ndarray]) -> np.ndarray:
    """Donors' samples concatenated in abagen's pc_loading column order: by position within the
    donor, then donor (pandas aligns the duplicated sample ids that way). Only the PC1 sign
    tie-break between equal-magnitude weights depends on this order."""
    x = _concat(expression)
    pos = np.concatenate([np.arange(np.shape(e)[1]) for e in expression])
    return x[:, np.argsort(pos, kind="stable")]


def pooled_mean_std(expression: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """NaN-skipping mean and std (ddof=1) of each probe over all donors' samples, without
    concatenating the donors (two passes: mean, then squared deviations)."""
    total = np.zeros(np.shape(expression[0])[0])
    count = np.zeros_like(total)
    for x in expression:
        x = np.asarray(x, dtype=np.float64)
        ok = ~np.isnan(x)
        total += np.sum(x, axis=1, where=ok)
        count += ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        ss = np.zeros_like(total)
        for x in expression:
            x = np.asarray(x, dtype=np.float64)
            d = x - mean[:, None]
            ss += np.sum(d * d, axis=1, where=~np.isnan(d))
        std = np.sqrt(ss / (count - 1))
    std[count < 2] = np.nan
    return mean, std


def _nan_stat(func: Callable, x: np.ndarray, **kw) -> np.ndarray:
    import warnings

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return func(x, axis=1, **kw)


def _pc1_scores(data: np.ndarray) -> np.ndarray:
    """Scores on the first principal component of a probes × samples block, each sample
    centred across the probes and the component's largest-magnitude weight made positive."""
    centred = data - data.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    # |weights| equal up to rounding noise count as ties (first one wins), so the sign does
    # not depend on the LAPACK build when the data have exact ties
    mag = np.round(np.abs(vt), 12)
    sign = np.sign(vt[np.arange(len(vt)), np.argmax(mag, axis=1)])
    return centred @ (vt[0] * sign[0])


def _corr_scores(data: np.ndarray, fallback: str) -> np.ndarray:
    if len(data) > 2:
        return np.mean((np.corrcoef(data) + 1) / 2, axis=1)
    if fallback == "variance":
        return np.std(data, axis=1)
    return np.mean(data, axis=1)


def _per_gene(
    data: np.ndarray, codes: np.ndarray, func: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Apply ``func`` to each gene's block of probes (genes with one probe get NaN)."""
    score = np.full(len(codes), np.nan)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    with np.errstate(invalid="ignore", divide="ignore"):
        for rows in np.split(order, bounds):
            if len(rows) > 1:
                score[rows] = func(data[rows])
    return score


# --------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Method:
    """How a method scores probes and how a gene's winner is picked from the scores."""

    score: Callable[..., np.ndarray]
    #: "skipna": pandas idxmax (NaN skipped; all-NaN drops the gene);
    #: "numpy": np.argmax (a NaN wins; genes with one probe need no score).
    pick: str
    per_gene: bool = False


SELECTION_METHODS: Registry = Registry("probe selection")

_SCORE_FUNCS: dict[str, _Method] = {
    "max_intensity": _Method(lambda ctx: pooled_mean_std(ctx.expression)[0], "skipna"),
    "max_variance": _Method(lambda ctx: pooled_mean_std(ctx.expression)[1], "skipna"),
    "pc_loading": _Method(
        lambda ctx: _per_gene(_interleave(ctx.expression), ctx.codes, _pc1_scores), "numpy", True
    ),
    "corr_intensity": _Method(
        lambda ctx: _per_gene(
            _concat(ctx.expression), ctx.codes, lambda d: _corr_scores(d, "intensity")
        ),
        "numpy",
        True,
    ),
    "corr_variance": _Method(
        lambda ctx: _per_gene(
            _concat(ctx.expression), ctx.codes, lambda d: _corr_scores(d, "variance")
        ),
        "numpy",
        True,
    ),
    "diff_stability": _Method(
        lambda ctx: diff_stability(ctx.expression, ctx.structure_ids), "skipna"
    ),
    "rnaseq": _Method(
        lambda ctx: rnaseq_correlation(ctx.expression, ctx.structure_ids, ctx.symbols, ctx.rnaseq),
        "skipna",
    ),
}
for _name in _SCORE_FUNCS:
    SELECTION_METHODS.register(_name)(_SCORE_FUNCS[_name].score)
SELECTION_METHODS.register("average", "mean")(lambda ctx: np.full(len(ctx.codes), np.nan))

#: Methods that pool all donors whatever ``donor_probes`` says (abagen's AGG_METHODS).
POOLED_ONLY = ("average", "diff_stability", "rnaseq")


@dataclass
class _Ctx:
    expression: Sequence[np.ndarray]
    structure_ids: Sequence[np.ndarray]
    symbols: np.ndarray
    codes: np.ndarray
    rnaseq: Sequence[tuple[int, pd.DataFrame, np.ndarray]] | None


def pick_best(
    scores: np.ndarray, codes: np.ndarray, n_genes: int, nan_wins: bool = False
) -> np.ndarray:
    """Row index of each gene's best probe (-1 when the gene has none).

    Highest score wins, ties → the first row. ``nan_wins=False`` skips NaN (pandas
    ``idxmax``; a gene whose scores are all NaN gets -1); ``nan_wins=True`` follows
    ``np.argmax`` (the first NaN wins).
    """
    n = len(scores)
    nan = np.isnan(scores)
    filled = np.where(nan, 0.0, scores)
    nan_key = ~nan if nan_wins else nan  # False sorts first
    order = np.lexsort((np.arange(n), -filled, nan_key, codes))
    first = np.ones(n, dtype=bool)
    first[1:] = codes[order][1:] != codes[order][:-1]
    best = np.full(n_genes, -1, dtype=np.int64)
    rows = order[first]
    if not nan_wins:
        rows = rows[~nan[rows]]
    best[codes[rows]] = rows
    return best


@dataclass
class ProbeSelection:
    """Which probe represents each gene, and why.

    Attributes
    ----------
    method, donor_probes : str
    genes : (G,) array of gene symbols, sorted (the output column order).
    rows : list of (G,) int arrays, one per donor: row of the chosen probe in the probe table
        (empty for ``average``, where every probe of a gene is averaged).
    table : DataFrame, one row per probe: probe_id, gene_symbol, score (per donor columns
        ``score_<k>`` for per-donor selection), selected, reason.
    """

    method: str
    donor_probes: str
    genes: np.ndarray
    rows: list[np.ndarray]
    table: pd.DataFrame
    codes: np.ndarray = field(repr=False)

    def apply(self, expression: np.ndarray, donor: int = 0) -> np.ndarray:
        """Gene × sample matrix for one donor's probes × samples ``expression``."""
        x = np.asarray(expression, dtype=np.float64)
        if self.method == "average":
            _, means = group_mean_columns(x.T, self.codes)
            return means.T
        return x[self.rows[donor]]


def select_probes(
    expression: Sequence[np.ndarray],
    structure_ids: Sequence[np.ndarray],
    probes: pd.DataFrame,
    method: str = "diff_stability",
    donor_probes: str = "aggregate",
    rnaseq: Sequence[tuple[int, pd.DataFrame, np.ndarray]] | None = None,
    scores: Sequence[np.ndarray] | None = None,
) -> ProbeSelection:
    """Choose one probe per gene (or average them), as abagen's ``collapse_probes``.

    Parameters
    ----------
    expression : sequence of (P, S_d) arrays
        Raw log2 values of the kept probes (rows in ``probes`` order) per donor.
    structure_ids : sequence of (S_d,) int arrays
        AHBA structure id per sample (used by ``diff_stability`` and ``rnaseq``).
    probes : DataFrame
        Columns ``probe_id`` and ``gene_symbol``, one row per matrix row.
    method : str
        average/mean, max_intensity, max_variance, pc_loading, corr_intensity, corr_variance,
        diff_stability or rnaseq.
    donor_probes : {"aggregate", "independent", "common"}
        Pool donors, select per donor, or use per gene the most frequent per-donor choice
        (smallest probe id on ties). average, diff_stability and rnaseq always pool.
    rnaseq : optional
        For ``method='rnaseq'``: ``(donor position, TPM genes × samples frame, structure ids)``.
    scores : sequence of (P,) arrays, optional
        Precomputed scores (one array for pooled selection, one per donor for
        ``independent``/``common``); ``expression`` then only gives the number of donors and
        its entries may be ``None``.
    """
    name = SELECTION_METHODS.canonical(method)
    check_choice("donor_probes", donor_probes, DONOR_PROBES)
    for col in ("probe_id", "gene_symbol"):
        if col not in probes:
            raise ConfigError(f"probe table lacks column {col!r}")
    if name == "rnaseq" and not rnaseq and scores is None:
        raise ConfigError("probe selection 'rnaseq' needs RNA-seq data")
    if len(expression) != len(structure_ids):
        raise ConfigError("expression and structure_ids must have one entry per donor")
    symbols = np.asarray(probes["gene_symbol"]).astype(str)
    pids = np.asarray(probes["probe_id"])
    for k, x in enumerate(expression):
        if scores is not None:
            break
        if np.shape(x)[0] != len(symbols):
            raise ConfigError(
                f"donor {k}: expression has {np.shape(x)[0]} rows, probe table {len(symbols)}"
            )
    genes, codes = np.unique(symbols, return_inverse=True)
    codes = codes.reshape(-1)
    table = pd.DataFrame({"probe_id": pids, "gene_symbol": symbols})

    if name == "average":
        n_per = np.bincount(codes, minlength=len(genes))
        table["score"] = np.nan
        table["selected"] = True
        table["reason"] = [f"averaged with the {n_per[c]} probe(s) of {symbols[i]}"
                           for i, c in enumerate(codes)]
        return ProbeSelection(name, "aggregate", genes, [], table, codes)

    spec = _SCORE_FUNCS[name]
    nan_wins = spec.pick == "numpy"
    mode = "aggregate" if name in POOLED_ONLY else donor_probes
    given = None if scores is None else [np.asarray(v, dtype=np.float64) for v in scores]
    if mode == "aggregate":
        if given is not None:
            scores = given[0]
        else:
            scores = spec.score(_Ctx(expression, structure_ids, symbols, codes, rnaseq))
        best = pick_best(scores, codes, len(genes), nan_wins)
        if nan_wins:  # genes with one probe: that probe, without a score
            single = np.bincount(codes, minlength=len(genes)) == 1
            best[single] = _first_rows(codes, len(genes))[single]
        table["score"] = scores
        return _finish(name, mode, genes, codes, table, [best] * len(expression), [scores])

    per_donor = []
    score_cols = []
    for k in range(len(expression)):
        if given is not None:
            s = given[k]
        else:
            s = spec.score(_Ctx([expression[k]], [structure_ids[k]], symbols, codes, rnaseq))
        b = pick_best(s, codes, len(genes), nan_wins)
        if nan_wins:
            single = np.bincount(codes, minlength=len(genes)) == 1
            b[single] = _first_rows(codes, len(genes))[single]
        per_donor.append(b)
        score_cols.append(s)
        table[f"score_{k}"] = s
    if mode == "common":
        common = _mode_rows(np.vstack(per_donor), pids)
        per_donor = [common] * len(expression)
    return _finish(name, mode, genes, codes, table, per_donor, score_cols)


def _first_rows(codes: np.ndarray, n_genes: int) -> np.ndarray:
    first = np.full(n_genes, -1, dtype=np.int64)
    uniq, idx = np.unique(codes, return_index=True)
    first[uniq] = idx
    return first


def _mode_rows(choices: np.ndarray, pids: np.ndarray) -> np.ndarray:
    """Per gene (column) the most frequent chosen row across donors; ties → smallest probe id;
    donors without a choice (-1) do not vote."""
    out = np.full(choices.shape[1], -1, dtype=np.int64)
    for g in range(choices.shape[1]):
        col = choices[:, g]
        col = col[col >= 0]
        if col.size == 0:
            continue
        rows, counts = np.unique(col, return_counts=True)
        cand = rows[counts == counts.max()]
        out[g] = cand[np.argmin(pids[cand])]
    return out


def _finish(
    name: str,
    mode: str,
    genes: np.ndarray,
    codes: np.ndarray,
    table: pd.DataFrame,
    rows: list[np.ndarray],
    scores: list[np.ndarray],
) -> ProbeSelection:
    n_probes = np.bincount(codes, minlength=len(genes))
    chosen_by = np.zeros(len(codes), dtype=np.int64)
    for b in rows:
        chosen_by[b[b >= 0]] += 1
    n_donors = len(rows)
    table["selected"] = chosen_by > 0
    # plain Python values: the loop below runs once per probe (~10× faster than numpy scalars)
    pids = table["probe_id"].to_numpy().tolist()
    sym_of = np.asarray(genes, dtype=object)[codes].tolist()
    n_of = n_probes[codes].tolist()
    chosen_n = chosen_by.tolist()
    reasons = []
    if n_donors and mode != "aggregate" and name not in POOLED_ONLY:
        none_chosen = np.all(np.vstack(rows) < 0, axis=0)[codes].tolist()
        for i, sym in enumerate(sym_of):
            if chosen_n[i]:
                what = ("common choice" if mode == "common"
                        else f"chosen in {chosen_n[i]}/{n_donors} donors")
                reasons.append(f"selected for {sym} by {name} ({what})")
            elif none_chosen[i]:
                reasons.append(f"gene {sym} dropped: {name} score is NaN for every probe")
            else:
                reasons.append(f"not selected: {name} picked another probe of {sym} in every "
                               "donor")
    else:
        best_of = rows[0][codes].tolist() if n_donors else [-1] * len(codes)
        score = scores[0].tolist() if n_donors else [math.nan] * len(codes)
        for i, sym in enumerate(sym_of):
            b = best_of[i]
            s = score[i]
            if b < 0:
                reasons.append(f"gene {sym} dropped: {name} score is NaN for every probe")
            elif b == i:
                if n_of[i] == 1:
                    reasons.append(f"selected: the only probe of {sym}")
                else:
                    reasons.append(f"selected: highest {name} score of {n_of[i]} probes of "
                                   f"{sym}")
            elif s != s:
                reasons.append(f"not selected: {name} score is NaN")
            elif s == score[b]:
                reasons.append(f"not selected: ties with probe {pids[b]}, which comes first")
            else:
                reasons.append(f"not selected: {name} score {s:.6g} < {score[b]:.6g} of probe "
                               f"{pids[b]}")
    table["reason"] = reasons
    keep = rows[0] >= 0 if mode != "independent" else np.all(np.vstack(rows) >= 0, axis=0)
    return ProbeSelection(
        name, mode, genes[keep], [b[keep] for b in rows], table, codes
    )


def collapse_probes(
    expression: Sequence[np.ndarray],
    structure_ids: Sequence[np.ndarray],
    probes: pd.DataFrame,
    method: str = "diff_stability",
    donor_probes: str = "aggregate",
    rnaseq: Sequence[tuple[int, pd.DataFrame, np.ndarray]] | None = None,
) -> tuple[list[np.ndarray], ProbeSelection]:
    """:func:`select_probes`, then each donor's samples × genes matrix (genes sorted)."""
    sel = select_probes(expression, structure_ids, probes, method, donor_probes, rnaseq)
    return [sel.apply(x, k).T for k, x in enumerate(expression)], sel


# --------------------------------------------------------------------------------------------
# reannotation (Arnatkevičiūtė et al. 2019)
# --------------------------------------------------------------------------------------------


def load_reannotation() -> pd.DataFrame:
    """The bundled probe reannotation table (probe_name, gene_symbol, entrez_id)."""
    from importlib.resources import files

    with files("atlas_engine.data").joinpath("reannotated.csv.gz").open("rb") as fh:
        return pd.read_csv(fh, compression="gzip",
                           usecols=["probe_name", "gene_symbol", "entrez_id"])


def reannotate_probes(probes: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Replace gene annotations by the reannotation table (abagen ``reannotate_probes``).

    Inner join on ``probe_name``: probes absent from the table are dropped, ``gene_symbol`` and
    ``entrez_id`` come from the table; the result is sorted by ``probe_id`` and rows without
    an Entrez id are removed. Other columns of ``probes`` are kept.
    """
    ref = load_reannotation() if table is None else table
    for col, frame, what in (("probe_name", probes, "probe table"),
                             ("probe_name", ref, "reannotation table"),
                             ("gene_symbol", ref, "reannotation table")):
        if col not in frame:
            raise ConfigError(f"{what} lacks column {col!r}")
    base = probes.drop(columns=[c for c in ("gene_symbol", "entrez_id") if c in probes])
    base = base.reset_index(drop=True)
    ref = ref[["probe_name", "gene_symbol", "entrez_id"]]
    merged = base.merge(ref, on="probe_name", how="inner")
    merged = merged.dropna(subset=["entrez_id"]).sort_values("probe_id", kind="stable")
    merged["entrez_id"] = merged["entrez_id"].astype(np.int64)
    return merged.reset_index(drop=True)
