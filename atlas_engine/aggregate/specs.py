"""What each statistic *is*, written as chunk → combine → finalize (no scheduling here).

A statistic is an :class:`Aggregation`: the per-block intermediates it needs (computed by the
numba kernels in :mod:`atlas_engine.kernels`), how each intermediate merges across blocks, and a
``finalize`` that turns merged intermediates into the statistic. The numpy path, Dask's threads
and a distributed cluster all run these same functions, so they agree to rounding.

Intermediates (all float64 except ``count``, int64; shaped like the output):

============  ======================================  =========================================
name          meaning                                 merge of two parts ``a``, ``b``
============  ======================================  =========================================
``count``     non-NaN values in the group             ``a + b``
``sum``       sum of the non-NaN values               ``a + b``
``m2``        sum of squared deviations about the     Chan et al. (1979):
              group mean (shifted sums per block)     ``m2a + m2b + (mb - ma)**2 * na*nb/n``
``min``       smallest value (NaN if none)            ``fmin(a, b)``
``max``       largest value (NaN if none)             ``fmax(a, b)``
``nnz``       stored (non-zero) counts (sparse)       ``a + b``
``cpm``       sum of counts per million (sparse)      ``a + b``
``lcpm``      sum of log2(CPM + 1) (sparse)           ``a + b``
============  ======================================  =========================================

The sparse intermediates come from cells × genes count blocks
(:mod:`atlas_engine.aggregate.csr`): CPM is the count over the cell's total times 1e6. Allen's
order statistics of log2(CPM + 1) (trimmed means, medians) need every value of a group at once
and are not mergeable; they are computed apart (:mod:`atlas_engine.celltypes.orderstats`).

Every statistic except ``count`` is NaN where ``count == 0`` (``sum`` too, so an empty group is
never mistaken for a zero sum); ``var``/``std`` are NaN where ``count <= ddof``. ``count`` is
always reported alongside.

``median`` has no mergeable intermediates: it is computed from the values themselves and is only
available where one block holds whole groups, i.e. when the grouped axis is a single chunk
(rechunk the array along that axis first). Its ``chunk`` is empty and the engine treats it apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..kernels import divide_counts
from ..kernels.merge import merge_moments

Intermediates = dict[str, np.ndarray]

#: kernel families and the intermediates each produces in one pass over a block
KERNEL_OUTPUTS: dict[str, tuple[str, ...]] = {
    "sum_count": ("sum", "count"),
    "moments": ("count", "sum", "m2"),
    "minmax": ("min", "max"),
}


@dataclass(frozen=True)
class Aggregation:
    """A statistic as chunk → combine → finalize.

    Attributes
    ----------
    name : str
        The statistic's name (``--stat`` value).
    chunk : tuple of str
        Intermediates computed per block (see the module table).
    combine : tuple of str
        How each of ``chunk`` merges across blocks: ``"sum"``, ``"m2"``, ``"min"`` or ``"max"``.
    finalize : callable
        ``finalize(intermediates, ddof, parallel) -> ndarray`` (float64, NaN where undefined);
        ``parallel`` allows the numba ``prange`` loops (numpy path only, never in Dask tasks).
    fill_value : float
        Value of the statistic for a group with no valid values.
    """

    name: str
    chunk: tuple[str, ...]
    combine: tuple[str, ...]
    finalize: Callable[[Mapping[str, np.ndarray], int, bool], np.ndarray]
    fill_value: float = np.nan

    @property
    def mergeable(self) -> bool:
        return bool(self.chunk)


def _empty_to_nan(x: np.ndarray, count: np.ndarray) -> np.ndarray:
    return np.where(count > 0, x, np.nan)


def _finalize_count(it: Mapping[str, np.ndarray], ddof: int, parallel: bool = False) -> np.ndarray:
    return it["count"]


def _finalize_sum(it: Mapping[str, np.ndarray], ddof: int, parallel: bool = False) -> np.ndarray:
    return _empty_to_nan(it["sum"], it["count"])


def _finalize_mean(it: Mapping[str, np.ndarray], ddof: int, parallel: bool = False) -> np.ndarray:
    return divide_counts(it["sum"], it["count"], 0, parallel=parallel)


def _finalize_var(it: Mapping[str, np.ndarray], ddof: int, parallel: bool = False) -> np.ndarray:
    return divide_counts(it["m2"], it["count"], ddof, parallel=parallel)


def _finalize_std(it: Mapping[str, np.ndarray], ddof: int, parallel: bool = False) -> np.ndarray:
    return np.sqrt(_finalize_var(it, ddof, parallel))


def _finalize_min(it: Mapping[str, np.ndarray], ddof: int, parallel: bool = False) -> np.ndarray:
    return it["min"]


def _finalize_max(it: Mapping[str, np.ndarray], ddof: int, parallel: bool = False) -> np.ndarray:
    return it["max"]


def _finalize_nnz(it: Mapping[str, np.ndarray], ddof: int, parallel: bool = False) -> np.ndarray:
    return _empty_to_nan(np.asarray(it["nnz"], np.float64), it["count"])


def _ratio(key: str) -> Callable[[Mapping[str, np.ndarray], int, bool], np.ndarray]:
    def fin(it: Mapping[str, np.ndarray], ddof: int, parallel: bool = False) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(it["count"] > 0, it[key] / np.where(it["count"] > 0, it["count"], 1),
                            np.nan)
    fin.__name__ = f"_finalize_{key}_mean"
    return fin


def _finalize_median(it: Mapping[str, np.ndarray], ddof: int, parallel: bool = False) -> np.ndarray:
    return it["median"]


AGGREGATIONS: dict[str, Aggregation] = {
    a.name: a
    for a in (
        Aggregation("count", ("count",), ("sum",), _finalize_count, fill_value=0),
        Aggregation("sum", ("sum", "count"), ("sum", "sum"), _finalize_sum),
        Aggregation("mean", ("sum", "count"), ("sum", "sum"), _finalize_mean),
        Aggregation("var", ("count", "sum", "m2"), ("sum", "sum", "m2"), _finalize_var),
        Aggregation("std", ("count", "sum", "m2"), ("sum", "sum", "m2"), _finalize_std),
        Aggregation("min", ("min",), ("min",), _finalize_min),
        Aggregation("max", ("max",), ("max",), _finalize_max),
        Aggregation("median", (), (), _finalize_median),
        # single-cell statistics (sparse count blocks only)
        Aggregation("nnz", ("nnz", "count"), ("sum", "sum"), _finalize_nnz),
        Aggregation("frac", ("nnz", "count"), ("sum", "sum"), _ratio("nnz")),
        Aggregation("cpm", ("cpm", "count"), ("sum", "sum"), _ratio("cpm")),
        Aggregation("logcpm", ("lcpm", "count"), ("sum", "sum"), _ratio("lcpm")),
    )
}


def resolve(stats: str | Iterable[str]) -> list[Aggregation]:
    """The :class:`Aggregation` of each name in ``stats`` (``count`` is always added)."""
    names = [stats] if isinstance(stats, str) else list(stats)
    out: list[Aggregation] = []
    for name in [*names, "count"]:
        agg = AGGREGATIONS.get(str(name).lower())
        if agg is None:
            raise ConfigError(f"unknown statistic {name!r} (expected one of {', '.join(AGGREGATIONS)})")
        if agg not in out:
            out.append(agg)
    return out


def needed_intermediates(aggs: Sequence[Aggregation]) -> tuple[str, ...]:
    """Union of the intermediates of ``aggs`` (``count`` always included), in a fixed order."""
    want = {"count"}
    for a in aggs:
        want.update(a.chunk)
    return tuple(n for n in ("count", "sum", "m2", "min", "max", "nnz", "cpm", "lcpm", "gslot",
                             "gval") if n in want)

#: intermediates only the sparse (single-cell) chunk step produces
SPARSE_ONLY = frozenset({"nnz", "cpm", "lcpm", "gslot", "gval"})


def kernel_families(needed: Iterable[str]) -> tuple[str, ...]:
    """The fewest kernel passes that produce ``needed``."""
    need = set(needed)
    fams = []
    if "m2" in need:
        fams.append("moments")
    elif need & {"sum", "count"}:
        fams.append("sum_count")
    if need & {"min", "max"}:
        fams.append("minmax")
    return tuple(fams)


# ------------------------------------------------------------------------------------------
# combine
# ------------------------------------------------------------------------------------------
def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b``; two 2-D arrays constant along their last axis (broadcast views, such as the
    per-group cell counts of sparse blocks) stay a broadcast view."""
    if (a.ndim == 2 and b.ndim == 2 and a.shape == b.shape and a.shape[1] > 1
            and a.strides[1] == 0 and b.strides[1] == 0):
        return np.broadcast_to(a[:, :1] + b[:, :1], a.shape)
    return a + b


def _as_2d(x: np.ndarray) -> np.ndarray:
    """``x`` as a 2-D view (0-D and 1-D intermediates become one row; 2-D ones stay as they
    are, broadcast counts included)."""
    x = np.asarray(x)
    return x if x.ndim == 2 else x.reshape(1, -1)


def _writable(x: np.ndarray) -> bool:
    return bool(x.ndim and x.flags.writeable and x.flags.c_contiguous and x.strides[-1] != 0)


def merge_pair(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray],
               into: bool = False) -> Intermediates:
    """Merge the intermediates of two disjoint sets of values (same keys, same shapes).

    ``into``: the caller owns ``a`` and will not read it again; its arrays are reused for the
    result where they can be (no new full-size arrays for additive intermediates and m2).
    """
    out: Intermediates = {}
    if "m2" in a:
        # Chan et al.: m2 = m2a + m2b + delta² · na·nb / n (one numba pass, no temporaries)
        shape = np.shape(a["sum"])
        reuse = (into and _writable(a["sum"]) and _writable(a["m2"])
                 and a["sum"].dtype == np.float64 and a["m2"].dtype == np.float64)
        s, m2 = merge_moments(*(_as_2d(a[k]) for k in ("count", "sum", "m2")),
                              *(_as_2d(b[k]) for k in ("count", "sum", "m2")),
                              _as_2d(a["sum"]) if reuse else None,
                              _as_2d(a["m2"]) if reuse else None)
        out["sum"], out["m2"] = ((s, m2) if s.shape == shape
                                 else (s.reshape(shape), m2.reshape(shape)))
    for key in a:
        if key in out:
            continue
        if key in ("count", "sum", "nnz", "cpm", "lcpm"):
            if into and _writable(a[key]) and a[key].shape == b[key].shape:
                out[key] = np.add(a[key], b[key], out=a[key])
            else:
                out[key] = _add(a[key], b[key])
        elif key == "min":
            out[key] = np.fmin(a[key], b[key])
        elif key == "max":
            out[key] = np.fmax(a[key], b[key])
        elif key != "m2":
            raise ConfigError(f"intermediate {key!r} cannot be merged across blocks")
    return out


def merge(parts: Sequence[Mapping[str, np.ndarray]]) -> Intermediates:
    """Merge any number of parts (a left fold of :func:`merge_pair`)."""
    if not parts:
        raise ConfigError("nothing to merge")
    acc = dict(parts[0])
    for i, p in enumerate(parts[1:]):
        # from the second merge on, acc holds arrays made here: reuse them
        acc = merge_pair(acc, p, into=i > 0)
    return acc


def _sparse_rollup(values: np.ndarray, member: np.ndarray) -> np.ndarray:
    """``values @ member`` over the last axis, with ``member`` a sparse 0/1 matrix."""
    from scipy import sparse

    lead = values.shape[:-1]
    flat = np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1])
    weights = sparse.csr_matrix(member.T.astype(np.float64))      # (n_out, n_labels)
    out = np.asarray(weights @ flat.T).T                          # (rows, n_out)
    return np.ascontiguousarray(out).reshape(*lead, member.shape[1])


def rollup(inter: Mapping[str, np.ndarray], membership: np.ndarray, group_axis: int) -> Intermediates:
    """Roll per-label intermediates up to groups that each contain several labels.

    ``membership`` is a boolean ``(n_labels, n_out)`` matrix: output group ``k`` merges the
    labels ``l`` with ``membership[l, k]`` (e.g. a structure and all its descendants). Labels
    may belong to several groups. Sums and counts are matrix products; ``m2`` uses the n-ary
    form of Chan's formula, ``sum(m2_l) + sum(n_l * (mean_l - mean_k)**2)``; min/max reduce over
    the member columns. ``group_axis`` is the axis of the intermediates that holds labels.
    """
    member = np.asarray(membership, dtype=bool)
    if member.ndim != 2:
        raise ConfigError(f"roll-up matrix must be 2-D (n_labels, n_groups), got {member.shape}")
    moved = {k: np.moveaxis(np.asarray(v), group_axis, -1) for k, v in inter.items()}
    n_labels = next(iter(moved.values())).shape[-1]
    if member.shape[0] != n_labels:
        raise ConfigError(f"roll-up matrix has {member.shape[0]} rows, intermediates have "
                          f"{n_labels} labels")
    n_out = member.shape[1]
    out: Intermediates = {}
    count = moved["count"]
    # counts are summed in float64 (exact below 2**53); the roll-up matrix is sparse (a label
    # is in as many groups as it has ancestors among them), so a sparse product costs
    # O(rows × nnz) instead of a dense O(rows × labels × groups)
    out["count"] = np.rint(_sparse_rollup(count.astype(np.float64), member)).astype(np.int64)
    if "sum" in moved:
        out["sum"] = _sparse_rollup(moved["sum"], member)
    members = [np.flatnonzero(member[:, k]) for k in range(n_out)]
    lead = count.shape[:-1]
    if "m2" in moved:
        m2 = np.zeros((*lead, n_out))
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_l = moved["sum"] / count
            mean_k = out["sum"] / out["count"]
            for k, idx in enumerate(members):
                if idx.size == 0:
                    continue
                d = mean_l[..., idx] - mean_k[..., k : k + 1]
                dev = np.where(count[..., idx] > 0, count[..., idx] * d * d, 0.0)
                m2[..., k] = moved["m2"][..., idx].sum(axis=-1) + dev.sum(axis=-1)
        out["m2"] = m2
    for key, ufunc in (("min", np.fmin), ("max", np.fmax)):
        if key in moved:
            res = np.full((*lead, n_out), np.nan)
            for k, idx in enumerate(members):
                if idx.size:
                    res[..., k] = ufunc.reduce(moved[key][..., idx], axis=-1)
            out[key] = res
    return {k: np.moveaxis(v, -1, group_axis) for k, v in out.items()}


def finalize(inter: Mapping[str, np.ndarray], aggs: Sequence[Aggregation], ddof: int,
             parallel: bool = False, reuse: bool = False) -> Intermediates:
    """Turn merged intermediates into ``{statistic name: array}``.

    ``parallel`` (numpy path only) allows the numba ``prange`` loops. ``reuse`` says the caller
    owns ``inter`` and will not read it again: ``mean`` is then divided in place into the
    ``sum`` intermediate when ``sum`` itself is not asked for (no second full-size array).
    """
    names = {a.name for a in aggs}
    out: Intermediates = {}
    for a in aggs:
        if (a.name == "mean" and reuse and "sum" not in names
                and inter["sum"].dtype == np.float64 and inter["sum"].flags.c_contiguous
                and inter["sum"].flags.writeable):
            out["mean"] = divide_counts(inter["sum"], inter["count"], 0, parallel=parallel,
                                        out=inter["sum"])
        else:
            out[a.name] = a.finalize(inter, ddof, parallel)
    return out
