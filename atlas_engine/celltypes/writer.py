"""Appending CSR rows to the AnnData Zarr layout (``X`` or a layer), chunk by chunk.

The element is written as anndata's ``csr_matrix`` encoding (group attributes
``encoding-type: csr_matrix``, ``encoding-version: 0.1.0``, ``shape``; arrays ``data``,
``indices``, ``indptr``), so ``anndata.read_zarr`` and anndata's lazy reader open it as they
are. Rows are appended by resizing the arrays; :meth:`CsrWriter.truncate` rolls an element back
to a checkpoint after a crash.
"""

from __future__ import annotations

import numpy as np
import zarr

from ..kernels.sparse import rows_sorted

#: Elements per chunk of ``data`` / ``indices`` (4 MiB of int32).
NNZ_CHUNK = 1 << 20
#: Entries per chunk of ``indptr``.
INDPTR_CHUNK = 1 << 18
#: group attribute: True while every row appended had strictly increasing column indices
SORTED_ATTR = "atlas-engine:sorted-indices"


class CsrWriter:
    """Append-only writer of one CSR element (``n_rows`` grows, ``n_cols`` fixed)."""

    def __init__(self, root: zarr.Group, path: str, n_cols: int, *, create: bool = True,
                 dtype: np.dtype | type = np.int32) -> None:
        if create:
            grp = root.require_group(path)
            grp.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0",
                              "shape": [0, int(n_cols)], SORTED_ATTR: True})
            # every chunk written and checksummed (CRC-32C), as the microarray stores: a
            # damaged or missing chunk is refused by the readers, never read as zeros
            comp = [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
                    zarr.codecs.Crc32cCodec()]
            for name, dt, chunk in (("data", dtype, NNZ_CHUNK), ("indices", np.int32, NNZ_CHUNK),
                                    ("indptr", np.int64, INDPTR_CHUNK)):
                grp.create_array(name, shape=(1 if name == "indptr" else 0,), dtype=dt,
                                 chunks=(chunk,), compressors=comp, overwrite=True,
                                 fill_value=0, config={"write_empty_chunks": True})
        self.group = root[path]
        self.n_cols = int(n_cols)
        self.data = self.group["data"]
        self.indices = self.group["indices"]
        self.indptr = self.group["indptr"]

    @property
    def n_rows(self) -> int:
        return int(self.indptr.shape[0]) - 1

    @property
    def nnz(self) -> int:
        return int(self.data.shape[0])

    def append(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray) -> None:
        """Append rows given as CSR pieces (``indptr`` starting at 0)."""
        rows = len(indptr) - 1
        nnz0, r0 = self.nnz, self.n_rows
        n = int(indptr[-1])
        if self.group.attrs.get(SORTED_ATTR) and not rows_sorted(indptr, indices):
            # said before the rows land, so a crash in between never leaves a false claim
            self.group.attrs[SORTED_ATTR] = False
        if n:
            self.data.resize((nnz0 + n,))
            self.indices.resize((nnz0 + n,))
            self.data[nnz0:] = data[:n]
            self.indices[nnz0:] = indices[:n]
        self.indptr.resize((r0 + rows + 1,))
        self.indptr[r0 + 1:] = np.asarray(indptr[1:], np.int64) + nnz0
        self.group.attrs["shape"] = [r0 + rows, self.n_cols]

    def truncate(self, rows: int) -> None:
        """Keep only the first ``rows`` rows (after an interrupted run)."""
        if rows > self.n_rows:
            raise ValueError(f"cannot truncate {self.n_rows} rows to {rows}")
        nnz = int(self.indptr[rows]) if rows else 0
        self.indptr.resize((rows + 1,))
        self.data.resize((nnz,))
        self.indices.resize((nnz,))
        self.group.attrs["shape"] = [rows, self.n_cols]
