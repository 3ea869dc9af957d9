"""Real geometry and real probe names for the generated world (``atlas-engine synth``).

* Samples: the real donors' well ids with their corrected MNI coordinates, from the shipped
  ``corrected_mni_coordinates.csv.gz`` (abagen/alleninf). That table has no donor column; its
  rows come in six contiguous blocks, one per donor, in the order 14380, 9861, 15697, 12876,
  10021, 15496 (:data:`atlas_engine.sources.wells.WELL_BLOCKS`, which the donor recognition of
  ``convert`` uses too). How this was established: the block lengths (529, 946, 501, 363, 893, 470) are
  exactly the real per-donor sample counts (:mod:`atlas_engine.sources.donors`); the blocks
  also differ by well-id scheme (9861 and 10021: ids below 10,000, 12876: 10,964-14,673, the
  others nine-digit ids), and only the two blocks of the donors sampled in both hemispheres
  (9861, 10021) have about half of their samples at x > 0 (the other four: 0-12 %, near the
  midline). Nothing in abagen 0.1.3's package data or tests names the donor of a well id, so
  the mapping rests on these checks (it is not confirmed against the Allen files themselves).
* Where a sample lies decides its broad class and hemisphere, through the shipped
  Desikan–Killiany atlas (:func:`locate`); the generator then puts it on an ontology leaf of
  that class and hemisphere.
* Probes: real probe names, gene symbols and Entrez ids from the shipped reannotation table
  (``reannotated.csv.gz``), every probe of :data:`SEED_GENES` always included.
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources

import numpy as np
import pandas as pd

from ..sources.wells import WELL_BLOCKS

#: Genes whose probes every generated probe table carries (the README's examples use them).
SEED_GENES = ("BDNF", "DISC1", "NRG1", "COMT", "DRD2", "SLC6A4")


def _data_file(name: str):  # type: ignore[no-untyped-def]
    return resources.files("atlas_engine.data").joinpath(name)


@functools.lru_cache(maxsize=1)
def _corrected() -> pd.DataFrame:
    with _data_file("corrected_mni_coordinates.csv.gz").open("rb") as fh:
        return pd.read_csv(gzip.open(fh))


def corrected_table() -> pd.DataFrame:
    """Every real sample: well_id and corrected MNI x, y, z (mm), in the table's order."""
    t = _corrected()
    return pd.DataFrame({"well_id": t["well_id"].to_numpy(np.int64),
                         "x": t["corrected_mni_x"].to_numpy(np.float64),
                         "y": t["corrected_mni_y"].to_numpy(np.float64),
                         "z": t["corrected_mni_z"].to_numpy(np.float64)})


def donor_wells(donor_id: int, n_samples: int) -> pd.DataFrame:
    """The real samples of ``donor_id`` (columns well_id, x, y, z: corrected MNI mm), in the
    table's order; ``n_samples`` is the donor's real count (checked against the block)."""
    t = _corrected()
    # the table's row blocks, one per donor, as the donor recognition reads them
    starts, counts, start = {}, dict(WELL_BLOCKS), 0
    for d, rows in WELL_BLOCKS:
        starts[d], start = start, start + rows
    if donor_id not in counts:
        raise ValueError(f"no real samples known for donor {donor_id}")
    start = starts[donor_id]
    n = counts[donor_id]
    if n != n_samples or start + n > len(t):
        raise ValueError(f"donor {donor_id}: {n_samples} samples, real block has {n}")
    block = t.iloc[start:start + n]
    return pd.DataFrame({"well_id": block["well_id"].to_numpy(np.int64),
                         "x": block["corrected_mni_x"].to_numpy(np.float64),
                         "y": block["corrected_mni_y"].to_numpy(np.float64),
                         "z": block["corrected_mni_z"].to_numpy(np.float64)})


@functools.lru_cache(maxsize=1)
def _dk() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    import nibabel as nib

    with _data_file("atlas-desikankilliany.nii.gz").open("rb") as fh:
        img = nib.Nifti1Image.from_bytes(gzip.decompress(fh.read()))
    info = pd.read_csv(str(_data_file("atlas-desikankilliany.csv"))).set_index("id")
    return np.asarray(img.dataobj).astype(np.int16), np.asarray(img.affine), info


#: Search radius (mm) around a sample for the nearest Desikan–Killiany voxel.
_REACH = 5


@functools.lru_cache(maxsize=1)
def _offsets() -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(-_REACH, _REACH + 1)
    off = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    d = np.sqrt((off ** 2).sum(axis=1))
    keep = d <= _REACH
    order = np.argsort(d[keep], kind="stable")
    return off[keep][order], d[keep][order]


def nearest_dk(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label of the nearest Desikan–Killiany voxel within 5 mm of each point and its distance
    (0 / inf when none)."""
    vol, aff, _ = _dk()
    inv = np.linalg.inv(aff)
    ijk = np.rint(np.asarray(xyz, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]).astype(np.int64)
    off, dist = _offsets()
    cand = ijk[:, None, :] + off[None, :, :]
    inside = np.all((cand >= 0) & (cand < np.asarray(vol.shape)), axis=2)
    cand = np.where(inside[..., None], cand, 0)
    labs = np.where(inside, vol[cand[..., 0], cand[..., 1], cand[..., 2]], 0)
    hit = labs != 0
    first = np.argmax(hit, axis=1)
    found = hit[np.arange(len(labs)), first]
    label = np.where(found, labs[np.arange(len(labs)), first], 0).astype(np.int64)
    return label, np.where(found, dist[first], np.inf)


def locate(xyz: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Broad class of the generator's ontology (cortex, nuclei, brainstem, cerebellum, white)
    for samples at ``xyz`` (MNI mm): the class of the nearest Desikan–Killiany region within
    5 mm (about a third of those 2-5 mm from cortex are called white matter, as cortical
    samples next to white matter are); farther samples are cerebellum (posterior and low),
    brainstem (near the midline and low) or white matter."""
    xyz = np.asarray(xyz, dtype=np.float64)
    label, dist = nearest_dk(xyz)
    _, _, info = _dk()
    names = info["label"].reindex(label).to_numpy()
    structs = info["structure"].reindex(label).to_numpy()
    cls = np.where(structs == "cortex", "cortex",
                   np.where(names == "brainstem", "brainstem", "nuclei")).astype(object)
    x, y, z = xyz.T
    far = label == 0
    cls[far] = np.where((y[far] < -40) & (z[far] < -15), "cerebellum",
                        np.where((np.abs(x[far]) < 15) & (z[far] < -5), "brainstem", "white"))
    edge = (cls == "cortex") & (dist > 2) & (rng.random(len(cls)) < 0.33)
    cls[edge] = "white"
    return cls.astype(str)


@functools.lru_cache(maxsize=1)
def reannotated_genes() -> pd.DataFrame:
    """The reannotation table (probe_name, gene_symbol, entrez_id (Int64)), one row per probe,
    sorted by probe_name; entrez_id is Allen's where it has one, else the reannotated one."""
    with _data_file("reannotated.csv.gz").open("rb") as fh:
        t = pd.read_csv(gzip.open(fh))
    entrez = t["allen_entrez_id"].fillna(t["entrez_id"])
    out = pd.DataFrame({"probe_name": t["probe_name"].astype(str),
                        "gene_symbol": t["gene_symbol"].astype(str),
                        "entrez_id": entrez.round().astype("Int64")})
    out = out[out["entrez_id"].notna()]
    return out.sort_values("probe_name", kind="stable").reset_index(drop=True)


def real_probe_groups(n_ref: int, rng: np.random.Generator, exclude: set[str],
                      exclude_genes: set[str]) -> list[pd.DataFrame]:
    """Real genes with all their probes, up to ``n_ref`` probes in all (fewer when the table
    runs out): every probe of :data:`SEED_GENES` first, then whole genes in random order (the
    last one cut to fit). Probes named in ``exclude`` and genes in ``exclude_genes`` are left
    out."""
    t = reannotated_genes()
    t = t[~t["probe_name"].isin(exclude) & ~t["gene_symbol"].isin(exclude_genes)]
    groups = {g: f for g, f in t.groupby("gene_symbol", sort=True)}
    seed = [g for g in SEED_GENES if g in groups]
    rest = [g for g in groups if g not in set(seed)]
    order = seed + [rest[i] for i in rng.permutation(len(rest))]
    out: list[pd.DataFrame] = []
    left = n_ref
    for g in order:
        if left <= 0:
            break
        f = groups[g].iloc[:left]
        out.append(f)
        left -= len(f)
    return out
