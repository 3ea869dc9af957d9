"""The generated Cell Types world: its size and seed (:class:`CellTypeWorldSpec`), genes
(:func:`gene_table`), taxonomy (:func:`taxonomy`), cells and expression profiles
(:func:`make_world`), and the seeded sparse counts drawn block by block
(:class:`CellTypeWorld`). Written in Allen's layouts by :mod:`.synth_celltypes`.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd
from scipy import sparse


@dataclass(frozen=True)
class CellTypeWorldSpec:
    """Size and seed of a generated data set."""

    n_cells: int = 2000
    n_genes: int = 500
    n_clusters: int = 12
    n_donors: int = 2
    seed: int = 0
    #: mean counts scale (10x UMIs ~1; SMART-seq reads ~30)
    depth: float = 1.0


# ------------------------------------------------------------------------------------------
# genes and taxonomy
# ------------------------------------------------------------------------------------------
def gene_table(n_genes: int, species: str, seed: int = 0,
               symbols: pd.DataFrame | None = None) -> pd.DataFrame:
    """``n_genes`` genes with unique symbols and Entrez ids from ``reannotated.csv.gz`` (or from
    ``symbols``, a table with ``gene_symbol`` and ``entrez_id``; then ``LOC<n>`` names once those
    run out). Mouse symbols are title-cased (``Snap25``)."""
    if symbols is not None:
        table = symbols[["gene_symbol", "entrez_id"]]
    else:
        ref = resources.files("atlas_engine.data").joinpath("reannotated.csv.gz")
        with ref.open("rb") as fh, gzip.open(fh) as gz:
            table = pd.read_csv(gz, usecols=["gene_symbol", "entrez_id"])
    table = table.dropna().drop_duplicates("gene_symbol").drop_duplicates("entrez_id")
    table = table.sort_values("gene_symbol", kind="stable")
    rng = np.random.default_rng(seed)
    take = min(n_genes, len(table))
    pick = np.sort(rng.choice(len(table), size=take, replace=False))
    symbols = table["gene_symbol"].to_numpy(dtype=object)[pick].tolist()
    entrez = table["entrez_id"].to_numpy(dtype=np.int64)[pick].tolist()
    extra = n_genes - take
    symbols += [f"LOC{900000 + i}" for i in range(extra)]
    entrez += [900000 + i for i in range(extra)]
    if species == "mouse":
        symbols = [s[:1] + s[1:].lower() if not s.startswith("LOC") else s for s in symbols]
    chrom = rng.choice([str(c) for c in range(1, 23)] + ["X", "Y"], size=n_genes)
    return pd.DataFrame({"gene": symbols, "entrez_id": np.asarray(entrez, np.int64),
                         "chromosome": chrom,
                         "gene_name": [f"{s} gene product" for s in symbols]})


_CLASSES = ("Glutamatergic", "GABAergic", "Non-neuronal")
_SUBCLASSES = {
    "Glutamatergic": ("L2/3 IT", "L5 IT", "L6 IT", "L5 ET", "L6 CT", "L6b"),
    "GABAergic": ("Pvalb", "Sst", "Vip", "Lamp5", "Sncg"),
    "Non-neuronal": ("Astro", "Oligo", "OPC", "Micro-PVM", "Endo"),
}
_PREFIX = {"Glutamatergic": "Exc", "GABAergic": "Inh", "Non-neuronal": "Astro"}


def taxonomy(n_clusters: int, rng: np.random.Generator) -> pd.DataFrame:
    """Clusters with their subclass and class (one row per cluster, in cluster order)."""
    rows = []
    for k in range(n_clusters):
        cls = _CLASSES[k % 3] if k >= 3 else _CLASSES[k]
        subs = _SUBCLASSES[cls]
        sub = subs[(k // 3) % len(subs)]
        layer = ["L1-2", "L2-3", "L3-5", "L5-6", "L6"][k % 5]
        rows.append({"cluster": f"{_PREFIX[cls]} {layer} {sub.split()[0].upper()} C{k + 1}",
                     "subclass": sub, "class": cls})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------
# the counts
# ------------------------------------------------------------------------------------------
@dataclass
class CellTypeWorld:
    """Everything generated except the counts themselves (drawn block by block)."""

    spec: CellTypeWorldSpec
    genes: pd.DataFrame
    clusters: pd.DataFrame
    cell_cluster: np.ndarray      # (n_cells,) cluster index
    cell_donor: np.ndarray        # (n_cells,) donor index
    cell_region: np.ndarray       # (n_cells,) region index
    size_factor: np.ndarray       # (n_cells,)
    profile: np.ndarray           # (n_clusters, n_genes) mean counts at size 1
    markers: dict[str, list[str]]

    def counts_block(self, start: int, stop: int) -> sparse.csr_matrix:
        """Counts of cells ``start:stop`` (int32 CSR); the same cells always get the same
        counts, whatever the blocking."""
        lam = self.profile[self.cell_cluster[start:stop]] * self.size_factor[start:stop, None]
        rng = np.random.default_rng([self.spec.seed, 7, start, stop])
        dense = rng.poisson(lam).astype(np.int32)
        return sparse.csr_matrix(dense)

    def iter_blocks(self, block: int = 512):
        n = self.spec.n_cells
        for a in range(0, n, block):
            yield a, self.counts_block(a, min(n, a + block))

    def counts(self) -> sparse.csr_matrix:
        """All counts (cells × genes) in memory: for test scales."""
        return sparse.vstack([b for _, b in self.iter_blocks()], format="csr")


def make_world(spec: CellTypeWorldSpec, species: str = "human",
               symbols: pd.DataFrame | None = None) -> CellTypeWorld:
    """Draw the taxonomy, the cells and the expression profiles of ``spec`` (genes from
    ``symbols`` when given, see :func:`gene_table`)."""
    rng = np.random.default_rng(spec.seed)
    genes = gene_table(spec.n_genes, species, spec.seed, symbols)
    clusters = taxonomy(spec.n_clusters, rng)
    # uneven cluster sizes, with the last two tiny (1 and 3 cells) so small-cluster rules show
    weights = rng.gamma(1.5, 1.0, size=spec.n_clusters)
    weights /= weights.sum()
    n_small = min(2, spec.n_clusters - 1) if spec.n_cells > 50 else 0
    sizes = np.floor(weights * (spec.n_cells - 4 * n_small)).astype(np.int64)
    small = [1, 3][:n_small]
    for i, s in enumerate(small):
        sizes[spec.n_clusters - 1 - i] = s
    sizes[0] += spec.n_cells - sizes.sum()
    cell_cluster = rng.permutation(np.repeat(np.arange(spec.n_clusters), sizes))
    cell_donor = rng.integers(0, spec.n_donors, spec.n_cells)
    cell_region = rng.integers(0, 3, spec.n_cells)
    size_factor = rng.lognormal(0.0, 0.35, spec.n_cells)
    # most genes barely expressed; about one in eight moderately (about 8 % of counts are
    # non-zero, as in 10x nuclei); markers high in their groups
    base = np.where(rng.random(spec.n_genes) < 0.12, rng.lognormal(-0.5, 1.0, spec.n_genes),
                    rng.lognormal(-4.0, 1.0, spec.n_genes))
    profile = base[None, :] * rng.lognormal(0.0, 0.3, (spec.n_clusters, spec.n_genes))
    markers: dict[str, list[str]] = {}
    symbols = genes["gene"].to_numpy()
    n_mark = max(1, min(5, spec.n_genes // (4 * spec.n_clusters)))
    order = rng.permutation(spec.n_genes)
    for k in range(spec.n_clusters):
        idx = order[k * n_mark:(k + 1) * n_mark]
        profile[k, idx] = rng.uniform(3.0, 12.0, idx.size)
        markers[clusters["cluster"].iloc[k]] = symbols[idx].tolist()
    for group in ("subclass", "class"):
        for j, (_, members) in enumerate(clusters.groupby(group, sort=True)):
            idx = order[spec.n_clusters * n_mark + j::max(1, spec.n_genes // 7)][:2]
            profile[np.ix_(members.index.to_numpy(), idx)] += rng.uniform(2.0, 5.0, idx.size)
    profile *= spec.depth
    return CellTypeWorld(spec, genes, clusters, cell_cluster, cell_donor, cell_region,
                         size_factor, profile, markers)
