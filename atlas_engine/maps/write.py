"""Region-level results written back onto their atlas as images (NIfTI or NRRD).

A *region table* has one row per region and one column per gene (or score): the regions are
either atlas labels (the pipeline's ``label`` index, e.g. the Desikan–Killiany atlas) or
ontology structure ids (``aggregate --by structure`` / ``--by depth:N``, BrainSpan structure
groups mapped to ids, cell-type scores per AHBA region). Every voxel of the atlas gets the value
of its region: with an ontology, of the deepest structure on the voxel's path that the table
has (so a ``depth:3`` table paints every leaf below each depth-3 structure); without one, of the
row whose label equals the voxel's. Voxels of no region get the background (0 or NaN).

The atlas is read slab by slab and the image written slab by slab (gzip streamed), so a map on
a 10 µm CCF annotation (1.2 G voxels) needs memory for one slab, not the volume.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, FormatError
from ..store.ontology import Ontology
from ..volumes.base import SLAB_BYTES, Volume
from ..volumes.labels import label_index

#: Columns of a region table that are descriptions, not values.
DESCRIPTIVE = ("acronym", "name", "structure_name", "structure_acronym", "hemisphere",
               "depth", "graph_order", "structure_id_path", "color_hex_triplet", "n_samples")
#: Region column names recognised, in order of preference.
REGION_COLUMNS = ("structure_id", "label", "region", "id")


def read_region_table(source: str | Path | pd.DataFrame,
                      region_column: str | None = None) -> pd.DataFrame:
    """A region × value table with an int64 index of region ids and float columns.

    Accepts a DataFrame (index or a :data:`REGION_COLUMNS` column holding the ids), a CSV or
    Parquet file (as ``aggregate`` and the pipeline write them), or the pipeline's streamed
    Zarr output (``label`` × ``gene_symbol``). Descriptive columns (acronym, name, ...) are
    kept as ``attrs["names"]`` (region → name) and left out of the values.
    """
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
        where: str | Path = "<table>"
    else:
        where = Path(source)
        if where.suffix == ".zarr" or (where.is_dir() and (where / "zarr.json").exists()):
            import xarray as xr

            ds = xr.open_zarr(where, consolidated=False)
            frame = pd.DataFrame(np.asarray(ds["expression"].values),
                                 index=pd.Index(ds["label"].values, name="label"),
                                 columns=[str(g) for g in ds["gene_symbol"].values])
        elif where.suffix == ".parquet":
            frame = pd.read_parquet(where)
        elif where.suffix in (".csv", ".tsv", ".txt"):
            frame = pd.read_csv(where, sep="\t" if where.suffix == ".tsv" else ",")
        else:
            raise ConfigError(f"{where}: use a .csv, .parquet or .zarr region table")
    col = region_column
    if col is None:
        for c in REGION_COLUMNS:
            if c in frame.columns:
                col = c
                break
    if col is not None:
        if col not in frame.columns:
            raise ConfigError(f"{where}: no column {col!r} (columns: {', '.join(map(str, frame.columns[:8]))})")
        frame = frame.set_index(col)
    names = None
    for c in ("name", "structure_name", "acronym", "structure_acronym"):
        if c in frame.columns:
            names = frame[c].astype(str)
            break
    keep = [c for c in frame.columns if c not in DESCRIPTIVE
            and pd.api.types.is_numeric_dtype(frame[c])]
    index = pd.Index(frame.index)
    k = _first_not_whole(index.to_numpy())   # ids read as floats (a gap in the column)
    if k is not None:
        text = isinstance(where, Path) and where.suffix in (".csv", ".tsv", ".txt")
        raise FormatError(where, f"region id {float(index[k])!r} is not an integer",
                          line=k + 2 if text else None,
                          expected="structure ids or atlas labels in the first column")
    try:
        ids = index.astype(np.int64)
    except (TypeError, ValueError):
        raise FormatError(where, f"region ids {list(frame.index[:3])} are not integers",
                          expected="structure ids or atlas labels in the first column") from None
    if ids.has_duplicates:
        dup = ids[ids.duplicated()][0]
        raise FormatError(where, f"region {dup} appears twice", expected="one row per region")
    values = pd.DataFrame(frame[keep].to_numpy(dtype=np.float64), index=ids, columns=keep)
    values.index.name = "region"
    values.attrs["names"] = dict(zip(ids, names.to_numpy(), strict=True)) if names is not None \
        else {}
    values.attrs["source"] = str(where)
    values.attrs["region_column"] = col if col is not None else frame.index.name
    return values


@dataclass
class RegionLookup:
    """Voxel label → table row (``-1``: background), built once per atlas and table."""

    ids: np.ndarray          # sorted ids the voxel labels are matched against
    row_of: np.ndarray       # row of the table for each of ``ids`` (-1: none)
    ontology: bool
    source: str

    def rows(self, slab: np.ndarray) -> np.ndarray:
        """Table row of each voxel of ``slab`` (Fortran-flattened), -1 where none."""
        if self.ontology:
            idx = label_index(slab, self.ids, self.source)
        else:
            idx = _atlas_label_index(slab, self.ids, self.source)
        out = np.full(idx.shape, -1, dtype=np.int64)
        ok = idx >= 0
        out[ok] = self.row_of[idx[ok]]
        return out


def _first_not_whole(values: np.ndarray) -> int | None:
    """Position of the first value of a float array that is not a whole number (NaN and inf
    included); ``None`` when all are, or for an array of another type."""
    if values.dtype.kind != "f":
        return None
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.trunc(values))
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def _atlas_label_index(slab: np.ndarray, ids: np.ndarray, source: str) -> np.ndarray:
    """Atlas labels (any int or integral float) → index in ``ids``; -1 for 0 and absent labels."""
    flat = np.asarray(slab).reshape(-1, order="F")
    k = _first_not_whole(flat)
    if k is not None:
        raise FormatError(source, f"atlas label {float(flat[k])!r} is not an integer",
                          expected="integer labels")
    lab = flat.astype(np.int64)
    idx = np.searchsorted(ids, lab)
    idx_c = np.minimum(idx, max(len(ids) - 1, 0))
    hit = (ids[idx_c] == lab) & (lab != 0) if len(ids) else np.zeros(lab.shape, bool)
    return np.where(hit, idx_c, -1)


def region_lookup(table: pd.DataFrame, ontology: Ontology | None = None,
                  source: str = "<atlas>") -> RegionLookup:
    """How voxels find their table row (module docstring): through the ontology when given,
    else by equal labels. Raises :class:`ConfigError` when no table region is in the
    ontology."""
    regions = np.asarray(table.index, dtype=np.int64)
    if ontology is None:
        order = np.argsort(regions)
        return RegionLookup(regions[order], order.astype(np.int64), False, source)
    ids = np.sort(np.asarray(ontology.ids, dtype=np.int64))
    known = [r for r in regions if r in ontology]
    if not known:
        raise ConfigError(f"none of the table's regions ({', '.join(map(str, regions[:5]))}, "
                          "...) is a structure of the ontology; for atlas labels pass no "
                          "ontology")
    group = ontology.labels_for(ids, known)
    row_by_id = {int(r): i for i, r in enumerate(regions)}
    row_of = np.array([row_by_id[int(known[g])] if g >= 0 else -1 for g in group],
                      dtype=np.int64)
    return RegionLookup(ids, row_of, True, source)


def map_slabs(volume: Volume, lookup: RegionLookup, values: np.ndarray, *,
              background: float = 0.0, depth: int | None = None) -> Iterator[np.ndarray]:
    """The map of one value column (``values[row]``) over ``volume``, slab by slab (float32)."""
    vals = np.asarray(values, dtype=np.float32)
    for _, slab in volume.slabs(depth):
        rows = lookup.rows(slab)
        out = np.where(rows >= 0, vals[np.maximum(rows, 0)], np.float32(background))
        yield out.reshape(slab.shape, order="F").astype(np.float32, copy=False)


def _affine_mm(volume: Volume) -> np.ndarray:
    aff = np.array(volume.affine, dtype=float)
    if volume.unit == "um":
        aff[:3, :] *= 1e-3
        aff[3, 3] = 1.0
    return aff


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name)) or "map"


def write_maps(table: pd.DataFrame | str | Path, atlas: Volume | str | Path, out: str | Path,
               *, genes: Sequence[str] | None = None, ontology: Ontology | None = None,
               background: float = 0.0, fmt: str | None = None,
               slab_bytes: int = SLAB_BYTES // 2) -> list[Path]:
    """Write region values onto an atlas.

    Every voxel gets the value of its region (module docstring); the atlas is read and the
    images written slab by slab, so memory holds one slab, not the volume.

    Parameters
    ----------
    table : DataFrame, str or Path
        Region × value table (:func:`read_region_table`).
    atlas : Volume, str or Path
        The annotation volume (:func:`~atlas_engine.volumes.open_volume`).
    out : str or Path
        ``*.nii``/``*.nii.gz``: one image, 3-D for one gene or a 4-D stack (one volume per
        gene, in ``genes`` order); ``*.nrrd``: one gene; otherwise a directory with one file
        per gene, ``GENE.nii.gz`` (or ``GENE.nrrd`` with ``fmt="nrrd"``, the default for NRRD
        and MetaImage atlases).
    genes : sequence of str, optional
        Columns to map (default all).
    ontology : Ontology, optional
        Regions are structure ids of this ontology (else atlas labels).
    background : float, default 0.0
        Value outside every region (0 or ``numpy.nan``).
    fmt : str, optional
        The file format when ``out`` is a directory: ``"nifti"`` or ``"nrrd"`` (default
        ``"nifti"`` for NIfTI atlases, ``"nrrd"`` for NRRD and MetaImage ones).
    slab_bytes : int, default 32 MiB
        Target size in bytes of one slab of the atlas (whole planes; bounds memory).

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    ConfigError
        A gene not in the table, no value column, several genes for one ``.nrrd`` file, an
        unknown ``fmt``, a table file that is not ``.csv``, ``.parquet`` or ``.zarr``, or
        (with ``ontology``) no table region in it.
    FormatError
        The atlas cannot be read, or (with ``ontology``) one of its voxel labels is not a
        structure of it.
    """
    from ..volumes import open_volume
    from ..volumes.nifti import write_nifti
    from ..volumes.nrrd import write_nrrd

    values = table if isinstance(table, pd.DataFrame) and table.index.name == "region" \
        else read_region_table(table)
    vol = atlas if isinstance(atlas, Volume) else open_volume(atlas)
    cols = list(values.columns) if genes is None else [str(g) for g in genes]
    missing = [g for g in cols if g not in values.columns]
    if missing:
        raise ConfigError(f"genes not in the table: {', '.join(missing[:10])}")
    if not cols:
        raise ConfigError("no value columns to map")
    lookup = region_lookup(values, ontology, str(vol.path))
    depth = vol.slab_depth(slab_bytes)
    out = Path(out)
    name = out.name.lower()
    aff = _affine_mm(vol)
    desc = f"atlas-engine map of {values.attrs.get('source', '')}"[:79]

    def slabs(gene: str) -> Iterator[np.ndarray]:
        return map_slabs(vol, lookup, values[gene].to_numpy(), background=background,
                         depth=depth)

    if name.endswith((".nii", ".nii.gz")):
        out.parent.mkdir(parents=True, exist_ok=True)
        shape: tuple[int, ...] = tuple(vol.shape) + ((len(cols),) if len(cols) > 1 else ())
        chain = (s for g in cols for s in slabs(g))
        return [write_nifti(out, chain, shape, np.float32, aff, description=desc)]
    if name.endswith(".nrrd"):
        if len(cols) != 1:
            raise ConfigError(f"{out}: an NRRD holds one map; give one gene or a directory")
        out.parent.mkdir(parents=True, exist_ok=True)
        return [write_nrrd(out, slabs(cols[0]), vol.shape, np.float32, vol.spacing)]
    kind = fmt or ("nifti" if vol.unit == "mm" else "nrrd")
    if kind not in ("nifti", "nrrd"):
        raise ConfigError(f"format must be nifti or nrrd, not {kind!r}")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for g in cols:
        if kind == "nifti":
            files.append(write_nifti(out / f"{_safe_name(g)}.nii.gz", slabs(g), vol.shape,
                                     np.float32, aff, description=desc))
        else:
            files.append(write_nrrd(out / f"{_safe_name(g)}.nrrd", slabs(g), vol.shape,
                                    np.float32, vol.spacing))
    return files


def extremes(values: pd.Series, names: dict[int, str] | None = None, k: int = 3,
             ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The ``k`` highest and lowest regions of one column as ``(name, value)``."""
    v = values.dropna().sort_values()
    names = names or {}

    def label(i: Any) -> str:
        return str(names.get(int(i), i))

    top = [(label(i), float(x)) for i, x in v.iloc[::-1][:k].items()]
    low = [(label(i), float(x)) for i, x in v.iloc[:k].items()]
    return top, low
