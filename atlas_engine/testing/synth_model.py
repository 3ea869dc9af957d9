"""The generating model behind ``atlas-engine synth``: probes, genes, samples and values.

Everything here is pure (arrays and tables in, arrays and tables out) and seeded; the file
writers live in :mod:`atlas_engine.testing.synth`.

Expression model (log2 scale, per probe ``p`` of gene ``g``, sample ``j`` on leaf ``s``, donor
``d``)::

    value = level[g] + offset[p] + amp[g] * (loading[g] · factors[s]) + shift[d]
            + donor_offset[d, p] + sample_shift[d, j] + sd[p] * noise

floored at :data:`FLOOR` (the repeated minimum seen in the real files). ``factors[s]`` sums
random vectors along the structure's ontology path, so structures of one lobe or nucleus group
resemble each other; ``amp`` is large for a minority of "variable" genes, so top-variable-gene
selection has something to find. PACall is 1 with probability ``logistic(slope * (value -
midpoint))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from ..sources.donors import Donor
from .synth_ontology import leaf_mask
from .synth_real import (
    SEED_GENES,
    corrected_table,
    donor_wells,
    locate,
    real_probe_groups,
    reannotated_genes,
)

#: Smallest value written (the real matrices repeat 1.40776497031674 as a floor).
FLOOR = 1.40776497031674
#: 15-significant-digit mantissa of :data:`FLOOR` (14 fractional digits).
FLOOR_MANTISSA = 140776497031674
#: Hard ceiling of generated values (the real ones stay below ~15).
CEILING = 14.9
#: Number of latent structure factors.
N_FACTORS = 6
#: Rows of the probe × sample matrix generated per block (fixed: part of the seeded output).
BLOCK_ROWS = 512
#: PACall logistic parameters.
PA_MIDPOINT = 4.0
PA_SLOPE = 2.2
#: Share of matrix values written with Python's repr of an unrounded double (16-17 digits).
REPR_SHARE = 0.03

#: Donors whose samples cover both hemispheres (the other four were sampled on the left).
BOTH_HEMISPHERES = (9861, 10021)

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


def scaled_count(count: int, fraction: float, minimum: int) -> int:
    """``max(minimum, round(count * fraction))`` (never more than ``count`` when fraction ≤ 1)."""
    return max(int(minimum), int(round(count * fraction)))


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


# ---------------------------------------------------------------------------------------------
# structures and samples
# ---------------------------------------------------------------------------------------------

def _top_class(path: str) -> str:
    ids = {int(p) for p in path.strip("/").split("/")}
    if 4008 in ids:
        return "cortex"
    if 4696 in ids:
        return "cerebellum"
    if 9218 in ids:
        return "white"
    if 9352 in ids:
        return "spaces"
    if ids & {4391, 9001, 9131, 9512}:
        return "brainstem"
    return "nuclei"


#: Slab type per class (CX is the only value seen in real rows; CB/BS are UNCONFIRMED).
_SLAB_TYPE = {"cortex": "CX", "nuclei": "CX", "white": "CX", "spaces": "CX",
              "brainstem": "BS", "cerebellum": "CB"}


@dataclass
class StructureModel:
    """Sampling frame: leaves, their class, MNI centres and latent factors."""

    leaves: pd.DataFrame         # ontology rows of the leaves (+ columns cls, cx, cy, cz)
    factors: np.ndarray          # (n_leaves, K)


def build_structures(ontology: pd.DataFrame, seed: int) -> StructureModel:
    """Leaf table with MNI centres and latent factors (seeded, donor-free)."""
    rng = np.random.default_rng([seed, 2])
    by_id = {int(i): k for k, i in enumerate(ontology["id"])}
    node_vec = rng.normal(0.0, 1.0, (len(ontology), N_FACTORS))
    leaves = ontology[leaf_mask(ontology)].reset_index(drop=True).copy()
    factors = np.zeros((len(leaves), N_FACTORS))
    for k, path in enumerate(leaves["structure_id_path"]):
        ids = [int(p) for p in path.strip("/").split("/")]
        for depth, sid in enumerate(ids[1:], start=1):
            factors[k] += node_vec[by_id[sid]] / depth
    leaves["cls"] = [_top_class(p) for p in leaves["structure_id_path"]]
    n = len(leaves)
    hemi = leaves["hemisphere"].to_numpy()
    cortex = leaves["cls"].to_numpy() == "cortex"
    mag = np.where(cortex, rng.uniform(25, 62, n), rng.uniform(4, 30, n))
    sign = np.where(hemi == "L", -1.0, np.where(hemi == "R", 1.0, 0.0))
    cy = rng.uniform(-95, 65, n)
    cz = rng.uniform(-55, 72, n)
    # leaf centres at real sample positions of the leaf's class (corrected coordinates of
    # all real samples, classed by where they lie), so that samples placed on their nearest
    # leaf centre make spatially coherent structures
    prng = np.random.default_rng([seed, 2, 1])
    real = corrected_table()
    pool_xyz = real[["x", "y", "z"]].to_numpy()
    pool_cls = locate(pool_xyz, prng)
    leaf_cls = leaves["cls"].to_numpy()
    for c in np.unique(leaf_cls):
        rows = np.flatnonzero(leaf_cls == c)
        pool = np.flatnonzero(pool_cls == c)
        if not pool.size:
            continue
        pick = pool[prng.choice(pool.size, size=rows.size, replace=rows.size > pool.size)]
        mag[rows] = np.maximum(np.abs(pool_xyz[pick, 0]), 1.0)
        cy[rows], cz[rows] = pool_xyz[pick, 1], pool_xyz[pick, 2]
    # mirror pairs (same acronym, names differing only in left/right) share |x|, y and z
    first: dict[tuple[str, str], int] = {}
    for k, (acr, name) in enumerate(zip(leaves["acronym"], leaves["name"], strict=True)):
        j = first.setdefault((acr, name.replace(", right", ", left")), k)
        mag[k], cy[k], cz[k] = mag[j], cy[j], cz[j]
    leaves["cx"] = sign * mag
    leaves["cy"] = cy
    leaves["cz"] = cz
    return StructureModel(leaves=leaves, factors=factors)


@dataclass
class DonorSamples:
    """One donor's SampleAnnot rows and the leaf index of each sample."""

    annot: pd.DataFrame          # the 13 SampleAnnot columns
    leaf: np.ndarray             # (n,) row index into StructureModel.leaves
    mismatches: tuple[int, ...]  # 0-based rows whose mni_x sign disagrees with the hemisphere


def build_samples(donor: Donor, n: int, structures: StructureModel, seed: int,
                  mismatches: int) -> DonorSamples:
    """``n`` of ``donor``'s real samples (well ids, corrected coordinates: all of them when
    ``n`` is the real count) on ontology leaves consistent with where they lie, sorted by slab;
    ``mismatches`` of them (on lateralised leaves) get an ``mni_x`` of the wrong sign on top of
    the real samples whose coordinates already disagree with their hemisphere (all reported
    in :attr:`DonorSamples.mismatches`)."""
    rng = np.random.default_rng([seed, 3, donor.id])
    leaves = structures.leaves
    hemi = leaves["hemisphere"].to_numpy()
    cls = leaves["cls"].to_numpy()
    allowed = np.ones(len(leaves), dtype=bool)
    if donor.id not in BOTH_HEMISPHERES:
        allowed &= hemi != "R"

    # the donor's real samples (a random subset below its real count): real well ids and
    # corrected MNI coordinates; the class of where each lies (synth_real.locate) and its
    # hemisphere (x sign; always left for the donors sampled on the left only) decide its leaf
    real = donor_wells(donor.id, donor.n_samples)
    pick = (np.arange(len(real)) if n >= len(real)
            else np.sort(rng.choice(len(real), size=n, replace=False)))
    real = real.iloc[pick].reset_index(drop=True)
    n = len(real)
    cxyz = real[["x", "y", "z"]].to_numpy()
    where = locate(cxyz, rng)
    side = np.where(cxyz[:, 0] > 0, "R", "L") if donor.id in BOTH_HEMISPHERES else \
        np.full(n, "L")
    centres = leaves[["cx", "cy", "cz"]].to_numpy()
    leaf = np.empty(n, dtype=np.int64)
    for c in np.unique(where):
        for h in ("L", "R"):
            rows = np.flatnonzero((where == c) & (side == h))
            if not rows.size:
                continue
            cand = np.flatnonzero((cls == c) & ((hemi == h) | (hemi == "")))
            if not cand.size:
                cand = np.flatnonzero(allowed)
            d = ((cxyz[rows, None, :] - centres[None, cand, :]) ** 2).sum(axis=2)
            leaf[rows] = cand[np.argmin(d, axis=1)]
    # SampleAnnot's mni_x/y/z are the linear MNI coordinates, a few mm from the corrected ones
    x, y, z = (np.round(cxyz[:, k] + rng.normal(0, 1.5, n), 1) for k in range(3))
    x = np.where(x == 0.0, 0.0, x)          # no "-0.0"
    well = real["well_id"].to_numpy(np.int64)

    slab = np.clip(((70.0 - y) / 8.0).astype(np.int64) + 1, 1, 24)
    order = np.lexsort((leaf, slab))
    leaf, x, y, z, slab, well = (a[order] for a in (leaf, x, y, z, slab, well))

    # the deliberate mismatches: lateral samples whose mni_x sign is flipped; the reported
    # mismatches are every sample abagen's hemisphere check drops: mni_x of the wrong sign for
    # its leaf's hemisphere, or a leaf without hemisphere and mni_x not exactly 0
    lateral = np.flatnonzero((hemi[leaf] == "L") & (x < 0) | (hemi[leaf] == "R") & (x > 0))
    k = min(int(mismatches), lateral.size)
    flip = np.sort(rng.choice(lateral, size=k, replace=False)) if k else np.zeros(0, np.int64)
    x[flip] = -x[flip]
    h = hemi[leaf]
    bad = np.flatnonzero(~(((h == "L") & (x < 0)) | ((h == "R") & (x > 0))
                           | ((h == "") & (x == 0))))

    polygon = 1_270_000 + np.sort(rng.choice(40_000, size=n, replace=False))
    off = rng.normal(0, 4, 3)
    vx = np.clip(np.rint(91 - x + off[0]), 0, 255).astype(np.int64)
    vy = np.clip(np.rint(96 - 0.9 * y + off[1]), 0, 255).astype(np.int64)
    vz = np.clip(np.rint(140 - 0.95 * z + off[2]), 0, 255).astype(np.int64)
    annot = pd.DataFrame({
        "structure_id": leaves["id"].to_numpy()[leaf].astype(np.int64),
        "slab_num": slab,
        "well_id": well,
        "slab_type": [_SLAB_TYPE[c] for c in cls[leaf]],
        "structure_acronym": leaves["acronym"].to_numpy()[leaf],
        "structure_name": leaves["name"].to_numpy()[leaf],
        "polygon_id": polygon,
        "mri_voxel_x": vx, "mri_voxel_y": vy, "mri_voxel_z": vz,
        "mni_x": x, "mni_y": y, "mni_z": z,
    })
    return DonorSamples(annot=annot, leaf=leaf, mismatches=tuple(int(b) for b in bad))


# ---------------------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------------------

@dataclass
class DonorValues:
    """Everything needed to generate one donor's matrix blocks (picklable)."""

    donor_id: int
    seed: int
    probe_ids: np.ndarray        # (P,)
    level: np.ndarray            # (P,)
    amp: np.ndarray              # (P,)
    loading: np.ndarray          # (P, K)
    sd: np.ndarray               # (P,)
    sample_factors: np.ndarray   # (S, K) factors of each sample's leaf
    shift: float

    @property
    def n_blocks(self) -> int:
        return -(-self.probe_ids.size // BLOCK_ROWS)

    def block(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of block ``b``: (probe ids, values (n, S) float64, PACall (n, S) bool).

        Values are floored at :data:`FLOOR` and capped at :data:`CEILING`.
        """
        lo = b * BLOCK_ROWS
        hi = min(lo + BLOCK_ROWS, self.probe_ids.size)
        n = hi - lo
        s = self.sample_factors.shape[0]
        rng = np.random.default_rng([self.seed, 4, self.donor_id, b])
        offset = self.level[lo:hi] + self.shift + rng.normal(0.0, 0.12, n)
        sample_shift = np.random.default_rng([self.seed, 5, self.donor_id]).normal(0, 0.1, s)
        noise = rng.standard_normal((n, s), dtype=np.float32)
        uniform = rng.random((n, s), dtype=np.float32)
        v = np.empty((n, s), dtype=np.float64)
        pa = np.empty((n, s), dtype=np.bool_)
        _combine_block(offset, self.amp[lo:hi], self.loading[lo:hi], self.sd[lo:hi],
                       self.sample_factors, sample_shift, noise, uniform, v, pa)
        return self.probe_ids[lo:hi], v, pa


def donor_values(donor: Donor, probes: ProbeModel, structures: StructureModel,
                 samples: DonorSamples, seed: int) -> DonorValues:
    shift = float(np.random.default_rng([seed, 6, donor.id]).normal(0.0, 0.15))
    return DonorValues(
        donor_id=donor.id, seed=seed,
        probe_ids=probes.table["probe_id"].to_numpy(np.int64),
        level=probes.level, amp=probes.amp, loading=probes.loading, sd=probes.sd,
        sample_factors=structures.factors[samples.leaf], shift=shift,
    )


def value_tokens(v: np.ndarray, rng: np.random.Generator, repr_share: float = REPR_SHARE
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Split a float block into repr-exact decimal mantissas and a few full-repr overrides.

    Returns ``(mantissa, frac_digits, override_pos, override_text)``: most values become
    15-significant-digit decimals (``mantissa / 10**frac_digits``; values at the floor become
    exactly :data:`FLOOR`); about a ``repr_share`` of them keep their unrounded double and are
    written as ``repr(float)`` (mostly 16-17 digits), at the flat positions ``override_pos``.
    """
    mant = np.empty(v.shape, dtype=np.int64)
    frac = np.empty(v.shape, dtype=np.int8)
    _to_mantissa(np.ascontiguousarray(v), mant, frac)
    k = int(rng.binomial(v.size, repr_share)) if repr_share > 0 else 0
    flat = v.ravel()
    pick = np.sort(rng.choice(v.size, size=k, replace=False)) if k else np.zeros(0, np.int64)
    pick = pick[flat[pick] > FLOOR]
    return mant, frac, pick, list(map(repr, flat[pick].tolist()))


@numba.njit(cache=True, nogil=True)
def _combine_block(offset, amp, loading, sd, factors, sample_shift, noise, uniform, v, pa):
    """``v = offset + amp * loading·factors + sample_shift + sd * noise`` clipped to
    [FLOOR, CEILING]; ``pa = uniform < logistic(PA_SLOPE * (v - PA_MIDPOINT))``."""
    n, s = v.shape
    k_max = loading.shape[1]
    for i in range(n):
        for j in range(s):
            dot = 0.0
            for k in range(k_max):
                dot += loading[i, k] * factors[j, k]
            x = offset[i] + amp[i] * dot + sample_shift[j] + sd[i] * noise[i, j]
            if x < FLOOR:
                x = FLOOR
            elif x > CEILING:
                x = CEILING
            v[i, j] = x
            pa[i, j] = uniform[i, j] < 1.0 / (1.0 + math.exp(-PA_SLOPE * (x - PA_MIDPOINT)))


@numba.njit(cache=True, nogil=True)
def _to_mantissa(v, mant, frac):
    """15-significant-digit mantissas: 14 fractional digits below 10, 13 from 10 up; values at
    the floor map to exactly :data:`FLOOR_MANTISSA`."""
    n, s = v.shape
    for i in range(n):
        for j in range(s):
            x = v[i, j]
            if x <= FLOOR:
                mant[i, j] = FLOOR_MANTISSA
                frac[i, j] = 14
            elif x >= 10.0:
                mant[i, j] = np.int64(np.rint(x * 1e13))
                frac[i, j] = 13
            else:
                mant[i, j] = np.int64(np.rint(x * 1e14))
                frac[i, j] = 14
