"""``StoreHumanBrainAtlas``: the ``HumanBrainAtlas`` interface answered from a local store.

Same methods and return shapes as :class:`atlas_engine.fetch.api.HumanBrainAtlas` (which asks
the Allen RMA API), but offline and in milliseconds: the tables come from the converted store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..sources.donors import DONORS, resolve_donors
from . import layout as L


class StoreHumanBrainAtlas:
    """Donors, genes, probes, structures and microarray expression from a converted store."""

    def __init__(self, store: Any) -> None:
        from .open import AtlasStore, open_store

        self.store = store if isinstance(store, AtlasStore) else open_store(store)

    def get_donors(self) -> pd.DataFrame:
        """One row per donor in the store (``id``, ``name``, ``age``, ``sex``, ``n_samples``)."""
        counts = self.store.samples.groupby("donor").size()
        rows = [{"id": d.id, "name": d.name, "age": d.age, "sex": d.sex,
                 "n_samples": int(counts.get(d.id, 0))}
                for d in DONORS if d.id in self.store.donors]
        return pd.DataFrame(rows)

    def get_genes(self, symbols: Sequence[str] | None = None) -> pd.DataFrame:
        """Genes (``id``, ``acronym``, ``name``, ``entrez_id``, ``chromosome``), by symbol."""
        p = self.store.probes
        genes = (p[["gene_id", "gene_symbol", "gene_name", "entrez_id", "chromosome"]]
                 .drop_duplicates("gene_id")
                 .rename(columns={"gene_id": "id", "gene_symbol": "acronym", "gene_name": "name"}))
        if isinstance(symbols, str):
            symbols = [symbols]
        if symbols is not None:
            missing = [s for s in symbols if s not in set(genes["acronym"])]
            if missing:
                raise ConfigError(f"unknown gene symbol(s): {', '.join(missing)}")
            genes = genes[genes["acronym"].isin(symbols)]
        return genes.sort_values("id", kind="stable").reset_index(drop=True)

    def get_probes(self, symbols: Sequence[str]) -> pd.DataFrame:
        """Probes of the given genes (``id``, ``name``, ``gene_id``, ``gene_symbol``)."""
        genes = self.get_genes(symbols)
        p = self.store.probes
        probes = p[p["gene_id"].isin(genes["id"])][["probe_id", "probe_name", "gene_id",
                                                     "gene_symbol"]]
        probes = probes.rename(columns={"probe_id": "id", "probe_name": "name"})
        return probes.sort_values("id", kind="stable").reset_index(drop=True)

    def get_structures(self, graph_id: int = 10) -> pd.DataFrame:
        """Every ontology structure, ordered by ``graph_order``."""
        t = self.store.ontology.table.reset_index(drop=True)
        return t.sort_values("graph_order", kind="stable").reset_index(drop=True)

    def get_microarray_expression(
        self, symbols: Sequence[str], donors: Iterable[int | str] | str | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """``(expression, samples, probes)`` as from the live API: ``expression`` is float64
        probes × samples (index ``probe_id``, columns 0..n-1 matching ``samples`` rows)."""
        from ..aggregate.rowtasks import open_array, read_rows

        probes = self.get_probes(symbols)
        donor_ids = [d.id for d in (resolve_donors(donors) if donors is not None else DONORS)
                     if d.id in self.store.donors]
        if not donor_ids:
            raise ConfigError("none of the requested donors is in the store")
        row_of = {int(pid): i for i, pid in enumerate(self.store.probes["probe_id"])}
        rows = np.array([row_of[int(p)] for p in probes["id"]], dtype=np.int64)
        blocks, tables = [], []
        samples = self.store.samples
        names = {d.id: d.name for d in DONORS}
        for d in donor_ids:
            # the probes' rows of the donor's matrix (all samples), as float64: a task per
            # chunk row
            blocks.append(read_rows(open_array(self.store.url, d, L.EXPRESSION), rows))
            s = samples[samples["donor"] == d]
            tables.append(pd.DataFrame({
                "donor_id": s["donor"].to_numpy(), "donor_name": names[d],
                "sample_well": s["well_id"].to_numpy(),
                "structure_id": s["structure_id"].to_numpy(),
                "structure_abbreviation": s["structure_acronym"].to_numpy(),
                "structure_name": s["structure_name"].to_numpy(),
                "mri_voxel_x": s["mri_voxel_x"].to_numpy(),
                "mri_voxel_y": s["mri_voxel_y"].to_numpy(),
                "mri_voxel_z": s["mri_voxel_z"].to_numpy(),
            }))
        expression = pd.DataFrame(np.concatenate(blocks, axis=1),
                                  index=pd.Index(probes["id"].to_numpy(), name="probe_id"))
        expression.columns.name = "sample"
        return expression, pd.concat(tables, ignore_index=True), probes
