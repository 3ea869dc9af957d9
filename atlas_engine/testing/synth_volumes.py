"""Generated reference volumes consistent with the generated ontologies and structure graphs.

* mouse CCFv3-style ``annotation_{10,25,50,100}.nrrd`` (gzip NRRD, uint32 graph-1 ids, 0 outside
  the brain), shapes the real ones divided by ``scale``;
* the old P56 annotation zip (WKF 197642854: ``annotation.mhd`` + ``annotation.raw``, 25 µm);
* the human reference atlas ``annotation_full.nii.gz`` (float32-stored graph-10 leaf ids, RAS mm)
  and per-donor T1/T2 MRI NIfTIs;
* ``structure_graph_1.json`` (mouse) and ``structure_graph_10.json`` (human).

Labels come from a coarse Voronoi partition of an ellipsoidal brain into the ontology's leaves,
looked up at any resolution, so an annotation of any size (1320 × 800 × 1140 included) is
generated slab by slab in bounded memory. Files are laid out as the mirror serves them
(:data:`MOUSE_CCF_DIR`, :data:`HUMAN_ATLAS_DIR`, well-known files by their saved names).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..sources.donors import DONORS
from ..sources.volumes import (
    CCF_SHAPES,
    HUMAN_ATLAS_DIR,
    MOUSE_CCF_DIR,
    ccf_annotation_name,
    mri_file_name,
)
from ..volumes.metaimage import write_metaimage_zip
from ..volumes.nifti import write_nifti
from ..volumes.nrrd import write_nrrd
from .synth_mouse import build_mouse_ontology, mouse_structure_graph
from .synth_ontology import build_ontology, leaf_mask, structure_graph

#: Coarse grid the labels are drawn on (AP, DV, ML at 200 µm for the mouse).
MOUSE_COARSE = (66, 40, 57)
#: Human atlas grid (x, y, z) at 0.5 mm is 394 × 466 × 378; the coarse grid is 4 mm.
HUMAN_SHAPE = (394, 466, 378)
HUMAN_COARSE = (49, 58, 47)


def _leaf_ids(table: pd.DataFrame, skip: Sequence[int] = ()) -> np.ndarray:
    leaves = table.loc[leaf_mask(table), "id"].to_numpy(np.int64)
    return np.asarray([i for i in leaves if i not in set(skip)], dtype=np.int64)


def coarse_labels(shape: Sequence[int], leaves: np.ndarray, seed: int,
                  sides: np.ndarray | None = None) -> np.ndarray:
    """An ellipsoid of ``shape`` split into Voronoi cells, one leaf id per cell, 0 outside.

    ``sides`` (-1 left, +1 right, 0 either, per leaf) puts each leaf's seed in its half along
    axis 0, so left structures lie in the left hemisphere.
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) / n for n in shape], indexing="ij"), -1)
    r = ((grid - 0.5) / np.array([0.46, 0.44, 0.46])) ** 2
    inside = r.sum(-1) <= 1.0
    pts = grid[inside]
    sides = np.zeros(len(leaves), dtype=int) if sides is None else np.asarray(sides)
    seeds = np.empty((len(leaves), 3))
    for side in (-1, 0, 1):
        which = np.flatnonzero(sides == side)
        if not which.size:
            continue
        pool = pts if side == 0 else pts[(pts[:, 0] < 0.5) == (side < 0)]
        seeds[which] = pool[rng.choice(len(pool), size=which.size,
                                       replace=len(pool) < which.size)]
    out = np.zeros(tuple(shape), dtype=np.int64)
    out[inside] = leaves[cKDTree(seeds).query(pts)[1]]
    return out


def label_slabs(coarse: np.ndarray, shape: Sequence[int], depth: int = 16,
                dtype: np.dtype | type = np.uint32) -> Iterator[np.ndarray]:
    """The coarse labels at ``shape`` (nearest lookup), slab by slab along the last axis."""
    idx = [np.minimum((np.arange(n) * c) // n, c - 1)
           for n, c in zip(shape, coarse.shape, strict=True)]
    for z0 in range(0, int(shape[2]), depth):
        sub = coarse[:, :, idx[2][z0:z0 + depth]].astype(dtype)     # coarse planes: small
        out = np.empty((int(shape[0]), int(shape[1]), sub.shape[2]), dtype=dtype, order="F")
        for k in range(sub.shape[2]):
            out[:, :, k] = sub[:, :, k][np.ix_(idx[0], idx[1])]
        yield out


def mouse_shape(resolution: int, scale: int = 1) -> tuple[int, int, int]:
    """The CCFv3 shape at ``resolution`` µm divided by ``scale`` (at least 2 per axis)."""
    return tuple(max(2, s // scale) for s in CCF_SHAPES[resolution])  # type: ignore[return-value]


def write_mouse_volumes(dest: str | Path, *, scale: int = 10, seed: int = 0,
                        resolutions: Sequence[int] = (10, 25, 50, 100)) -> dict[str, Path]:
    """Mouse annotations (NRRD per resolution, the P56 MetaImage zip) and graph 1 into dest."""
    dest = Path(dest)
    table = build_mouse_ontology()
    coarse = coarse_labels(MOUSE_COARSE, _leaf_ids(table), seed)
    out: dict[str, Path] = {}
    ccf = dest / MOUSE_CCF_DIR
    ccf.mkdir(parents=True, exist_ok=True)
    for res in resolutions:
        shape = mouse_shape(res, scale)
        out[f"annotation_{res}"] = write_nrrd(
            ccf / ccf_annotation_name(res), label_slabs(coarse, shape), shape, np.uint32,
            (res * scale,) * 3)
    shape = mouse_shape(25, scale)
    out["p56"] = write_metaimage_zip(dest / "P56_Mouse_annotation.zip",
                                     label_slabs(coarse, shape), shape, np.uint32,
                                     (25 * scale,) * 3)
    graph = dest / "structure_graph_1.json"
    graph.write_text(json.dumps(mouse_structure_graph(table)))
    out["structure_graph_1"] = graph
    return out


def human_affine(shape: Sequence[int], voxel_mm: float) -> np.ndarray:
    """RAS mm affine centred like MNI152 (origin near the anterior commissure)."""
    aff = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    aff[:3, 3] = [-98.0, -134.0, -72.0]
    return aff


def write_human_volumes(dest: str | Path, *, scale: int = 8, seed: int = 0,
                        donors: Sequence[int] | None = None) -> dict[str, Path]:
    """The human annotation NIfTI (float32 labels), donor T1/T2 and graph 10 into dest."""
    dest = Path(dest)
    table = build_ontology()
    leaves = _leaf_ids(table)
    hemi = table.set_index("id").loc[leaves, "hemisphere"].fillna("")
    sides = np.where(hemi == "L", -1, np.where(hemi == "R", 1, 0))
    coarse = coarse_labels(HUMAN_COARSE, leaves, seed + 1, sides)
    shape = tuple(max(2, s // scale) for s in HUMAN_SHAPE)
    aff = human_affine(shape, 0.5 * scale)
    out: dict[str, Path] = {}
    atlas = dest / HUMAN_ATLAS_DIR
    atlas.mkdir(parents=True, exist_ok=True)
    out["annotation_full"] = write_nifti(atlas / "annotation_full.nii.gz",
                                         label_slabs(coarse, shape, dtype=np.float32), shape,
                                         np.float32, aff, description="annotation_full")
    rng = np.random.default_rng(seed + 2)
    chosen = [d for d in DONORS if donors is None or d.id in set(donors)]
    for d in chosen:
        for kind in ("T1", "T2"):
            base = (coarse > 0).astype(np.float32) * (600.0 if kind == "T1" else 300.0)
            noise = rng.normal(0, 20, size=base.shape).astype(np.float32)
            vol = np.clip(base + noise, 0, None)
            mshape = shape
            out[f"{d.id}_{kind}"] = write_nifti(
                dest / mri_file_name(d.id, kind),
                label_slabs(vol, mshape, dtype=np.int16), mshape, np.int16, aff,
                description=f"H{d.name} {kind}")
    graph = dest / "structure_graph_10.json"
    if not graph.exists():
        graph.write_text(json.dumps(structure_graph(table)))
    out["structure_graph_10"] = graph
    return out


def write_reference_volumes(dest: str | Path, *, mouse_scale: int = 10, human_scale: int = 8,
                            seed: int = 0) -> dict[str, Path]:
    """Mouse and human volumes, named as the mirror serves them (well-known files by their
    :func:`~atlas_engine.sources.donors.well_known_files` names)."""
    dest = Path(dest)
    out = {**write_mouse_volumes(dest, scale=mouse_scale, seed=seed),
           **write_human_volumes(dest, scale=human_scale, seed=seed)}
    return out
