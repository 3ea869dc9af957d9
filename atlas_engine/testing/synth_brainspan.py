"""BrainSpan ``genes_matrix_csv.zip`` ("RNA-Seq Gencode v10 summarized to genes") generator.

Members at the zip root (shared ``allen_formats.md`` §6.2):

- ``expression_matrix.csv``: no header; ``row_num`` 1..G, then one RPKM value per sample in
  ``columns_metadata`` order. Values are printed with six decimals (``36.447128``, ``0.000000``)
  as in the BrainSABER mini fixture; that the real file uses ``%f`` is UNCONFIRMED.
- ``rows_metadata.csv``: ``row_num,gene_id,ensembl_gene_id,gene_symbol,entrez_id``; a missing
  entrez id is an empty field (the real token is UNCONFIRMED).
- ``columns_metadata.csv``: ``column_num,donor_id,donor_name,age,gender,structure_id,
  structure_acronym,structure_name``; ages like ``8 pcw``, ``4 mos``, ``40 yrs``.

Quoting in the metadata files is UNCONFIRMED; they are written with minimal quoting (a field is
quoted only when it holds a comma or a quote).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_output
from ..errors import ConfigError
from .synth_format import quote_minimal, render_decimal_rows, zip_member

#: Real size of the genes matrix.
BRAINSPAN_GENES = 52_376
BRAINSPAN_SAMPLES = 524
ZIP_NAME = "genes_matrix_csv.zip"

#: The 26 structures with their real column counts (sum 524). Ids 10268, 10291, 10361, 10550 and
#: 10243 are the real ones (BrainSABER mini fixture); the others are assigned here. Names follow
#: BrainSpan's wording as far as known.
STRUCTURES: tuple[tuple[int, str, str, int, bool], ...] = (  # id, acronym, name, count, prenatal
    (10268, "Ocx", "occipital neocortex", 2, True),
    (10291, "M1C-S1C", "primary motor-sensory cortex (samples)", 5, True),
    (10550, "MGE", "medial ganglionic eminence", 2, True),
    (10278, "LGE", "lateral ganglionic eminence", 2, True),
    (10285, "CGE", "caudal ganglionic eminence", 2, True),
    (10665, "URL", "upper (rostral) rhombic lip", 2, True),
    (10208, "PCx", "parietal neocortex", 2, True),
    (10235, "TCx", "temporal neocortex", 1, True),
    (10391, "DTH", "dorsal thalamus", 5, True),
    (10656, "CB", "cerebellum", 3, True),
    (10161, "DFC", "dorsolateral prefrontal cortex", 35, False),
    (10173, "VFC", "ventrolateral prefrontal cortex", 35, False),
    (10185, "MFC", "anterior (rostral) cingulate (medial prefrontal) cortex", 32, False),
    (10194, "OFC", "orbital frontal cortex", 31, False),
    (10163, "M1C", "primary motor cortex (area M1, area 4)", 26, False),
    (10209, "S1C", "primary somatosensory cortex (area S1, areas 3,1,2)", 26, False),
    (10225, "IPC", "posteroventral (inferior) parietal cortex", 33, False),
    (10236, "A1C", "primary auditory cortex (core)", 31, False),
    (10243, "STC", "posterior (caudal) superior temporal cortex (area 22c)", 36, False),
    (10252, "ITC", "inferolateral temporal cortex (area TEv, area 20)", 34, False),
    (10269, "V1C", "primary visual cortex (striate cortex, area V1/17)", 33, False),
    (10294, "HIP", "hippocampus (hippocampal formation)", 32, False),
    (10361, "AMY", "amygdaloid complex", 33, False),
    (10333, "STR", "striatum", 28, False),
    (10398, "MD", "mediodorsal nucleus of thalamus", 24, False),
    (10657, "CBC", "cerebellar cortex", 29, False),
)

#: Donor ages, youngest first (42 donors).
AGES = ("8 pcw", "8 pcw", "9 pcw", "12 pcw", "12 pcw", "12 pcw", "13 pcw", "13 pcw", "16 pcw",
        "16 pcw", "17 pcw", "19 pcw", "21 pcw", "21 pcw", "24 pcw", "25 pcw", "26 pcw", "35 pcw",
        "37 pcw", "37 pcw", "4 mos", "4 mos", "10 mos", "1 yrs", "2 yrs", "3 yrs", "3 yrs",
        "4 yrs", "8 yrs", "8 yrs", "11 yrs", "13 yrs", "15 yrs", "18 yrs", "19 yrs", "21 yrs",
        "23 yrs", "30 yrs", "36 yrs", "37 yrs", "40 yrs", "40 yrs")

FIXTURE_GENES = ((7062, "ENSG00000000003", "TSPAN6", 7105), (40735, "ENSG00000000005", "TNMD",
                                                              64102))
#: Genes put first when the AHBA gene pool has them (the psychiatric-genetics examples of the
#: docs), so that small generated datasets still hold them.
PRIORITY_SYMBOLS = ("BDNF", "DISC1", "NRG1", "COMT", "DRD2", "SLC6A4")


def ensembl_for_entrez(entrez: int) -> str:
    """The generated (unversioned) Ensembl id of a generated gene with this Entrez id; the AHBA,
    BrainSpan and GTEx generators all use it, so ids join across datasets."""
    return f"ENSG{int(entrez):011d}"


def _columns(samples: int, rng: np.random.Generator) -> list[tuple[object, ...]]:
    """One row per sample: donors youngest first, each sampled in distinct structures (the
    prenatal-only structures only in fetal donors), ~12 samples per donor as in the real data."""
    n_donors = min(len(AGES), max(1, samples // 8))
    donor_of = (np.arange(samples) * n_donors) // max(samples, 1)
    donor_ids = 12_200 + np.sort(rng.choice(1_000, size=len(AGES), replace=False))
    donor_ids[0] = 13058
    sexes = rng.choice(["M", "F"], size=len(AGES))
    sexes[0] = "M"  # column 1 of the real file: 13058, H376.IIA.51, 8 pcw, M
    age_idx = np.round(np.linspace(0, len(AGES) - 1, n_donors)).astype(int)
    prenatal = [k for k, st in enumerate(STRUCTURES) if st[4]]
    adult = [k for k, st in enumerate(STRUCTURES) if not st[4]]
    rows = []
    for d in range(n_donors):
        cols = np.flatnonzero(donor_of == d)
        fetal = AGES[age_idx[d]].endswith("pcw")
        # fetal donors: Ocx first (column 1 of the real file), then any structure; postnatal
        # donors: the adult ones; a donor's structures are distinct until all are used
        rest = [k for k in rng.permutation(prenatal[1:] + adult)]
        pool = [prenatal[0], *rest] if fetal else list(rng.permutation(adult))
        for i, col in enumerate(cols):
            sid, acr, name, _, _ = STRUCTURES[pool[i % len(pool)]]
            rows.append((int(col) + 1, int(donor_ids[d]), f"H376.{_roman(d + 1)}.{50 + d}",
                         AGES[age_idx[d]], str(sexes[d]), sid, acr, name))
    return rows


def _roman(n: int) -> str:
    out = ""
    for value, sym in ((40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out += sym
            n -= value
    return out


def gene_table(genes: int, rng: np.random.Generator,
               pool: pd.DataFrame | None = None) -> pd.DataFrame:
    """``rows_metadata`` columns for ``genes`` genes: the two fixture genes, then genes of
    ``pool`` (``gene_symbol``, ``entrez_id``: the AHBA generator's RefSeq genes; those named in
    :data:`PRIORITY_SYMBOLS` first, the rest shuffled), then BrainSpan-only genes (``LOC…``
    without an Entrez id, or ``BSG…``)."""
    rows: list[tuple[object, ...]] = []
    gids = 40_736 + np.cumsum(rng.integers(1, 30, size=genes))
    taken = {g[2] for g in FIXTURE_GENES}
    for k in range(min(genes, len(FIXTURE_GENES))):
        rows.append((k + 1, *FIXTURE_GENES[k]))
    if pool is not None and len(pool):
        p = pool.drop_duplicates("gene_symbol")
        p = p[~p["gene_symbol"].isin(taken)]
        first = p[p["gene_symbol"].isin(PRIORITY_SYMBOLS)]
        rest = p[~p["gene_symbol"].isin(PRIORITY_SYMBOLS)]
        rest = rest.iloc[rng.permutation(len(rest))]
        for sym, ez in zip(pd.concat([first, rest])["gene_symbol"],
                           pd.concat([first, rest])["entrez_id"], strict=True):
            if len(rows) >= genes:
                break
            k = len(rows)
            rows.append((k + 1, int(gids[k]), ensembl_for_entrez(int(ez)), str(sym), int(ez)))
    extra_entrez = 200_000_000 + rng.choice(10_000_000, size=genes, replace=False)
    while len(rows) < genes:
        k = len(rows)
        no_entrez = rng.random() < 0.3
        ez = "" if no_entrez else int(extra_entrez[k])
        symbol = f"LOC{100_000 + k}" if no_entrez else f"BSG{k:05d}"
        ens = f"ENSG{90_000_000_000 + k:011d}" if no_entrez else ensembl_for_entrez(int(ez))
        rows.append((k + 1, int(gids[k]), ens, symbol, ez))
    return pd.DataFrame(rows, columns=["row_num", "gene_id", "ensembl_gene_id", "gene_symbol",
                                       "entrez_id"])


def _age_pcd(age: str) -> float:
    value, unit = age.split(" ")
    v = float(value)
    return v * 7 if unit == "pcw" else 266 + (v / 12 if unit == "mos" else v) * 365


def write_brainspan(
    dest: str | os.PathLike[str],
    *,
    genes: int = 2000,
    samples: int = BRAINSPAN_SAMPLES,
    seed: int = 0,
    gene_pool: pd.DataFrame | None = None,
) -> Path:
    """Write ``genes_matrix_csv.zip`` (G genes × S samples) into ``dest``; return its path.

    The full real size is ``genes=52_376, samples=524``. ``gene_pool`` (``gene_symbol``,
    ``entrez_id``; e.g. the AHBA generator's Probes table) supplies the gene symbols, so the
    datasets share genes. About a fifth of values are exactly zero (the low ones, and 2% dropouts);
    the others are log-normal RPKMs
    with gene, structure and developmental effects: a gene's log level moves along
    ``tanh(log(age_pcd / birth))`` with a gene-specific amplitude scaled per structure group,
    so trajectories rise or fall around birth.
    """
    if genes < 1 or samples < 1:
        raise ConfigError(f"BrainSpan genes and samples must be positive (got {genes}, {samples})")
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 20])
    columns = _columns(samples, rng)
    table = gene_table(genes, rng, gene_pool)
    gene_rows = list(table.itertuples(index=False, name=None))

    struct_index = {s[0]: i for i, s in enumerate(STRUCTURES)}
    col_struct = np.array([struct_index[c[5]] for c in columns])
    gene_mu = rng.normal(0.5, 2.0, genes)
    struct_eff = rng.normal(0.0, 0.8, (genes, len(STRUCTURES)))
    dev_amp = np.where(rng.random(genes) < 0.4, rng.normal(0.0, 1.3, genes),
                       rng.normal(0.0, 0.15, genes))
    struct_dev = rng.normal(1.0, 0.35, (genes, len(STRUCTURES)))
    dev_curve = np.tanh(np.log(np.array([_age_pcd(str(c[3])) for c in columns]) / 266.0))

    path = out / ZIP_NAME
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            with zip_member(zf, "expression_matrix.csv") as fh:
                for lo in range(0, genes, 1024):
                    hi = min(lo + 1024, genes)
                    brng = np.random.default_rng([seed, 21, lo])
                    logv = (gene_mu[lo:hi, None] + struct_eff[lo:hi][:, col_struct]
                            + dev_amp[lo:hi, None] * struct_dev[lo:hi][:, col_struct]
                            * dev_curve[None, :]
                            + brng.normal(0, 0.5, (hi - lo, samples)))
                    micro = np.rint(np.minimum(np.exp(logv), 1e5) * 1e6).astype(np.int64)
                    # zeros where expression is low (as in RNA-seq), plus a few dropouts
                    micro[(logv < -1.5) | (brng.random(micro.shape) < 0.02)] = 0
                    frac = np.full(micro.shape, 6, dtype=np.int8)
                    fh.write(render_decimal_rows(np.arange(lo + 1, hi + 1), micro, frac,
                                                 strip=False))
            with zip_member(zf, "rows_metadata.csv") as fh:
                fh.write(_csv("row_num,gene_id,ensembl_gene_id,gene_symbol,entrez_id",
                              gene_rows))
            with zip_member(zf, "columns_metadata.csv") as fh:
                fh.write(_csv("column_num,donor_id,donor_name,age,gender,structure_id,"
                              "structure_acronym,structure_name", columns))

    atomic_output(path, write)
    return path


def _csv(header: str, rows: list[tuple[object, ...]]) -> bytes:
    lines = [header] + [",".join(quote_minimal(str(v)) for v in r) for r in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")
