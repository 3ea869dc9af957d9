"""Probes and samples before any expression is read: the usable probe table, each donor's
sample QC (corrected MNI, mirroring, hemisphere check) and abagen's similarity threshold."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..aggregate import rowtasks
from ..store import layout as L
from .reannotate import reannotate_probes
from .result import DonorSamples
from .samples import (
    corrected_coordinates,
    hemisphere_mismatch,
    mirror_samples,
    similarity_threshold,
)


def probe_table(store: Any, reannotated: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(usable probes sorted by probe_id with a ``row`` column (store row), every store
    probe with its fate)``."""
    raw = store.probes.reset_index(drop=True).copy()
    raw["row"] = np.arange(len(raw))
    fate = raw[["probe_id", "probe_name", "gene_symbol", "entrez_id", "row"]].copy()
    fate["reason"] = ""
    if reannotated:
        table = reannotate_probes(raw)
        fate = fate.merge(table[["probe_id", "gene_symbol", "entrez_id"]].rename(
            columns={"gene_symbol": "reannotated_symbol", "entrez_id": "reannotated_entrez"}),
            on="probe_id", how="left")
        lost = fate["reannotated_symbol"].isna()
        fate.loc[lost, "reason"] = "dropped: not in the probe reannotation table"
    else:
        entrez = pd.to_numeric(raw["entrez_id"], errors="coerce")
        ok = entrez.notna() & (entrez != L.MISSING_INT)
        table = raw[ok.to_numpy()].sort_values("probe_id", kind="stable")
        fate.loc[~ok.to_numpy(), "reason"] = "dropped: no Entrez id"
    table = table.reset_index(drop=True)
    table["gene_symbol"] = table["gene_symbol"].astype(str)
    return table, fate


def donor_samples(
    store: Any, donor: int, corrected_mni: bool, lr_mirror: str | None, mni_table: Any = None
) -> DonorSamples:
    """Sample QC of one donor (no similarity threshold, see :func:`_apply_similarity`)."""
    samples = store.samples
    annot = samples[samples["donor"] == donor].reset_index(drop=True).copy()
    annot["column"] = np.arange(len(annot))
    if corrected_mni:
        annot = corrected_coordinates(annot, mni_table)
    annot["copy"] = "original"
    src = np.arange(len(annot))
    if lr_mirror is not None:
        n_input = len(annot)
        annot, src = mirror_samples(annot, store.ontology, lr_mirror)
        annot = annot.reset_index(drop=True)
        annot.loc[n_input:, "copy"] = "mirror"
    keep, hemi, cls = hemisphere_mismatch(annot["structure_id"].to_numpy(),
                                          annot["mni_x"].to_numpy(), store.ontology)
    annot["hemisphere"] = hemi
    annot["structure"] = cls
    table = annot[["donor", "sample_id", "well_id", "copy", "structure_id", "structure_acronym",
                   "mni_x", "mni_y", "mni_z", "hemisphere", "structure"]].copy()
    table = table.rename(columns={"structure": "class"})
    table["status"] = np.where(keep, "kept", "dropped")
    table["reason"] = [
        "" if k else f"dropped: hemisphere mismatch ({h} structure at mni_x={x:g})"
        for k, h, x in zip(keep.tolist(), hemi.tolist(), annot["mni_x"].tolist(), strict=True)
    ]
    table["qc_row"] = -1
    table.loc[keep, "qc_row"] = np.arange(int(keep.sum()))
    kept = annot[keep].reset_index(drop=True)
    return DonorSamples(donor, kept, np.asarray(src)[keep], table)




def apply_similarity(store: Any, ds: DonorSamples, rows: np.ndarray, t: float) -> None:
    """abagen's similarity threshold on the usable probes (before the intensity filter)."""
    x = rowtasks.read_rows(rowtasks.open_array(store.url, ds.donor, L.EXPRESSION), rows)[:, ds.src]
    keep = similarity_threshold(x, t)
    qc = ds.table["qc_row"].to_numpy()
    for i in np.flatnonzero(qc >= 0):
        if not keep[qc[i]]:
            ds.table.loc[i, ["status", "reason"]] = ["dropped", f"dropped: similarity "
                                                     f"threshold {t:g}"]
    new_qc = np.full(len(qc), -1)
    kept_idx = np.flatnonzero(qc >= 0)[keep[qc[qc >= 0]]]
    new_qc[kept_idx] = np.arange(len(kept_idx))
    ds.table["qc_row"] = new_qc
    ds.annotation = ds.annotation[keep].reset_index(drop=True)
    ds.src = ds.src[keep]


