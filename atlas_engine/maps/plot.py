"""Pictures of a region map: a slice montage or orthogonal slices over the atlas.

The atlas is read once at a reduced resolution (every ``stride``-th voxel, so the picture
volume stays near ``max_side`` voxels per side), each voxel is given its region's value, and
matplotlib (Agg, no display) draws the slices with the region boundaries, a colour bar and the
names of the highest and lowest regions. Mouse CCF volumes (AP, DV, ML) are cut coronally,
NIfTI volumes (RAS) axially, unless ``axis`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..store.ontology import Ontology
from ..volumes.base import Volume
from .write import extremes, read_region_table, region_lookup

#: Name of a cut across each axis: CCF volumes are (AP, DV, ML), NIfTI volumes (x, y, z) RAS.
_CCF_VIEWS = ("coronal", "horizontal", "sagittal")
_RAS_VIEWS = ("sagittal", "coronal", "axial")


def region_rows(volume: Volume, lookup: Any, max_side: int = 160) -> np.ndarray:
    """Table row per voxel of a strided copy of ``volume`` (-1 background, -2 in-brain with
    no table region)."""
    stride = max(1, int(np.ceil(max(volume.shape) / max_side)))
    planes = []
    for z0, slab in volume.slabs():
        sel = [k for k in range(slab.shape[2]) if (z0 + k) % stride == 0]
        if not sel:
            continue
        part = np.asarray(slab[::stride, ::stride, sel])
        rows = lookup.rows(part).reshape(part.shape, order="F")
        inside = np.asarray(part != 0)
        planes.append(np.where((rows < 0) & inside, -2, rows))
    return np.concatenate(planes, axis=2)


def _edges(rows: np.ndarray) -> np.ndarray:
    e = np.zeros(rows.shape, dtype=bool)
    e[1:, :] |= rows[1:, :] != rows[:-1, :]
    e[:, 1:] |= rows[:, 1:] != rows[:, :-1]
    return e & (rows != -1)


def plot_map(table: pd.DataFrame | str | Path, atlas: Volume | str | Path, gene: str,
             out: str | Path, *, ontology: Ontology | None = None, kind: str = "montage",
             n_slices: int = 12, axis: int | None = None, cmap: str = "viridis",
             max_side: int = 160, title: str | None = None) -> Path:
    """Draw ``gene``'s region map over ``atlas`` into a PNG (or any matplotlib format).

    The atlas is read once at a reduced resolution; the slices show the region values, the
    region boundaries, a colour bar and the names of the highest and lowest regions.

    Parameters
    ----------
    table : DataFrame, str or Path
        Region × value table (:func:`~atlas_engine.maps.write.read_region_table`).
    atlas : Volume, str or Path
        The annotation volume (:func:`~atlas_engine.volumes.open_volume`).
    gene : str
        The table column to draw.
    out : str or Path
        The picture file; its suffix chooses the format (``.png``, ``.svg``, ``.pdf``, ...).
    ontology : Ontology, optional
        Regions are structure ids of this ontology (else atlas labels); also names the
        regions the table does not name.
    kind : str, default "montage"
        ``"montage"``: ``n_slices`` evenly spaced slices along ``axis``; ``"ortho"``: three
        orthogonal slices through the centre of the highest region.
    n_slices : int, default 12
        Slices of a montage.
    axis : int, optional
        Slicing axis of the montage (default 0 for µm volumes, i.e. coronal CCF slices; 2 for
        NIfTI, i.e. axial).
    cmap : str, default "viridis"
        A matplotlib colour map name.
    max_side : int, default 160
        About how many voxels per side the reduced picture volume has (every k-th voxel).
    title : str, optional
        The figure title (default ``"GENE on ATLAS-FILE"``).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ConfigError
        ``gene`` not in the table or without a finite value, an unknown ``kind``, a table
        file that is not ``.csv``, ``.parquet`` or ``.zarr``, or (with ``ontology``) no table
        region in it.
    FormatError
        The atlas cannot be read, or (with ``ontology``) one of its voxel labels is not a
        structure of it.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import colors as mcolors

    from ..volumes import open_volume

    values = table if isinstance(table, pd.DataFrame) and table.index.name == "region" \
        else read_region_table(table)
    if gene not in values.columns:
        raise ConfigError(f"gene {gene!r} is not in the table")
    vol = atlas if isinstance(atlas, Volume) else open_volume(atlas)
    lookup = region_lookup(values, ontology, str(vol.path))
    rows = region_rows(vol, lookup, max_side)
    v = values[gene].to_numpy(dtype=float)
    img = np.where(rows >= 0, v[np.maximum(rows, 0)], np.nan)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        raise ConfigError(f"gene {gene!r} has no finite region value")
    norm = mcolors.Normalize(vmin=float(finite.min()), vmax=float(finite.max()))
    names = dict(values.attrs.get("names", {}))
    if ontology is not None:
        for r in values.index:
            if int(r) in ontology and int(r) not in names:
                names[int(r)] = str(ontology.table.loc[int(r), "name"])
    nifti = vol.unit == "mm"
    ax_cut = axis if axis is not None else (2 if nifti else 0)
    if kind == "ortho":
        top = int(np.nanargmax(np.where(np.isfinite(v), v, -np.inf)))
        where = np.argwhere(rows == top)
        centre = where.mean(axis=0).astype(int) if len(where) else np.array(rows.shape) // 2
        cuts = [(a, int(centre[a])) for a in range(3)]
    elif kind == "montage":
        occupied = np.flatnonzero((rows != -1).any(axis=tuple(a for a in range(3) if a != ax_cut)))
        lo, hi = (occupied[0], occupied[-1]) if occupied.size else (0, rows.shape[ax_cut] - 1)
        idx = np.unique(np.linspace(lo, hi, n_slices + 2).astype(int)[1:-1])
        cuts = [(ax_cut, int(i)) for i in idx]
    else:
        raise ConfigError(f"kind must be montage or ortho, not {kind!r}")
    ncol = 3 if kind == "ortho" else min(4, len(cuts))
    nrow = int(np.ceil(len(cuts) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol + 1.2, 3.0 * nrow + 1.0),
                             squeeze=False)
    cm = matplotlib.colormaps[cmap].with_extremes(bad=(0, 0, 0, 0))
    shown = None
    for k, (a, i) in enumerate(cuts):
        axp = axes.flat[k]
        sl = [slice(None)] * 3
        sl[a] = i
        r2, v2 = rows[tuple(sl)], img[tuple(sl)]
        if nifti:                       # (x, y) etc.: show with the second axis upwards
            r2, v2 = r2.T, v2.T
        origin = "lower" if nifti else "upper"
        axp.imshow(np.where(r2 != -1, 0.85, 1.0), cmap="gray", vmin=0, vmax=1, origin=origin,
                   interpolation="nearest")
        shown = axp.imshow(np.ma.masked_invalid(v2), cmap=cm, norm=norm, origin=origin,
                           interpolation="nearest")
        axp.imshow(np.ma.masked_where(~_edges(r2), np.ones(r2.shape)), cmap="gray", vmin=0,
                   vmax=1.5, origin=origin, interpolation="nearest", alpha=0.6)
        stride = max(1, int(np.ceil(max(vol.shape) / max_side)))
        view = (_RAS_VIEWS if nifti else _CCF_VIEWS)[a]
        axp.set_title(f"{view} {i * stride}", fontsize=8)
        axp.set_axis_off()
    for k in range(len(cuts), nrow * ncol):
        axes.flat[k].set_axis_off()
    fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, label=gene)
    top, low = extremes(values[gene], names)
    fmt = "; ".join
    fig.suptitle(title or f"{gene} on {Path(vol.path).name}", fontsize=11)
    fig.text(0.01, 0.01, "highest: " + fmt(f"{n} ({x:.3g})" for n, x in top) +
             "\nlowest: " + fmt(f"{n} ({x:.3g})" for n, x in low), fontsize=7, va="bottom")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_maps(table: pd.DataFrame | str | Path, atlas: Volume | str | Path,
              genes: Sequence[str], out_dir: str | Path, **kwargs: Any) -> list[Path]:
    """:func:`plot_map` for several genes into ``out_dir/GENE.png``."""
    from .write import _safe_name

    values = table if isinstance(table, pd.DataFrame) and table.index.name == "region" \
        else read_region_table(table)
    out_dir = Path(out_dir)
    return [plot_map(values, atlas, g, out_dir / f"{_safe_name(g)}.png", **kwargs)
            for g in genes]
