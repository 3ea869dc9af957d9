"""Voxel counts and region volumes per structure, rolled up the ontology; structure masks.

Counting runs on the engine's grouped kernels (:func:`~atlas_engine.aggregate.engine.
groupby_reduce_blocks`): each slab's voxels are one block whose labels are the voxels' ontology
rows; the per-structure counts are merged over slabs and rolled up with the ontology's
``structure_id_path`` (a structure counts its own voxels and all its descendants'), as
``aggregate`` rolls samples up. Compressed volumes are streamed slab by slab; uncompressed ones
(or ``lazy=True``) become Dask tasks, one per slab.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..aggregate.engine import groupby_reduce_blocks
from ..store.ontology import Ontology
from .base import SLAB_BYTES, Volume
from .labels import label_index


def _ones_block(slab: np.ndarray, ids: np.ndarray, source: Any) -> tuple[np.ndarray, np.ndarray]:
    labels = label_index(slab, ids, source)
    return np.ones((1, labels.size), dtype=np.float32), labels


def voxel_counts(volume: Volume, ontology: Ontology, *, rollup: bool = True,
                 depth: int | None = None, lazy: bool | None = None,
                 slab_bytes: int = SLAB_BYTES // 2) -> pd.DataFrame:
    """Voxels and volume per structure.

    Parameters
    ----------
    volume : Volume
        An annotation volume whose non-zero voxels are ontology structure ids.
    ontology : Ontology
        The structure tree; a voxel label outside it raises :class:`FormatError`.
    rollup : bool, default True
        Add ``voxels`` (the structure with all its descendants) next to ``voxels_self``.
    depth : int, optional
        Keep only structures at this ontology depth (roll-up to that level).
    lazy : bool, optional
        Build Dask tasks per slab (default: when the data is uncompressed on disk).
    slab_bytes : int, default 32 MiB
        Target size in bytes of one slab of the volume (whole planes; bounds memory).

    Returns
    -------
    pandas.DataFrame
        Index ``structure_id``; columns ``acronym, name, depth, voxels_self, voxels,
        volume_mm3`` (``volume`` of ``voxels``; µm volumes are converted), sorted by
        ``graph_order``.

    Raises
    ------
    FormatError
        A voxel label that is not a structure of ``ontology``.
    """
    ids = np.sort(np.asarray(ontology.ids, dtype=np.int64))
    n = len(ids)
    # one pass: columns 0..n-1 each structure's own voxels, n..2n-1 rolled up (descendants)
    member = np.eye(n, dtype=bool)
    if rollup:
        member = np.concatenate([member, ontology.membership(ids, ids)], axis=1)
    planes = volume.slab_depth(slab_bytes)
    if lazy is None:
        lazy = volume.raw_at is not None
    if lazy:
        import dask

        arr = volume.to_dask(depth=planes)
        blocks = (dask.delayed(_ones_block, nout=2)(b, ids, str(volume.path))
                  for b in arr.to_delayed().ravel())
    else:
        blocks = (_ones_block(slab, ids, volume.path) for _, slab in volume.slabs(planes))
    res = groupby_reduce_blocks(blocks, n_groups=n, stats=("count",), membership=member)
    counts = np.asarray(res["count"])[0]
    own = counts[:n]
    total = counts[n:] if rollup else own
    table = ontology.table.loc[ids]
    scale = volume.voxel_volume * (1e-9 if volume.unit == "um" else 1.0)
    out = pd.DataFrame({
        "acronym": table["acronym"].to_numpy(), "name": table["name"].to_numpy(),
        "depth": [ontology.depth(i) for i in ids], "voxels_self": own, "voxels": total,
        "volume_mm3": total * scale,
    }, index=pd.Index(ids, name="structure_id"))
    if "graph_order" in table:
        out = out.iloc[np.argsort(table["graph_order"].to_numpy(), kind="stable")]
    if depth is not None:
        out = out[out["depth"] == depth]
    return out


def structure_mask(volume: Volume, ontology: Ontology, structure: int | str) -> Any:
    """Lazy boolean mask of the voxels of ``structure`` or any of its descendants.

    Parameters
    ----------
    volume : Volume
        An annotation volume whose non-zero voxels are ontology structure ids.
    ontology : Ontology
        The structure tree the labels belong to.
    structure : int or str
        The structure: its id, acronym or name (case-insensitive).

    Returns
    -------
    dask.array.Array
        Boolean, the shape and chunks of ``volume.to_dask()``: True where the voxel's label is
        ``structure`` or one of its descendants.

    Raises
    ------
    ConfigError
        ``structure`` is not in ``ontology``, or an acronym or name shared by several
        structures.
    """
    import dask.array as da

    sid = ontology.lookup(structure)
    members = np.asarray(ontology.descendants(sid, include_self=True), dtype=np.int64)
    arr = volume.to_dask()
    return da.map_blocks(lambda b: np.isin(b, members), arr, dtype=bool)


def mask_slabs(volume: Volume, ontology: Ontology, structure: int | str,
               slab_bytes: int = SLAB_BYTES // 2) -> Iterator[np.ndarray]:
    """uint8 slabs (1 inside ``structure`` or a descendant, else 0), in volume order; voxel
    labels outside the ontology raise :class:`~atlas_engine.errors.FormatError`."""
    sid = ontology.lookup(structure)
    ids = np.sort(np.asarray(ontology.ids, dtype=np.int64))
    inside = np.isin(ids, np.asarray(ontology.descendants(sid, include_self=True)))
    for _, slab in volume.slabs(volume.slab_depth(slab_bytes)):
        idx = label_index(slab, ids, volume.path)
        yield (inside[np.maximum(idx, 0)] & (idx >= 0)).astype(np.uint8).reshape(
            slab.shape, order="F")


def write_structure_mask(volume: Volume, ontology: Ontology, structure: int | str,
                         out: str | Path) -> Path:
    """Write the mask of ``structure`` and its descendants as ``.nrrd`` or ``.nii[.gz]``
    (uint8, the atlas's grid), slab by slab. Returns the path."""
    from .nifti import write_nifti
    from .nrrd import write_nrrd

    out = Path(out)
    slabs = mask_slabs(volume, ontology, structure)
    if out.name.endswith((".nii", ".nii.gz")):
        aff = np.array(volume.affine, dtype=float)
        if volume.unit == "um":
            aff[:3, :] *= 1e-3
        return write_nifti(out, slabs, volume.shape, np.uint8, aff)
    return write_nrrd(out, slabs, volume.shape, np.uint8, volume.spacing)
