"""The probe reannotation of Arnatkevičiūtė et al. (2019): the bundled table
(:func:`load_reannotation`) and its join onto a probe table (:func:`reannotate_probes`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ConfigError

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
