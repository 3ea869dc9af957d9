"""BrainSpan donor and specimen metadata from the Allen RMA API (through :class:`RmaClient`).

The queries (RMA text, shared allen_formats.md §5.2; product 24 is the Developing Human
Transcriptome, §6.1)::

    model::Donor,rma::criteria,products[id$eq24]
    model::Specimen,rma::criteria,donor(products[id$eq24])

``atlas-engine query Donor --criteria "products[id\\$eq24]"`` runs the same from the command
line; the local mirror (``atlas-engine serve``) answers both from ``genes_matrix_csv.zip``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import Config
from ..sources.rma import ModelQuery, model_query

BRAINSPAN_PRODUCT_ID = 24


def donor_query() -> ModelQuery:
    """``model::Donor`` restricted to BrainSpan's product."""
    return model_query("Donor", f"products[id$eq{BRAINSPAN_PRODUCT_ID}]")


def specimen_query() -> ModelQuery:
    """``model::Specimen`` of BrainSpan's donors."""
    return model_query("Specimen", f"donor(products[id$eq{BRAINSPAN_PRODUCT_ID}])")


async def abrainspan_metadata(base_url: str | None = None, *,
                              cache_dir: str | Path | None = None
                              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(donors, specimens) as tables, every page fetched (see :func:`brainspan_metadata`)."""
    from .rma import RmaClient

    base = base_url or Config.from_env().brainspan_base_url
    async with RmaClient(base, cache_dir=cache_dir) as client:
        donors = await client.model_rows(donor_query(), cache=cache_dir is not None)
        specimens = await client.model_rows(specimen_query(), cache=cache_dir is not None)
    return pd.DataFrame(donors), pd.DataFrame(specimens)


def brainspan_metadata(base_url: str | None = None, *, cache_dir: str | Path | None = None
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """BrainSpan's donors and specimens from the RMA API at ``base_url`` (default: brainspan.org;
    a mirror such as ``atlas-engine serve``). Specimens carry ``donor_id`` and ``structure_id``;
    join them to donors on ``donor_id`` = ``id``."""
    from .sync import run_sync

    return run_sync(abrainspan_metadata(base_url, cache_dir=cache_dir))
