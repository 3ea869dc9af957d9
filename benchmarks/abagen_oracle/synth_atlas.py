"""A generated volumetric MNI atlas around a set of sample coordinates (numpy + nibabel only).

Used by the end-to-end golden (make_e2e_golden.py) and by benchmarks/bench_abagen.py; it runs
in both the project environment and the abagen 0.1.3 one.

The atlas is a 2 mm grid (voxel centres at odd millimetres, so no voxel sits on x = 0) over
the samples' bounding box. ``n_regions`` seeds are drawn from the samples; every voxel within
``radius`` mm of a sample takes the nearest seed of its own hemisphere (x < 0: left seeds,
x > 0: right seeds), so regions never cross the midline and samples far from tissue stay
unmatched. One extra region far from every sample is added (``empty=True``), so no donor has a
sample in it (exercises ``missing='centroids'``). The region info table gives each region the
seed sample's hemisphere and broad class, so some samples meet a region of another class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def make_atlas(
    xyz: np.ndarray,
    classes: np.ndarray,
    n_regions: int,
    seed: int = 0,
    radius: float = 7.0,
    voxel: float = 2.0,
    empty: bool = True,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """``(labels (X, Y, Z) int32, affine 4×4, info DataFrame id/label/hemisphere/structure)``."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    xyz = np.asarray(xyz, dtype=np.float64)
    classes = np.asarray(classes, dtype=object)
    lo = np.floor((xyz.min(axis=0) - radius - 12) / voxel) * voxel + 1
    hi = xyz.max(axis=0) + radius + 12
    axes = [np.arange(lo[k], hi[k], voxel) for k in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    near = cKDTree(xyz).query(grid, distance_upper_bound=radius)[0] <= radius
    labels = np.zeros(len(grid), dtype=np.int32)
    side = np.where(xyz[:, 0] < 0, "L", "R")
    ok = np.flatnonzero((xyz[:, 0] != 0) & np.asarray([c is not None for c in classes]))
    n_left = max(1, n_regions // 2)
    left = rng.choice(ok[side[ok] == "L"], size=n_left, replace=False)
    right = rng.choice(ok[side[ok] == "R"], size=n_regions - n_left, replace=False)
    seeds = np.concatenate([left, right])
    ids = np.arange(1, len(seeds) + 1)
    for hemi, mask_fn in (("L", lambda g: g[:, 0] < 0), ("R", lambda g: g[:, 0] > 0)):
        pick = np.flatnonzero(side[seeds] == hemi)
        vox = np.flatnonzero(near & mask_fn(grid))
        _, nearest = cKDTree(xyz[seeds[pick]]).query(grid[vox])
        labels[vox] = ids[pick][nearest]
    info = pd.DataFrame({
        "id": ids,
        "label": [f"region{i:03d}" for i in ids],
        "hemisphere": side[seeds],
        "structure": [str(classes[s]) for s in seeds],
    })
    shape = tuple(len(a) for a in axes)
    vol = labels.reshape(shape)
    if empty:  # a 3×3×3 block in the far corner, away from every sample
        nid = len(ids) + 1
        vol[-4:-1, -4:-1, -4:-1] = nid
        corner = np.array([axes[k][-2] for k in range(3)])
        info.loc[len(info)] = [nid, f"region{nid:03d}", "L" if corner[0] < 0 else "R",
                               "cortex"]
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = lo
    return vol, affine, info


def write_atlas(path: str | Path, vol: np.ndarray, affine: np.ndarray) -> None:
    """Save ``vol`` as a gzipped NIfTI-1 label image."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(vol, dtype=np.int32), affine)
    img.header.set_data_dtype(np.int32)
    nib.save(img, str(path))


def voxel_atlas(vol: np.ndarray) -> np.ndarray:
    """Every non-zero voxel of ``vol`` its own region (labels 1..N in C order)."""
    out = np.zeros(vol.shape, dtype=np.int32)
    nz = vol.ravel() != 0
    out.ravel()[np.flatnonzero(nz)] = np.arange(1, int(nz.sum()) + 1)
    return out
