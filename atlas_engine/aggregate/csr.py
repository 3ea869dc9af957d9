"""Sparse cell blocks for the engine: CSR rows of a cells × genes count matrix.

A :class:`CsrBlock` is what a Dask block holds when the grouped axis is cells of a single-cell
store: the CSR arrays of a run of whole cells, the cells' total counts over all genes, and the
gene band ``[col0, col1)`` the block stands for (several bands share one read of the rows).
:func:`csr_chunk_reduce` is the sparse face of the engine's chunk step: it produces the same
intermediates as the dense kernels (``count``, ``sum``, ``m2``) plus the single-cell ones
(``nnz``, ``cpm``, ``lcpm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..kernels.sparse import csr_group_stats

Intermediates = dict[str, np.ndarray]


@dataclass
class CsrBlock:
    """Whole cells as CSR rows, seen through the gene band ``[col0, col1)``.

    With ``row_end`` set, ``indptr`` holds each row's first entry in the band (one per row)
    and ``row_end`` its end (:func:`atlas_engine.kernels.sparse.csr_band_pointers`).
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    totals: np.ndarray
    col0: int
    col1: int
    row_end: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        rows = len(self.indptr) - 1 if self.row_end is None else len(self.row_end)
        return (rows, self.col1 - self.col0)


def csr_chunk_reduce(block: CsrBlock, labels: np.ndarray, n_groups: int,
                     needed: Sequence[str]) -> Intermediates:
    """Intermediates ``needed`` of one sparse block (one pass of the CSR kernels)."""
    need = set(needed)
    stats = csr_group_stats(block.indptr, block.indices, block.data, labels, block.totals,
                            n_groups, block.col0, block.col1, m2="m2" in need,
                            cpm=bool(need & {"cpm", "lcpm"}), row_end=block.row_end)
    width = block.col1 - block.col0
    out: Intermediates = {
        # the same for every gene: a read-only broadcast view, no memory (see specs.merge_pair)
        "count": np.broadcast_to(stats["cells"][:, None], (len(stats["cells"]), width)),
        "sum": stats["sum"], "nnz": stats["nnz"],
    }
    for key in ("m2", "cpm", "lcpm"):
        if key in stats:
            out[key] = stats[key]
    return {k: out[k] for k in needed}
