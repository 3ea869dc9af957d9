"""Per-gene extraction: every probe of some genes in every sample, annotated (no aggregation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .inputs import parse_genes, select_probe_rows
from .rowtasks import compute, open_array, row_tasks

SAMPLE_ANNOTATION = ("donor", "sample_id", "well_id", "structure_id", "structure_acronym",
                     "structure_name", "slab_type", "mni_x", "mni_y", "mni_z")


def extract_expression(
    store: Any,
    genes: str | Sequence[str],
    *,
    donors: Sequence[int] | None = None,
    layout: str = "long",
) -> tuple[pd.DataFrame, list[str]]:
    """The expression of every probe of ``genes`` in every sample of ``donors``.

    ``layout="long"``: one row per (probe, sample) with gene, probe and sample annotation,
    ``expression`` and ``pacall`` columns. ``layout="wide"``: probes × samples, rows annotated
    with probe columns, columns named ``{donor}:{sample_id}``. Returns the table and the
    requested symbols that are not in the store. Only the chunk rows holding the chosen
    probes are read: a Dask task per donor, array and chunk row (the engine's block reader),
    on Dask's threads or the active ``dask.distributed`` client's workers.
    """
    from ..store import layout as L
    from ..store.open import AtlasStore, open_store

    if layout not in ("long", "wide"):
        raise ConfigError(f"layout must be 'long' or 'wide', not {layout!r}")
    st = store if isinstance(store, AtlasStore) else open_store(store)
    wanted = parse_genes(genes)
    if not wanted:
        raise ConfigError("give at least one gene symbol")
    rows, missing = select_probe_rows(st.probes, wanted)
    probes = st.probes.iloc[rows].reset_index(drop=True)
    samples = st.samples
    use = list(st.donors) if donors is None else [int(d) for d in donors]
    bad = [d for d in use if d not in st.donors]
    if bad:
        raise ConfigError(f"donor(s) {bad} not in the store (complete donors: {st.donors})")
    # every donor's expression and PA-call rows as one graph
    reads = []
    for d in use:
        for name, dtype in ((L.EXPRESSION, np.float64), (L.PACALL, np.bool_)):
            arr = open_array(st.url, d, name)
            reads.append((arr.shape[1], dtype, *row_tasks(arr, rows, dtype)))
    results = iter(compute([t for *_, tasks in reads for t in tasks]))
    blocks = []
    for n_cols, dtype, jobs, order, _tasks in reads:
        out = np.empty((len(rows), n_cols), dtype=dtype)
        for _, _, lo, hi in jobs:
            out[order[lo:hi]] = next(results)
        blocks.append(out)
    values, calls = blocks[0::2], blocks[1::2]
    parts = [samples[samples["donor"] == d] for d in use]
    x = np.concatenate(values, axis=1)
    pa = np.concatenate(calls, axis=1)
    samp = pd.concat(parts, ignore_index=True)
    pcols = ["gene_symbol", "probe_id", "probe_name"]
    if layout == "wide":
        cols = [f"{d}:{s}" for d, s in zip(samp["donor"], samp["sample_id"], strict=True)]
        return pd.concat([probes[pcols], pd.DataFrame(x, columns=cols)], axis=1), missing
    n_p, n_s = x.shape
    out = pd.DataFrame({c: np.repeat(probes[c].to_numpy(), n_s) for c in pcols})
    for c in SAMPLE_ANNOTATION:
        if c in samp:
            out[c] = np.tile(samp[c].to_numpy(), n_p)
    out["expression"] = x.reshape(-1)
    out["pacall"] = pa.reshape(-1)
    return out, missing
