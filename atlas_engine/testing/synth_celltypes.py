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

The world (spec, genes, taxonomy, counts) is in :mod:`.synth_celltypes_world`, the cell names
and metadata tables in :mod:`.synth_celltypes_metadata`.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from ..celltypes.datasets import CellTypeDataset, get_dataset
from ..kernels.synthtext import _format_rows
from .synth_celltypes_metadata import genes_rows, portal_metadata, sample_names, samples_columns
from .synth_celltypes_world import (
    CellTypeWorld,
    CellTypeWorldSpec,
    gene_table,
    make_world,
    taxonomy,
)

__all__ = [
    "SUMMARY_LIMIT", "CellTypeWorld", "CellTypeWorldSpec", "allen_cluster_stats",
    "format_count_rows", "gene_table", "genes_rows", "log2cpm", "make_world", "portal_metadata",
    "r_trimmed_mean", "sample_names", "samples_columns", "taxonomy", "write_dataset",
]

#: Largest cells × genes for which trimmed_means.csv / medians.csv are written by default.
SUMMARY_LIMIT = 400_000_000


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
# CSV text of count rows (the numba kernel is atlas_engine.kernels.synthtext._format_rows)
# ------------------------------------------------------------------------------------------
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
