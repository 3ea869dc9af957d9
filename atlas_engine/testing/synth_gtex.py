"""GTEx median-TPM GCT generator, consistent with the generated AHBA and BrainSpan genes.

Files (shared more_datasets.md §4, §5.7): ``#1.2``, ``<rows>\\t54``, ``Name\\tDescription\\t``
+ the 54 v8 tissue columns, then one row per gene ``ENSG…​.N\\tSYMBOL\\t<54 floats>``, gzip. The
v10 file gets the same layout under its own name (v10's real column set is UNCONFIRMED).

Genes: the AHBA generator's RefSeq genes (read from the generated Probes table; about 3% left
out, so that some genes cannot be matched), the BrainSpan genes (same Ensembl ids), a few
GTEx-only genes and, for one gene in ~500, a second GTEx gene with the same symbol (as GTEx has;
the cross-reference refuses such symbols). Ensembl ids are
:func:`~atlas_engine.testing.synth_brainspan.ensembl_for_entrez` plus a version.

Values: brain tissues follow the AHBA generating model (:mod:`.synth_model`): the tissue's
mapped AHBA structures (``atlas_engine/data/gtex_brain_tissues.csv``) give a mean latent factor
vector ``f``, and ``log2(TPM + 1) ≈ 1.2 * (level + amp * loading · f - 1.5) + noise``; so the
per-gene agreement that ``atlas-engine crossref`` measures is real for the structure-variable
genes and weak for flat ones. Other tissues get random tissue effects.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..gtex.crossref import load_tissue_map
from ..gtex.gct import write_gct
from ..sources.gtex import GTEX_FILES, TISSUES
from .synth_brainspan import ensembl_for_entrez
from .synth_model import build_probes, build_structures
from .synth_ontology import build_ontology, leaf_mask

VERSIONS = ("v8", "v10")


def _tissue_factors(seed: int) -> dict[str, np.ndarray]:
    """Mean latent factor vector of the AHBA leaves under each brain tissue's structures."""
    ontology = build_ontology()
    sm = build_structures(ontology, seed)
    leaves = ontology[leaf_mask(ontology)].reset_index(drop=True)
    by_name = {str(n).lower(): int(i) for n, i in zip(ontology["name"], ontology["id"],
                                                     strict=True)}
    paths = leaves["structure_id_path"].astype(str).to_numpy()
    out = {}
    for _, row in load_tissue_map().iterrows():
        ids = [by_name[n.lower()] for n in row["ahba"] if n.lower() in by_name]
        mask = np.array([any(f"/{i}/" in p for i in ids) for p in paths], dtype=bool)
        if mask.any():
            out[row["gtex_tissue"]] = sm.factors[mask].mean(axis=0)
    return out


def gtex_genes(probes_table: pd.DataFrame, brainspan_genes: pd.DataFrame | None,
               rng: np.random.Generator) -> pd.DataFrame:
    """``name`` (versioned id), ``symbol``, ``ensembl``, ``ahba_gene`` (index of the AHBA gene
    in RefSeq-gene order, -1 when not an AHBA gene)."""
    ref = probes_table[probes_table["entrez_id"].notna()].drop_duplicates("gene_symbol")
    symbols = ref["gene_symbol"].astype(str).to_numpy()
    entrez = ref["entrez_id"].astype(np.int64).to_numpy()
    keep = rng.random(len(symbols)) >= 0.03
    rows = [(ensembl_for_entrez(e), s, k) for k, (s, e, ok) in
            enumerate(zip(symbols, entrez, keep, strict=True)) if ok]
    # genes left out stay out (also when BrainSpan has them): they are what cannot be matched
    seen = {r[0] for r in rows}
    dropped = {ensembl_for_entrez(e) for e, ok in zip(entrez, keep, strict=True) if not ok}
    if brainspan_genes is not None:
        for e, s in zip(brainspan_genes["ensembl_gene_id"].astype(str),
                        brainspan_genes["gene_symbol"].astype(str), strict=True):
            if e not in seen and e not in dropped:
                seen.add(e)
                rows.append((e, s, -1))
    n_only = max(1, len(rows) // 20)
    for k in range(n_only):
        rows.append((f"ENSG{80_000_000_000 + k:011d}", f"RP11-{100 + k}O{k % 9 + 1}.1", -1))
    dups = [r for r in rows[: len(rows) - n_only] if rng.random() < 0.002]
    for k, r in enumerate(dups):
        rows.append((f"ENSG{70_000_000_000 + k:011d}", r[1], -1))
    t = pd.DataFrame(rows, columns=["ensembl", "symbol", "ahba_gene"])
    version = rng.integers(1, 21, size=len(t))
    t.insert(0, "name", [f"{e}.{v}" for e, v in zip(t["ensembl"], version, strict=True)])
    return t


def write_gtex(
    dest: str | os.PathLike[str],
    *,
    probes: int,
    seed: int = 0,
    brainspan_genes: pd.DataFrame | None = None,
    versions: tuple[str, ...] = VERSIONS,
) -> dict[str, Path]:
    """Write the GTEx median-TPM GCT files of ``versions`` into ``dest`` (their real names);
    ``probes`` and ``seed`` must be those of the AHBA data the files go with."""
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    model = build_probes(probes, seed)
    rng = np.random.default_rng([seed, 30])
    genes = gtex_genes(model.table, brainspan_genes, rng)
    # per AHBA RefSeq gene: mean level, amplitude and loadings over its probes
    ref_mask = model.table["entrez_id"].notna().to_numpy()
    sym = model.table["gene_symbol"].astype(str).to_numpy()
    order = pd.Index(pd.unique(sym[ref_mask]))
    gi = order.get_indexer(sym)
    use = ref_mask & (gi >= 0)
    n_ref = len(order)
    cnt = np.bincount(gi[use], minlength=n_ref).astype(float)
    level = np.bincount(gi[use], weights=model.level[use], minlength=n_ref) / np.maximum(cnt, 1)
    amp = np.bincount(gi[use], weights=model.amp[use], minlength=n_ref) / np.maximum(cnt, 1)
    loading = np.stack([np.bincount(gi[use], weights=model.loading[use, j], minlength=n_ref)
                        for j in range(model.loading.shape[1])], axis=1) / np.maximum(cnt, 1)[:, None]
    factors = _tissue_factors(seed)
    n = len(genes)
    ahba = genes["ahba_gene"].to_numpy()
    is_ahba = ahba >= 0
    base = np.where(is_ahba, level[np.maximum(ahba, 0)], rng.normal(5.5, 2.0, n))
    logv = np.empty((n, len(TISSUES)))
    for j, t in enumerate(TISSUES):
        x = base.copy()
        if t in factors:
            x[is_ahba] += amp[ahba[is_ahba]] * (loading[ahba[is_ahba]] @ factors[t])
            x[~is_ahba] += rng.normal(0.0, 0.5, int((~is_ahba).sum()))
        else:
            x += rng.normal(0.0, 1.2, n)
        logv[:, j] = 1.2 * (x - 1.5) + rng.normal(0.0, 0.25, n)
    tpm = np.maximum(np.exp2(logv) - 1.0, 0.0)
    tpm[tpm < 0.01] = 0.0
    written = {}
    for v in versions:
        written[v] = write_gct(out / GTEX_FILES[v], genes[["name", "symbol"]], tpm, TISSUES)
    return written
