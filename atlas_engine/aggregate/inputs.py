"""What a caller asks an aggregation for, resolved against the store: gene lists
(:func:`parse_genes`), the store rows of their probes (:func:`select_probe_rows`) and donor
ids (:func:`_donor_ids`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def parse_genes(spec: str | Sequence[str] | None) -> list[str] | None:
    """``"BDNF,COMT"`` / ``["BDNF", "COMT"]`` / ``"@genes.txt"`` (one symbol per line or
    comma-separated; ``#`` comments) → symbols; ``None``/``"all"`` → ``None`` (every gene)."""
    if spec is None:
        return None
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        text = str(item).strip()
        if text.lower() == "all":
            return None
        if text.startswith("@"):
            path = Path(text[1:]).expanduser()
            if not path.is_file():
                raise ConfigError(f"gene list file {path} does not exist")
            lines = [ln.split("#", 1)[0] for ln in path.read_text().splitlines()]
            text = ",".join(lines)
        out.extend(s.strip() for s in text.replace("\n", ",").split(",") if s.strip())
    return list(dict.fromkeys(out))


def select_probe_rows(probes: pd.DataFrame, genes: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Store rows of the probes of ``genes`` (all rows for ``None``) and the symbols not found."""
    if genes is None:
        return np.arange(len(probes)), []
    symbols = probes["gene_symbol"].astype(str).to_numpy()
    wanted = set(genes)
    rows = np.flatnonzero(np.isin(symbols, list(wanted)))
    found = set(symbols[rows])
    missing = [g for g in genes if g not in found]
    if rows.size == 0:
        raise ConfigError(f"none of the genes {', '.join(genes[:10])} is in the store's probe table")
    return rows, missing


def _donor_ids(donors: Sequence[int | str] | str | None, in_store: list[int]) -> list[int]:
    """Donor ids or names (a list or a comma-separated string) → ids, each checked against
    the store; ``None`` or ``"all"`` → every donor of the store."""
    if donors is None or (isinstance(donors, str) and donors.strip().lower() in ("", "all")):
        return list(in_store)
    from ..sources.donors import resolve_donors

    use = [d.id for d in resolve_donors(donors)]
    for d in use:
        if d not in in_store:
            raise ConfigError(f"donor {d} is not in the store (complete donors: {in_store})")
    return use
