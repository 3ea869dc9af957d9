"""What :func:`~.expression.get_expression_data` returns, and the per-donor sample set it
carries between its steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class ExpressionResult:
    """Output of :func:`get_expression_data`.

    Attributes
    ----------
    expression : DataFrame
        Regions × genes, index ``label`` (atlas label ids), columns gene symbols (abagen's
        shape). With ``return_donors``: the first donor's frame (see ``donors``).
    donors : dict[int, DataFrame] or None
        Per-donor regions × genes frames (``return_donors=True``; no gene drop).
    counts : DataFrame or None
        Regions × donors number of matched samples (``return_counts=True``).
    probes, genes, samples : DataFrame
        Explanation tables: every probe, gene and sample with what happened to it and why
        (built on first access, from what the run kept in memory).
    params : dict
        Every parameter as used.
    computed : dict[str, bool]
        Which atlas-independent products were computed in this call (False = cache hit).
    timings : dict[str, float]
        Seconds per step.
    """

    expression: pd.DataFrame
    donors: dict[int, pd.DataFrame] | None
    counts: pd.DataFrame | None
    params: dict[str, Any]
    computed: dict[str, bool] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    store_url: str = ""
    store_attrs: dict[str, Any] = field(default_factory=dict)
    #: the explanation tables: each a DataFrame or a function building it
    tables: dict[str, Any] = field(default_factory=dict, repr=False)

    def _table(self, name: str) -> pd.DataFrame:
        value = self.tables[name]
        if callable(value):
            value = self.tables[name] = value()
        return value

    @property
    def probes(self) -> pd.DataFrame:
        return self._table("probes")

    @property
    def genes(self) -> pd.DataFrame:
        return self._table("genes")

    @property
    def samples(self) -> pd.DataFrame:
        return self._table("samples")

    def methods(self) -> str:
        from .explain import methods_text

        return methods_text(self)

    def provenance(self) -> dict[str, Any]:
        from .explain import provenance

        return provenance(self)


@dataclass
class DonorSamples:
    """One donor after sample QC: kept rows (duplicates for mirrored copies)."""

    donor: int
    annotation: pd.DataFrame      # kept samples, in abagen's order
    src: np.ndarray               # column in the donor's arrays of every kept sample
    table: pd.DataFrame           # explanation rows of every input and mirrored sample

