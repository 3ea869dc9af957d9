"""The result of :func:`~atlas_engine.aggregate.api.aggregate` and its xarray cube:
:class:`AggregateResult` (table and ``xarray.Dataset`` views) and the cube helpers
(:data:`CUBE_INDEXES`, :func:`index_cube`, :func:`open_cube`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class AggregateResult:
    """Aggregated values with everything needed to explain them.

    ``values`` is ``(group, feature)`` — or ``(donor, group, feature)`` for ``combine="each"`` —
    where a feature is a gene (after collapse) or a probe. ``n_samples`` counts the samples of
    each donor in each group (``(donor, group)``), ``n_values`` the non-NaN values behind each
    entry of ``values``.
    """

    values: np.ndarray
    n_values: np.ndarray
    groups: pd.DataFrame
    features: pd.DataFrame
    n_samples: pd.DataFrame
    donors: list[int]
    missing_genes: list[str] = field(default_factory=list)
    unassigned_samples: int = 0
    #: samples of each donor that fall in no group (included in ``unassigned_samples``)
    unassigned_by_donor: dict[int, int] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [str(x) for x in self.features.index]

    def to_frame(self) -> pd.DataFrame:
        """A wide table: structure id/acronym/name columns, then one column per feature
        (with a leading ``donor`` column for ``combine="each"``)."""
        meta = self.groups[["structure_id", "acronym", "name"]].reset_index(drop=True)
        if self.values.ndim == 2:
            body = pd.DataFrame(self.values, columns=self.feature_names)
            return pd.concat([meta, body], axis=1)
        parts = []
        for k, d in enumerate(self.donors):
            body = pd.DataFrame(self.values[k], columns=self.feature_names)
            parts.append(pd.concat([pd.DataFrame({"donor": d}, index=meta.index), meta, body],
                                   axis=1))
        return pd.concat(parts, ignore_index=True)

    def to_dataset(self) -> Any:
        """An ``xarray.Dataset`` cube: ``value`` and ``n_values`` on (donor,) group, feature;
        ``n_samples`` on donor × group; group and feature annotations as coordinates.

        The ``group`` axis is indexed by structure id (``ds.sel(group=4249)``) and, in memory,
        also by ``acronym`` and ``name`` (``ds.sel(acronym="CN")`` gives every group with that
        acronym, e.g. both hemispheres); a probe axis carries each probe's ``gene_symbol``,
        indexed as well (``ds.sel(gene_symbol="BDNF")``). Files keep the coordinates but not
        the extra indexes: :func:`open_cube` restores them."""
        import xarray as xr

        feat_dim = "gene" if self.params.get("collapse") else "probe"
        dims = ("group", feat_dim) if self.values.ndim == 2 else ("donor", "group", feat_dim)
        coords: dict[str, Any] = {
            "group": self.groups["structure_id"].to_numpy(),
            "structure_id": ("group", self.groups["structure_id"].to_numpy()),
            "acronym": ("group", self.groups["acronym"].astype(str).to_numpy()),
            "name": ("group", self.groups["name"].astype(str).to_numpy()),
            feat_dim: np.asarray(self.feature_names, dtype=str),
            "donor": np.asarray(self.donors),
        }
        if feat_dim == "probe":
            coords["gene_symbol"] = ("probe",
                                     self.features["gene_symbol"].astype(str).to_numpy())
        ds = xr.Dataset(
            {
                "value": (dims, self.values),
                "n_values": (dims, self.n_values),
                "n_samples": (("donor", "group"), self.n_samples.to_numpy().T),
            },
            coords=coords,
        )
        ds.attrs.update({k: str(v) for k, v in self.params.items()})
        return index_cube(ds)


#: non-dimension coordinates of a cube that get an index of their own (``.sel`` on them)
CUBE_INDEXES = ("acronym", "name", "gene_symbol")


def index_cube(ds: Any) -> Any:
    """Index a cube's ``acronym``, ``name`` and (probe cubes) ``gene_symbol`` coordinates, so
    ``ds.sel(acronym="CN")`` or ``ds.sel(gene_symbol="BDNF")`` select by them."""
    for name in CUBE_INDEXES:
        if name in ds.coords and name not in ds.indexes:
            ds = ds.set_xindex(name)
    return ds


def open_cube(path: str | os.PathLike) -> Any:
    """Open a cube written by ``atlas-engine aggregate --out X.nc|X.zarr``, with its indexes.

    The cube (also what :meth:`AggregateResult.to_dataset` returns) is loaded into memory and
    indexed by ``group`` (structure id) and by ``acronym``, ``name`` and, for probe cubes,
    ``gene_symbol``, so ``ds.sel(acronym="CN")`` selects by them.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.zarr`` directory, or a netCDF file (any other name; read with ``h5netcdf``).

    Returns
    -------
    xarray.Dataset
        The cube, in memory, with the indexes above.
    """
    import xarray as xr

    path = Path(path)
    if path.suffix == ".zarr":
        ds = xr.open_zarr(path, consolidated=False)
    else:
        ds = xr.open_dataset(path, engine="h5netcdf")
    return index_cube(ds.load())
