"""Voxel labels → row indices of a sorted id list; float-stored labels cast safely.

The Allen Human Reference Atlas 3D stores integer structure ids (10307 … 266441657) as float32,
which cannot hold every integer above 2**24 exactly (shared more_datasets.md §2.4). A stored
value is therefore matched to the known id whose float32 rounding it is; a value that is no
known id's rounding, is not finite, or is shared by two known ids is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FormatError


def _float_ids(values: np.ndarray, ids: np.ndarray, source: str | Path,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Float labels → (position of each in the unique values, the id each unique value
    stands for; 0 stays 0)."""
    uniq = np.unique(values)
    bad = uniq[~np.isfinite(uniq)]
    if bad.size:
        raise FormatError(source, f"label value {float(bad[0])} is not finite",
                          expected="integer structure ids")
    f32 = ids.astype(values.dtype)
    order = np.argsort(f32, kind="stable")
    fs, idsort = f32[order], ids[order]
    out = np.empty(uniq.shape, dtype=np.int64)
    for k, v in enumerate(uniq):
        if v == 0:
            out[k] = 0
            continue
        lo, hi = np.searchsorted(fs, v, "left"), np.searchsorted(fs, v, "right")
        if hi - lo == 1:
            out[k] = idsort[lo]
        elif hi - lo > 1:
            raise FormatError(source, f"label value {float(v)!r} ({values.dtype}) stands for several "
                              f"ids: {', '.join(map(str, idsort[lo:hi]))}",
                              expected="ids distinct in the stored float type")
        elif float(v).is_integer():
            out[k] = int(v)       # reported as unknown by the caller
        else:
            raise FormatError(source, f"label value {float(v)!r} is not an integer",
                              expected="integer structure ids")
    return np.searchsorted(uniq, values).astype(np.int64, copy=False), out


def label_index(slab: np.ndarray, ids: np.ndarray, source: str | Path,
                background: int = 0) -> np.ndarray:
    """Index of each voxel's label in ``ids`` (sorted, unique int64), ``-1`` for background.

    Float-stored labels are matched through their float rounding (module docstring).

    Raises
    ------
    FormatError
        A label that is not in ``ids`` (the first few are named, with voxel counts).
    """
    from ..kernels.lookup import index_in_sorted

    ids = np.asarray(ids, dtype=np.int64)
    flat = np.asarray(slab).reshape(-1, order="F")
    if np.issubdtype(flat.dtype, np.floating):
        pos, uniq_ids = _float_ids(flat, ids, source)
        flat = uniq_ids[pos]
    if not flat.dtype.isnative:
        flat = flat.astype(flat.dtype.newbyteorder("="))
    idx = index_in_sorted(flat, ids, background)
    unknown = idx == -2
    if unknown.any():
        vals, counts = np.unique(flat[unknown], return_counts=True)
        listed = ", ".join(f"{v} ({c:,} voxels)" for v, c in zip(vals[:5], counts[:5], strict=True))
        more = f" and {len(vals) - 5} more" if len(vals) > 5 else ""
        raise FormatError(source, f"labels not in the ontology: {listed}{more}",
                          expected="structure ids of the ontology (0 = outside the brain)")
    return idx
