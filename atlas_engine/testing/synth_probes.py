"""The AHBA probe and gene tables of ``atlas-engine synth`` (Probes.csv rows) and the
per-probe generating parameters (:class:`ProbeModel`, :func:`build_probes`): real probes and
genes from the shipped reannotation table, generated genes and names beyond it, non-RefSeq
pseudo-genes. Pure and seeded, part of the model of :mod:`.synth_model`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .synth_real import SEED_GENES, real_probe_groups, reannotated_genes
from .synth_samples import N_FACTORS

#: The first two probes of the real Probes.csv (``im`` fixture rows), reproduced verbatim.
FIXTURE_PROBES = (
    (1058685, "A_23_P20713", 729, "C8G", "complement component 8, gamma polypeptide", 733, "9"),
    (1058684, "CUST_15185_PI416261804", 731, "C9", "complement component 9", 735, "5"),
)

_CHROMOSOMES = [str(c) for c in range(1, 23)] + ["X", "Y"]
_CHROM_WEIGHTS = np.array([11, 8, 6, 5, 5, 6, 5, 4, 4, 4, 7, 6, 2, 4, 4, 5, 6, 2, 8, 3, 1, 2,
                           4, 0.3])
#: Symbol stems paired with gene-name templates of the same family.
_GENE_FAMILIES = [
    ("SLC", "solute carrier family {a}, member {b}"),
    ("ZNF", "zinc finger protein {a}"),
    ("KCN", "potassium channel, subfamily {L}, member {b}"),
    ("GABR", "gamma-aminobutyric acid (GABA) A receptor, {greek} {b}"),
    ("CDH", "cadherin {a}, type {r}"),
    ("PCDH", "protocadherin {a}"),
    ("TMEM", "transmembrane protein {a}"),
    ("FAM", "family with sequence similarity {a}, member {L}"),
    ("CCDC", "coiled-coil domain containing {a}"),
    ("ANKRD", "ankyrin repeat domain {a}"),
    ("LRRC", "leucine rich repeat containing {a}"),
    ("RBM", "RNA binding motif protein {a}"),
    ("KLHL", "kelch-like family member {a}"),
    ("SYT", "synaptotagmin {r}"),
    ("C", "complement component {a}, {greek} polypeptide"),
    ("GRI", "glutamate receptor, ionotropic, {L}{b}"),
    ("COL", "collagen, type {r}, alpha {b}"),
    ("MAP", "microtubule-associated protein {a}"),
    ("HTR", "5-hydroxytryptamine (serotonin) receptor {a}"),
    ("SOX", "SRY (sex determining region Y)-box {a}"),
    ("NPY", "neuropeptide Y receptor Y{a}"),
    ("WNT", "wingless-type MMTV integration site family, member {a}"),
]
_GREEK = ["alpha", "beta", "gamma", "delta", "epsilon"]
_ROMAN = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII"]


# ---------------------------------------------------------------------------------------------
# probes and genes
# ---------------------------------------------------------------------------------------------

@dataclass
class ProbeModel:
    """Probe table (Probes.csv rows) plus the per-probe generating parameters."""

    table: pd.DataFrame          # Probes.csv columns, entrez_id Int64, chromosome str or None
    gene_index: np.ndarray       # (P,) gene number of each probe (dense 0..G-1)
    level: np.ndarray            # (P,) gene level + probe offset
    amp: np.ndarray              # (P,) structure-effect amplitude (per gene)
    loading: np.ndarray          # (P, K) gene loadings on the structure factors
    sd: np.ndarray               # (P,) noise standard deviation


def probe_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unique, unsorted probe ids: a descending run from 1058685 (as in the real Probes.csv),
    then ascending runs of other ids in shuffled order."""
    n_desc = min(n, max(2, int(round(n * 0.4))))
    desc = np.arange(1058685, 1058685 - n_desc, -1, dtype=np.int64)
    rest = n - n_desc
    if rest == 0:
        return desc
    low = np.arange(1_010_000, 1058685 - n_desc + 1, dtype=np.int64)
    high = np.arange(1058686, 1_072_000, dtype=np.int64)
    pool = np.concatenate([low, high])
    if rest > pool.size:
        pool = np.concatenate([pool, np.arange(1_072_000, 1_072_000 + rest, dtype=np.int64)])
    chosen = np.sort(rng.choice(pool, size=rest, replace=False))
    cuts = np.sort(rng.choice(np.arange(1, rest), size=min(rest - 1, max(0, rest // 400)),
                              replace=False)) if rest > 1 else np.zeros(0, dtype=np.int64)
    runs = np.split(chosen, cuts)
    order = rng.permutation(len(runs))
    return np.concatenate([desc, *[runs[i] for i in order]])


def _gene_symbols_and_names(n: int, rng: np.random.Generator,
                            used: set[str]) -> list[tuple[str, str]]:
    """``n`` unique (symbol, name) pairs of matching families, e.g. ("SLC12A", "solute ...")."""
    out: list[tuple[str, str]] = []
    while len(out) < n:
        m = 2 * (n - len(out)) + 16
        fam = rng.integers(len(_GENE_FAMILIES), size=m)
        a = rng.integers(1, 700, size=m)
        suffix = np.where(rng.random(m) < 0.6, -1, rng.integers(8, size=m))
        b = rng.integers(1, 20, size=m)
        letter = rng.integers(10, size=m)
        greek = rng.integers(len(_GREEK), size=m)
        roman = rng.integers(len(_ROMAN), size=m)
        for k in range(m):
            stem, template = _GENE_FAMILIES[fam[k]]
            number = f"{a[k]}{'ABCDEFGH'[suffix[k]] if suffix[k] >= 0 else ''}"
            symbol = stem + number
            if symbol in used:
                continue
            used.add(symbol)
            out.append((symbol, template.format(a=number, b=int(b[k]), L="ABCDEFGHJK"[letter[k]],
                                                greek=_GREEK[greek[k]], r=_ROMAN[roman[k]])))
            if len(out) == n:
                break
    return out


def build_probes(n_probes: int, seed: int) -> ProbeModel:
    """The probe table and per-probe parameters for ``n_probes`` probes (seeded, donor-free).

    About 12% of probes are non-RefSeq (their own pseudo-gene, gene ids from 1012197, empty
    entrez id and chromosome). The RefSeq probes are real ones: probe names, gene symbols and
    Entrez ids from the shipped reannotation table, whole genes at a time, every probe of the
    seed's genes (:data:`~.synth_real.SEED_GENES`) first; beyond the table's ~45,800 probes,
    generated genes of 1-4 probes. Gene names, Allen gene ids and chromosomes are generated
    (the shipped tables have no names): a real gene's name reads "SYMBOL, generated name".
    """
    if not 1 <= n_probes <= 900_000:
        raise ValueError("n_probes must be between 1 and 900,000")
    rng = np.random.default_rng([seed, 1, 0])
    ids = probe_ids(n_probes, rng)
    n_fixed = min(len(FIXTURE_PROBES), n_probes)
    rest = n_probes - n_fixed
    nonref = rng.random(rest) < 0.12
    n_ref = int((~nonref).sum())
    # RefSeq probes: real genes with all their probes (names, symbols, Entrez ids from the
    # shipped reannotation table; the seed's genes always); generated genes only beyond the
    # table's ~45,800 probes
    fixture_names = {p[1] for p in FIXTURE_PROBES}
    fixture_symbols = {p[3] for p in FIXTURE_PROBES}
    real = real_probe_groups(n_ref, rng, fixture_names, fixture_symbols)
    n_real = sum(len(f) for f in real)
    sizes = rng.choice([1, 2, 3, 4], size=n_ref - n_real, p=[0.45, 0.38, 0.11, 0.06])
    n_gen_genes = int(np.searchsorted(np.cumsum(sizes), n_ref - n_real)) + 1 if sizes.size else 0
    sizes = sizes[:n_gen_genes]
    if n_gen_genes:
        sizes[-1] -= int(sizes.sum()) - (n_ref - n_real)
    n_ref_genes = len(real) + n_gen_genes
    ref_gene = np.concatenate([np.repeat(np.arange(len(real)), [len(f) for f in real]),
                               len(real) + np.repeat(np.arange(n_gen_genes), sizes)])
    ref_member = np.concatenate([np.concatenate([np.arange(len(f)) for f in real])
                                 if real else np.zeros(0, np.int64),
                                 np.full(n_ref - n_real, -1)]).astype(np.int64)
    perm = rng.permutation(ref_gene.size)
    ref_gene, ref_member = ref_gene[perm], ref_member[perm]

    gene_ids = 733 + np.cumsum(rng.integers(1, 40, size=n_ref_genes))
    entrez = 740 + rng.choice(120_000_000 - 740, size=n_ref_genes, replace=False)
    weights = _CHROM_WEIGHTS / _CHROM_WEIGHTS.sum()
    chroms = rng.choice(len(_CHROMOSOMES), size=n_ref_genes, p=weights)
    used = fixture_symbols | set(reannotated_genes()["gene_symbol"])
    names = [(str(f["gene_symbol"].iloc[0]), f"{f['gene_symbol'].iloc[0]}, generated name")
             for f in real] + _gene_symbols_and_names(n_gen_genes, rng, used)
    real_entrez = [int(f["entrez_id"].iloc[0]) for f in real]
    taken = set(reannotated_genes()["probe_name"])
    numbers = 100_000 + rng.choice(900_000, size=rest, replace=False)  # unique probe numbers
    kind = rng.random(rest)
    pi = rng.integers(400_000_000, 430_000_000, size=rest)

    rows: list[tuple[object, ...]] = [FIXTURE_PROBES[i] for i in range(n_fixed)]
    gene_index = np.empty(n_probes, dtype=np.int64)
    gene_index[:n_fixed] = np.arange(n_fixed)
    # dense gene numbering: fixture genes first, then RefSeq genes, then non-RefSeq pseudo-genes
    next_nonref_gene = n_fixed + n_ref_genes
    nonref_gene_id = 1012197
    r = 0
    for i in range(rest):
        pid = int(ids[n_fixed + i])
        if nonref[i]:
            pname = f"A_32_P{numbers[i]}"
            while pname in taken:  # never a name the reannotation knows
                pname = f"A_32_P{int(pname[6:]) + 1_000_000}"
            rows.append((pid, pname, nonref_gene_id, pname,
                         f"AGILENT probe {pname} (non-RefSeq)", None, None))
            nonref_gene_id += 1
            gene_index[n_fixed + i] = next_nonref_gene
            next_nonref_gene += 1
        else:
            g = int(ref_gene[r])
            m = int(ref_member[r])
            r += 1
            symbol, name = names[g]
            if g < len(real):
                pname = str(real[g]["probe_name"].iloc[m])
                rows.append((pid, pname, int(gene_ids[g]), symbol, name, real_entrez[g],
                             _CHROMOSOMES[chroms[g]]))
            else:
                if kind[i] < 0.6:
                    pname = f"A_23_P{numbers[i]}"
                elif kind[i] < 0.75:
                    pname = f"A_24_P{numbers[i]}"
                else:
                    pname = f"CUST_{numbers[i]}_PI{pi[i]}"
                k = 1
                while pname in taken:  # a name the reannotation knows: a custom probe name
                    pname = f"CUST_{numbers[i]}_PI{int(pi[i]) + k}"
                    k += 1
                rows.append((pid, pname, int(gene_ids[g]), symbol, name, int(entrez[g]),
                             _CHROMOSOMES[chroms[g]]))
            gene_index[n_fixed + i] = n_fixed + g
    table = pd.DataFrame(rows, columns=["probe_id", "probe_name", "gene_id", "gene_symbol",
                                        "gene_name", "entrez_id", "chromosome"])
    table["entrez_id"] = table["entrez_id"].astype("Int64")

    n_genes = next_nonref_gene
    grng = np.random.default_rng([seed, 1, 1])
    low = grng.random(n_genes) < 0.3
    gene_level = np.where(low, grng.normal(2.4, 0.5, n_genes), grng.normal(6.2, 1.7, n_genes))
    gene_level = np.clip(gene_level, 1.0, 11.8)
    variable = grng.random(n_genes) < 0.15
    gene_amp = np.where(variable, grng.uniform(0.8, 2.0, n_genes), grng.uniform(0.02, 0.15, n_genes))
    # the seed's genes are well expressed in brain, with a regional pattern (as the real ones):
    # they pass the intensity filter, so the examples that select them find them
    seed = np.flatnonzero(np.isin([names[g][0] for g in range(len(real))], SEED_GENES)) + n_fixed
    gene_level[seed] = np.maximum(gene_level[seed], 7.5)
    gene_amp[seed] = np.maximum(gene_amp[seed], 1.0)
    gene_loading = grng.normal(0.0, 1.0, (n_genes, N_FACTORS)) / np.sqrt(N_FACTORS)
    offset = grng.normal(0.0, 0.3, n_probes)
    sd = grng.uniform(0.08, 0.3, n_probes)
    gi = gene_index
    return ProbeModel(table=table, gene_index=gi, level=gene_level[gi] + offset, amp=gene_amp[gi],
                      loading=np.ascontiguousarray(gene_loading[gi]), sd=sd)
