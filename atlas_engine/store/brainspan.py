"""``open_brainspan``: a converted BrainSpan store (``genes_matrix_csv.zip``) as tables and a lazy
matrix, and ``verify_brainspan``.

>>> bs = open_brainspan("brainspan.zarr")                       # doctest: +SKIP
>>> bs.samples[["donor_id", "age", "period", "structure_acronym", "region"]]
>>> bs.expression                                               # gene × sample, dask-backed
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import FormatError, StoreAccessError, StoreError, StoreNotFoundError
from ..sources.devtime import BRAINSPAN_AGES, annotate_samples
from . import layout as L
from .access import remote_access
from .open import store_missing

if TYPE_CHECKING:
    import dask.array

#: Group holding the BrainSpan arrays (convert/brainspan.py writes it).
GROUP = "brainspan"
GENE_COLUMNS = ("gene_id", "ensembl_gene_id", "gene_symbol", "entrez_id")
SAMPLE_COLUMNS = ("donor_id", "donor_name", "age", "gender", "structure_id",
                  "structure_acronym", "structure_name")
#: real size of the genes matrix
REAL_SHAPE = (52_376, 524)


def store_format(url: str) -> str | None:
    """The ``format`` recorded in a store's root attributes (None when unreadable: the
    caller's opener explains). Read from the root ``zarr.json`` without importing zarr."""
    from .chunkplan import node_attributes

    try:
        attrs = node_attributes(str(url))
    except Exception:  # noqa: BLE001 - any unreadable store: the caller's opener explains
        return None
    engine = (attrs or {}).get(L.ROOT_ATTR, {})
    return engine.get("format") if isinstance(engine, dict) else None


class BrainSpanStore:
    """A converted BrainSpan RNA-seq store.

    Attributes
    ----------
    genes : pandas.DataFrame
        ``rows_metadata`` (``row_num`` index) with ``gene_id``, ``ensembl_gene_id``,
        ``gene_symbol``, ``entrez_id`` (-1 = missing).
    samples : pandas.DataFrame
        ``columns_metadata`` (``column_num`` index) plus ``age_years``, ``age_pcd``, ``period``,
        ``period_name`` and ``region`` (see :mod:`atlas_engine.sources.devtime`).
    expression : dask.array.Array
        ``(gene, sample)`` RPKM in the stored dtype.
    """

    def __init__(self, url: str) -> None:
        import zarr

        self.url = url
        try:
            with remote_access(url):
                root = zarr.open_group(url, mode="r", zarr_format=3)
        except StoreAccessError:
            raise
        except Exception as exc:  # noqa: BLE001
            if store_missing(url):
                raise StoreNotFoundError(f"{url}: no such store") from None
            raise StoreError(f"{url}: not a zarr v3 store ({exc})") from None
        self.attrs: dict[str, Any] = dict(root.attrs.get(L.ROOT_ATTR, {}))
        if self.attrs.get("format") != L.FORMAT_BRAINSPAN:
            raise StoreError(f"{url}: not a BrainSpan store (format {self.attrs.get('format')!r})")
        if GROUP not in root:
            raise StoreError(f"{url}: the BrainSpan group is missing (conversion unfinished?)")
        self._group = root[GROUP]

    def __repr__(self) -> str:
        return f"BrainSpanStore({self.url!r}, genes={len(self.genes)}, samples={len(self.samples)})"

    def _column(self, name: str) -> np.ndarray:
        if name not in self._group:
            raise StoreError(f"{self.url}: BrainSpan array {name!r} is missing")
        v = np.asarray(self._group[name][:])
        return v.astype(object) if v.dtype.kind in "TUO" else v

    @cached_property
    def genes(self) -> pd.DataFrame:
        frame = pd.DataFrame({c: self._column(c) for c in GENE_COLUMNS})
        frame.index = pd.Index(self._column(L.GENE_DIM), name="row_num")
        return frame

    @cached_property
    def raw_samples(self) -> pd.DataFrame:
        """``columns_metadata`` as converted (no derived columns)."""
        frame = pd.DataFrame({c: self._column(c) for c in SAMPLE_COLUMNS})
        frame.index = pd.Index(self._column(L.SAMPLE_DIM), name="column_num")
        return frame

    @cached_property
    def samples(self) -> pd.DataFrame:
        try:
            return annotate_samples(self.raw_samples)
        except ValueError as exc:
            raise FormatError(f"{self.url}/{GROUP}/age", str(exc),
                              expected="ages like '8 pcw', '4 mos', '40 yrs'") from None

    @cached_property
    def expression(self) -> dask.array.Array:
        import dask.array as da

        arr = self._group[L.EXPRESSION]
        return da.from_zarr(arr)


def open_brainspan(path_or_url: str | os.PathLike) -> BrainSpanStore:
    """Open a store written by ``atlas-engine convert --dataset brainspan``."""
    text = os.fspath(path_or_url)
    return BrainSpanStore(text[len("file://"):] if text.startswith("file://") else text)


def verify_brainspan(url: str | os.PathLike, *, checksums: bool = True) -> Any:
    """Check a BrainSpan store: shape against its tables, completeness, ages (every one parses
    and has a Kang period), NaN/inf, negative RPKM and the chunk CRCs conversion recorded."""
    import zarr

    from .verify import VerifyReport, _check_matrix

    bs = open_brainspan(url)
    report = VerifyReport()
    s = report.summary
    s["dataset"] = "brainspan"
    arr = bs._group[L.EXPRESSION]
    n, m = arr.shape
    s["genes"], s["samples"] = n, m
    if len(bs.genes) != n or len(bs.raw_samples) != m:
        report.fail(f"expression is {n} × {m}; rows_metadata has {len(bs.genes)} genes and "
                    f"columns_metadata {len(bs.raw_samples)} samples")
    if (n, m) != REAL_SHAPE:
        s["note"] = f"not the real size {REAL_SHAPE[0]} × {REAL_SHAPE[1]}"
    g = zarr.open_group(bs.url, path=GROUP, mode="r", zarr_format=3)
    if not g.attrs.get("complete"):
        report.fail("BrainSpan group not marked complete")
    try:
        samples = bs.samples
    except FormatError as exc:
        report.fail(str(exc))
        samples = None
    if samples is not None:
        s["donors"] = int(samples["donor_id"].nunique())
        s["structures"] = int(samples["structure_acronym"].nunique())
        s["ages"] = int(samples["age"].nunique())
        s["periods"] = {str(k): int(v) for k, v in
                        samples["period"].value_counts().sort_index(
                            key=lambda x: x.str[1:].astype(int)).items()}
        unknown = sorted(set(samples["age"].astype(str)) - set(BRAINSPAN_AGES))
        if unknown:
            s["ages_not_in_real_data"] = unknown
        per_donor = samples.groupby("donor_id")["age"].nunique()
        if (per_donor > 1).any():
            report.fail(f"donors with more than one age: {per_donor[per_donor > 1].index.tolist()}")
    dup = bs.genes["ensembl_gene_id"].astype(str)
    dup = dup[dup.duplicated() & (dup != "")]
    if len(dup):
        report.fail(f"duplicate ensembl_gene_id in rows_metadata: {sorted(set(dup))[:5]}")
    s["nan"] = s["inf"] = 0
    cs = g.attrs.get("checksums", {})
    if checksums:
        if L.EXPRESSION not in cs:
            report.fail("no checksums recorded for expression")
        else:
            # one pass of Dask tasks: checksums, NaN, inf and negative values
            nn, ni, neg = _check_matrix(bs.url, f"{GROUP}/{L.EXPRESSION}", cs[L.EXPRESSION],
                                        tuple(cs.get("chunks", (0, 0))),
                                        "brainspan expression", report)
            s["nan"], s["inf"], s["negative"] = nn, ni, neg
            if neg:
                report.fail(f"{neg} negative RPKM values")
    return report
