"""Cell Types Database data in Allen's layouts, at any scale (shared more_datasets.md §1).

The world: a taxonomy of clusters in subclasses in classes (each with marker genes), donors and
regions, and sparse integer counts drawn per cell from its cluster's expression profile times a
per-cell library size (Poisson; most counts are 0). Gene symbols and Entrez ids come from the
shipped ``reannotated.csv.gz`` so the AHBA generator and this one share genes.

Written layouts (:func:`write_dataset`):

* ``portal`` (human M1 / MCA, mouse ctx-hpf): ``{bucket_prefix}/matrix.csv`` (cells × genes,
  ``sample_name`` first), ``metadata.csv`` with the data set's ``_label/_order/_color`` (or
  ``_id``) column order and quirks, and, when small enough, ``trimmed_means.csv`` and
  ``medians.csv`` computed from the counts by Allen's rule (:func:`allen_cluster_stats`);
* ``zip2018`` (human MTG, mouse VISp): the zip with genes × cells exon and intron matrices
  (R ``write.csv`` quoting, Entrez-id rows), genes-rows, samples-columns and a readme; an
  ``index.json`` maps the well-known-file id to it for the mirror.

Matrices are generated and written in row blocks, so the portal layout works at any size (M1
scale is ~7.7 GB of CSV); the zip layout transposes in memory and is meant for test scales.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numba
import numpy as np
import pandas as pd
from scipy import sparse

from ..celltypes.datasets import CellTypeDataset, get_dataset

#: Largest cells × genes for which trimmed_means.csv / medians.csv are written by default.
SUMMARY_LIMIT = 400_000_000

_PALETTE = np.array([f"#{(i * 2654435761) & 0xFFFFFF:06X}" for i in range(1, 4096)])


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


# ------------------------------------------------------------------------------------------
# Allen's per-cluster summaries (the generator's own oracle, plain numpy)
# ------------------------------------------------------------------------------------------
def log2cpm(counts: sparse.csr_matrix) -> np.ndarray:
    """Dense ``log2(counts / cell total * 1e6 + 1)`` of a cells × genes count matrix."""
    dense = counts.toarray().astype(np.float64)
    tot = dense.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        cpm = np.where(tot > 0, dense / tot * 1e6, 0.0)
    return np.log2(cpm + 1.0)


def r_trimmed_mean(x: np.ndarray, trim: float = 0.25, axis: int = 0) -> np.ndarray:
    """R's ``mean(x, trim = trim)`` along ``axis``: sort, drop ``floor(n * trim)`` values from
    each end, average the rest (for ``trim >= 0.5`` R returns the median)."""
    x = np.sort(np.asarray(x, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    if n == 0:
        return np.full(np.delete(x.shape, axis), np.nan)
    lo = int(np.floor(n * trim))
    if trim >= 0.5 or n - 2 * lo <= 0:
        return np.median(x, axis=axis)
    return np.take(x, np.arange(lo, n - lo), axis=axis).mean(axis=axis)


def allen_cluster_stats(world: CellTypeWorld) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``trimmed_means`` and ``medians`` tables (genes × cluster labels, first column
    ``feature``) from the counts: log2(CPM + 1) per cell, then per gene and cluster R's
    ``mean(x, trim = 0.25)`` and the median. Clusters with no cells are left out."""
    logv = log2cpm(world.counts())
    labels = world.clusters["cluster"].to_numpy()
    tm, md = {}, {}
    for k, label in enumerate(labels):
        rows = logv[world.cell_cluster == k]
        if len(rows) == 0:
            continue
        tm[label] = r_trimmed_mean(rows, 0.25, axis=0)
        md[label] = np.median(rows, axis=0)
    index = pd.Index(world.genes["gene"], name="feature")
    return pd.DataFrame(tm, index=index), pd.DataFrame(md, index=index)


# ------------------------------------------------------------------------------------------
# CSV text of count rows (numba; the generator's own writer)
# ------------------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _format_rows(names, name_off, indptr, indices, data, ncols, out):
    pos = 0
    digits = np.empty(12, np.uint8)
    for r in range(indptr.size - 1):
        for k in range(name_off[r], name_off[r + 1]):
            out[pos] = names[k]
            pos += 1
        p = indptr[r]
        stop = indptr[r + 1]
        for c in range(ncols):
            out[pos] = 44
            pos += 1
            if p < stop and indices[p] == c:
                v = data[p]
                p += 1
                nd = 0
                while True:
                    digits[nd] = 48 + v % 10
                    nd += 1
                    v //= 10
                    if v == 0:
                        break
                for d in range(nd - 1, -1, -1):
                    out[pos] = digits[d]
                    pos += 1
            else:
                out[pos] = 48
                pos += 1
        out[pos] = 10
        pos += 1
    return pos


def format_count_rows(names: list[str], block: sparse.csr_matrix) -> bytes:
    """CSV lines ``name,c1,...,cN`` of a CSR block (names written as given, e.g. quoted)."""
    block = sparse.csr_matrix(block)
    block.sort_indices()
    enc = [n.encode() for n in names]
    off = np.zeros(len(enc) + 1, np.int64)
    np.cumsum([len(e) for e in enc], out=off[1:])
    name_buf = np.frombuffer(b"".join(enc), np.uint8) if enc else np.empty(0, np.uint8)
    ncols = block.shape[1]
    digits = int(np.floor(np.log10(max(1, int(block.data.max(initial=1)))))) + 1
    size = int(off[-1]) + block.shape[0] * (2 * ncols + 1) + block.nnz * digits + 16
    out = np.empty(size, np.uint8)
    n = _format_rows(name_buf, off, block.indptr.astype(np.int64), block.indices.astype(np.int64),
                     block.data.astype(np.int64), ncols, out)
    return out[:n].tobytes()


# ------------------------------------------------------------------------------------------
# metadata
# ------------------------------------------------------------------------------------------
def sample_names(world: CellTypeWorld, dataset: CellTypeDataset) -> list[str]:
    """Cell names in the data set's style (10x barcodes or SMART-seq plate wells)."""
    rng = np.random.default_rng(world.spec.seed + 11)
    n = world.spec.n_cells
    if "10x" in dataset.name or dataset.name == "human-m1":
        bases = np.array(list("ACGT"))
        codes = rng.integers(0, 4, (n, 16))
        return [f"{''.join(bases[c])}-{1 + i % 9}" + f"-L8TX_{180221 + i // 50000}_0{i % 3}"
                for i, c in enumerate(codes)]
    return [f"F{1 + i % 9}S4_{160106 + i // 384}_{i % 1000:03d}_{chr(65 + i % 8)}{1 + i % 12:02d}"
            for i in range(n)]


def _triples(values: np.ndarray, order_name: str, *, label_first: bool, name: str,
             order_col: str | None = None) -> dict[str, object]:
    # taxonomy labels keep the taxonomy's order (cluster C1, C2, ...); others first appearance
    uniq = pd.unique(values)
    key = [int(str(u).rsplit("C", 1)[-1]) if str(u).rsplit("C", 1)[-1].isdigit() else i
           for i, u in enumerate(uniq)]
    cats = pd.Index(uniq[np.argsort(key, kind="stable")] if name in ("cluster", "cell_type_alias")
                    else uniq)
    code = cats.get_indexer(values)
    order = code + 1
    color = _PALETTE[(code + 7 * len(name)) % len(_PALETTE)]
    cols = {f"{name}_label": values, f"{name}_{order_name}": order, f"{name}_color": color}
    if order_col:
        cols[order_col] = cols.pop(f"{name}_{order_name}")
    keys = list(cols)
    if not label_first:
        keys = keys[::-1]
    return {k: cols[k] for k in keys}


def portal_metadata(world: CellTypeWorld, dataset: CellTypeDataset,
                    names: list[str]) -> pd.DataFrame:
    """``metadata.csv`` of a portal data set, with its column order and quirks."""
    rng = np.random.default_rng(world.spec.seed + 13)
    tax = world.clusters
    k = world.cell_cluster
    cluster = tax["cluster"].to_numpy(dtype=object)[k]
    cls = tax["class"].to_numpy(dtype=object)[k].copy()
    sub = tax["subclass"].to_numpy(dtype=object)[k]
    human = dataset.species == "human"
    donors = (np.array([f"H18.30.00{i + 1}" for i in range(world.spec.n_donors)]) if human
              else np.array([f"{400000 + i}" for i in range(world.spec.n_donors)]))
    donor = donors[world.cell_donor]
    if dataset.name == "human-m1":
        regions = np.array(["M1", "M1", "M1"])
        cls = np.where(cls == "Non-neuronal", "Non-Neuronal", cls)
    elif dataset.name == "human-mca":
        regions = np.array(["MTG", "V1C", "A1C"])
    else:
        regions = np.array(["ACA", "SSp", "HIP"])
    region = regions[world.cell_region]
    accession = np.array([f"CS19121310{j + 1:02d}" for j in range(len(tax))], dtype=object)[k]
    sex = np.where(world.cell_donor % 2 == 0, "M", "F")
    cols: dict[str, object] = {"sample_name": names}
    if dataset.name == "human-mca":
        # colour-first triples; the alias triple's order column is called cell_type_order
        outlier = rng.random(len(names)) < 0.04
        cls = np.where(outlier, "", cls)
        cols["exp_component_name"] = [f"{n}-1" for n in names]
        cols["specimen_type"] = "nucleus"
        for name, vals in (("cluster", cluster), ("class", cls), ("subclass", sub),
                           ("donor_sex", sex), ("region", region),
                           ("cell_type_accession", accession)):
            cols.update(_triples(vals, "order", label_first=False, name=name))
        cols.update(_triples(cluster, "order", label_first=False, name="cell_type_alias",
                             order_col="cell_type_order"))
        cols.update(_triples(donor, "order", label_first=False, name="external_donor_name"))
        cols["outlier_call"] = np.where(outlier, "True", "False")
        cols["outlier_type"] = np.where(outlier, "Low quality", "")
    elif dataset.name == "human-m1":
        cols["exp_component_name"] = [f"{n}-1" for n in names]
        for name, vals in (("cluster", cluster), ("class", cls), ("subclass", sub),
                           ("donor_sex", sex), ("region", region),
                           ("cortical_layer", np.full(len(names), "all", dtype=object)),
                           ("cell_type_accession", accession),
                           ("cell_type_alias", cluster),
                           ("external_donor_name", donor)):
            cols.update(_triples(vals, "order", label_first=True, name=name))
        cols["specimen_type"] = "nucleus"
        cols["full_genotype_label"] = ""
        cols["outlier_call"] = "False"
        cols["outlier_type"] = ""
    else:
        # mouse: _label/_id/_color, a platform label and a neighborhood triple
        cols["exp_component_name"] = [f"{n}-1" for n in names]
        cols["platform_label"] = "10X" if "10x" in dataset.name else "SSv4"
        for name, vals in (("cluster", cluster), ("class", cls), ("subclass", sub),
                           ("neighborhood", cls), ("region", region), ("sex", sex),
                           ("external_donor_name", donor),
                           ("cell_type_accession", accession)):
            cols.update(_triples(vals, "id", label_first=True, name=name))
        cols["cortical_layer_label"] = "all"
    return pd.DataFrame(cols)


def samples_columns(world: CellTypeWorld, dataset: CellTypeDataset,
                    names: list[str]) -> pd.DataFrame:
    """``{prefix}_samples-columns.csv`` of a 2018 zip (plain label columns)."""
    tax = world.clusters
    k = world.cell_cluster
    human = dataset.species == "human"
    donors = np.array([f"H200.10{30 + i}" for i in range(world.spec.n_donors)]) if human else \
        np.array([f"{300000 + i}" for i in range(world.spec.n_donors)])
    region = dataset.prefix.split("_")[1] if dataset.prefix else "MTG"
    rng = np.random.default_rng(world.spec.seed + 17)
    cols: dict[str, object] = {
        "sample_name": names, "sample_id": 600000000 + np.arange(len(names)),
        "sample_type": "Nuclei" if human else "Cells",
        "organism": "Homo sapiens" if human else "Mus musculus",
        "donor_id": donors[world.cell_donor], "sex": np.where(world.cell_donor % 2, "F", "M"),
        "age_days": 18000, "brain_hemisphere": "L", "brain_region": region,
        "brain_subregion": np.array(["L1", "L2", "L3", "L4", "L5", "L6"])[world.cell_region * 2],
        "total_reads": rng.integers(500_000, 3_000_000, len(names)),
        "percent_exon_reads": np.round(rng.uniform(10, 40, len(names)), 2),
        "percent_intron_reads": np.round(rng.uniform(30, 60, len(names)), 2),
    }
    cls = tax["class"].to_numpy(dtype=object)[k]
    if human:
        cols["class"] = cls
        cols["cluster"] = tax["cluster"].to_numpy(dtype=object)[k]
    else:
        cols["class"] = cls
        cols["subclass"] = tax["subclass"].to_numpy(dtype=object)[k]
        cols["cluster"] = tax["cluster"].to_numpy(dtype=object)[k]
    return pd.DataFrame(cols)


def genes_rows(world: CellTypeWorld, dataset: CellTypeDataset) -> pd.DataFrame:
    """``{prefix}_genes-rows.csv`` (human and mouse column sets differ)."""
    g = world.genes
    if dataset.species == "human":
        return pd.DataFrame({"gene": g["gene"], "chromosome": g["chromosome"],
                             "entrez_id": g["entrez_id"], "gene_name": g["gene_name"],
                             "mouse_homologenes": [s.capitalize() for s in g["gene"]]})
    return pd.DataFrame({"gene_symbol": g["gene"],
                         "gene_id": 500700000 + np.arange(len(g)),
                         "chromosome": g["chromosome"], "gene_entrez_id": g["entrez_id"],
                         "gene_name": g["gene_name"]})


# ------------------------------------------------------------------------------------------
# writers
# ------------------------------------------------------------------------------------------
def _write_portal(root: Path, world: CellTypeWorld, dataset: CellTypeDataset,
                  summaries: bool) -> list[Path]:
    folder = root / str(dataset.bucket_prefix)
    folder.mkdir(parents=True, exist_ok=True)
    names = sample_names(world, dataset)
    matrix = folder / "matrix.csv"
    with open(matrix, "wb") as fh:
        fh.write(("sample_name," + ",".join(world.genes["gene"]) + "\n").encode())
        for a, block in world.iter_blocks():
            fh.write(format_count_rows(names[a:a + block.shape[0]], block))
    meta = portal_metadata(world, dataset, names)
    meta.to_csv(folder / "metadata.csv", index=False)
    out = [matrix, folder / "metadata.csv"]
    if summaries:
        tm, md = allen_cluster_stats(world)
        tm.to_csv(folder / "trimmed_means.csv")
        md.to_csv(folder / "medians.csv")
        out += [folder / "trimmed_means.csv", folder / "medians.csv"]
    return out


def _r_matrix(names: list[str], entrez: np.ndarray, counts_gxc: sparse.csr_matrix) -> bytes:
    header = '"",' + ",".join(f'"{n}"' for n in names) + "\n"
    buf = io.BytesIO()
    buf.write(header.encode())
    for a in range(0, counts_gxc.shape[0], 2048):
        b = min(counts_gxc.shape[0], a + 2048)
        buf.write(format_count_rows([f'"{e}"' for e in entrez[a:b]], counts_gxc[a:b]))
    return buf.getvalue()


def _write_zip2018(root: Path, world: CellTypeWorld, dataset: CellTypeDataset) -> list[Path]:
    names = sample_names(world, dataset)
    counts = world.counts()
    # split reads between exons and introns (binomial per count), genes × cells
    rng = np.random.default_rng(world.spec.seed + 19)
    exon = counts.copy()
    exon.data = rng.binomial(counts.data, 0.4).astype(np.int32)
    intron = counts.copy()
    intron.data = (counts.data - exon.data).astype(np.int32)
    exon.eliminate_zeros()
    intron.eliminate_zeros()
    entrez = world.genes["entrez_id"].to_numpy()
    path = root / str(dataset.zip_name)
    readme = (f"{dataset.title}\nGene expression matrices: exon and intron read counts, one "
              "row per gene (Entrez id) and one column per sample.\n")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(dataset.member("readme"), readme)
        zf.writestr(dataset.member("exon-matrix"), _r_matrix(names, entrez, exon.T.tocsr()))
        zf.writestr(dataset.member("intron-matrix"), _r_matrix(names, entrez, intron.T.tocsr()))
        zf.writestr(dataset.member("genes-rows"),
                    genes_rows(world, dataset).to_csv(index=False))
        zf.writestr(dataset.member("samples-columns"),
                    samples_columns(world, dataset, names).to_csv(index=False))
    index = root / "index.json"
    known = json.loads(index.read_text()) if index.is_file() else {}
    known[str(dataset.wkf_id)] = path.name
    index.write_text(json.dumps(known, indent=1))
    return [path, index]


def write_dataset(root: str | Path, dataset: str, spec: CellTypeWorldSpec | None = None,
                  *, summaries: bool | None = None, symbols: pd.DataFrame | None = None,
                  ) -> tuple[CellTypeWorld, list[Path]]:
    """Generate data set ``dataset`` (a name from :data:`~atlas_engine.celltypes.datasets.DATASETS`)
    under ``root`` in its real layout and mirror paths.

    Parameters
    ----------
    root : path
        The mirror directory (served by ``atlas-engine serve``).
    dataset : str
        ``human-m1``, ``human-mca``, ``mouse-ctx-hpf-10x``, ``human-mtg``, ...
    spec : CellTypeWorldSpec, optional
        Sizes and seed (SMART-seq sets get ``depth=30`` unless given).
    summaries : bool, optional
        Write ``trimmed_means.csv`` / ``medians.csv`` (portal sets; default when the matrix has
        at most :data:`SUMMARY_LIMIT` entries, as they are computed densely in memory).
    symbols : DataFrame, optional
        Draw gene symbols and Entrez ids from this table (``gene_symbol``, ``entrez_id``), e.g.
        an AHBA store's genes, instead of the shipped ``reannotated.csv.gz``.

    Returns
    -------
    (CellTypeWorld, list of Path)
        The world (truth for tests) and the files written.
    """
    ds = get_dataset(dataset)
    if spec is None:
        spec = CellTypeWorldSpec(depth=1.0 if "10x" in ds.name or ds.name == "human-m1" else 30.0)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    world = make_world(spec, ds.species, symbols)
    if ds.layout == "zip2018":
        return world, _write_zip2018(root, world, ds)
    if summaries is None:
        summaries = spec.n_cells * spec.n_genes <= SUMMARY_LIMIT
    return world, _write_portal(root, world, ds, summaries)
