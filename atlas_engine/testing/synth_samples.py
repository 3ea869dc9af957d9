"""The AHBA sampling frame of ``atlas-engine synth``: ontology leaves with MNI centres and
latent structure factors (:func:`build_structures`), and each donor's samples on those leaves
(:func:`build_samples`: real well ids and corrected coordinates, SampleAnnot rows, deliberate
hemisphere mismatches). Pure and seeded, part of the model of :mod:`.synth_model`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..sources.donors import Donor
from .synth_ontology import leaf_mask
from .synth_real import corrected_table, donor_wells, locate

#: Number of latent structure factors.
N_FACTORS = 6

#: Donors whose samples cover both hemispheres (the other four were sampled on the left).
BOTH_HEMISPHERES = (9861, 10021)


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
