"""Probe → gene selection (abagen's ``probes_.py``): the method registry, the pick of each
gene's probe and the reason for every probe.

Inputs are plain arrays: per donor a probes × samples matrix of raw log2 values (rows in the
order of the probe table), per donor the samples' AHBA ``structure_id``, and a probe table with
columns ``probe_id`` and ``gene_symbol``. For parity with abagen the probe table should be sorted
by ``probe_id`` (ties go to the first probe in table order).

Every probe gets a score and a reason saying why it was or was not chosen, so the caller can
write an explanation table. The scores are computed in :mod:`.probe_scores`; the intensity
filter is :mod:`.intensity`, the probe reannotation :mod:`.reannotate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..choices import DONOR_PROBES
from ..errors import ConfigError
from ._stats import group_mean_columns
from .probe_scores import (
    _concat,
    _corr_scores,
    _interleave,
    _pc1_scores,
    _per_gene,
    diff_stability,
    pooled_mean_std,
    rnaseq_correlation,
)
from .registry import Registry, check_choice

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
