"""``open_store``: the whole AHBA microarray store as lazy xarray arrays and pandas tables.

>>> store = open_store("ahba.zarr")                         # doctest: +SKIP
>>> store.expression                                        # probes × all samples, dask-backed
>>> store.samples.loc[store.samples.donor == 9861]          # SampleAnnot columns + donor
>>> store.ontology.descendants(4008)                        # the ontology tree
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from ..errors import StoreError
from ..sources.donors import DONORS
from . import layout as L
from .ontology import ONTOLOGY_COLUMNS, Ontology


def _as_url(path_or_url: str | os.PathLike) -> str:
    text = os.fspath(path_or_url)
    if text.startswith("file://"):
        return text[len("file://"):]
    return text


def _to_frame(ds: xr.Dataset, index: str | None = None,
              order: tuple[str, ...] = ()) -> pd.DataFrame:
    cols = {}
    for name, var in ds.variables.items():
        if name in ds.dims and name != index:
            continue
        values = np.asarray(var.values)
        if values.dtype.kind in "TUO":
            values = values.astype(object)
        cols[name] = values
    frame = pd.DataFrame(cols)
    first = [c for c in order if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


class AtlasStore:
    """A converted AHBA microarray store (see docs/store-layout.md).

    Attributes
    ----------
    expression : xarray.DataArray
        ``(probe, sample)`` float32/float64, dask-backed, all complete donors concatenated on
        ``sample``; coordinates ``probe_id``, ``gene_symbol`` (probe) and ``donor``,
        ``sample_id``, ``structure_id``, ``well_id`` (sample).
    pacall : xarray.DataArray
        The same shape, bool.
    probes : pandas.DataFrame
        Probes.csv columns indexed by ``probe_id`` in store row order.
    samples : pandas.DataFrame
        Every SampleAnnot column plus ``donor`` and ``sample_id`` (1-based within the donor), in
        sample-axis order.
    ontology : Ontology
    donors : list[int]
        Complete donors in store order.
    attrs : dict
        The root ``atlas_engine`` attributes.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self._root = zarr.open_group(url, mode="r", zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError) as exc:
            raise StoreError(f"{url}: not a zarr v3 store ({exc})") from None
        attrs = dict(self._root.attrs.get(L.ROOT_ATTR, {}))
        if attrs.get("format") != L.FORMAT_MICROARRAY:
            raise StoreError(f"{url}: not an atlas-engine AHBA microarray store "
                             f"(format {attrs.get('format')!r})")
        self.attrs: dict[str, Any] = attrs
        # canonical donor order (the order of the Allen donor table), whatever order the
        # donors were converted in, so the sample axis is the same for every store
        rank = {d.id: i for i, d in enumerate(DONORS)}
        self.donors: list[int] = sorted((int(d) for d in attrs.get("donors", [])),
                                        key=lambda d: (rank.get(d, len(rank)), d))
        if not self.donors:
            raise StoreError(f"{url}: the store holds no complete donor yet")

    def __repr__(self) -> str:
        return (f"AtlasStore({self.url!r}, donors={self.donors}, probes={len(self.probes)}, "
                f"samples={len(self.samples)}, dtype={self.attrs.get('dtype')})")

    def _open(self, group: str, lazy: bool = True) -> xr.Dataset:
        # tables are read straight into numpy (chunks=None): one read per column instead of
        # one Dask graph and compute per column
        return xr.open_zarr(self.url, group=group, consolidated=True,
                            chunks={} if lazy else None)

    def donor(self, donor_id: int) -> xr.Dataset:
        """One donor's group: ``expression``, ``pacall`` and the SampleAnnot coordinates."""
        if int(donor_id) not in self.donors:
            raise StoreError(f"{self.url}: donor {donor_id} is not in the store "
                             f"(complete donors: {self.donors})")
        return self._open(L.donor_path(donor_id))

    @property
    def rnaseq_donors(self) -> list[int]:
        """Donors with a complete RNA-seq group (``rnaseq/{id}``; 9861 and 10021 at most)."""
        return [int(d) for d in (self.attrs.get("rnaseq") or {}).get("donors", [])]

    def rnaseq(self, donor_id: int) -> xr.Dataset:
        """One donor's RNA-seq group: ``tpm`` and ``counts`` (gene, sample), Genes.csv columns
        on ``gene`` (the gene symbol) and SampleAnnot.csv columns on ``sample`` (1..N)."""
        if int(donor_id) not in self.rnaseq_donors:
            raise StoreError(f"{self.url}: no RNA-seq data for donor {donor_id} (RNA-seq "
                             f"donors: {self.rnaseq_donors}; convert rnaseq_donor{donor_id}.zip)")
        return self._open(f"{L.RNASEQ_GROUP}/{int(donor_id)}")

    @cached_property
    def probes(self) -> pd.DataFrame:
        frame = _to_frame(self._open(L.PROBES_GROUP, lazy=False), order=L.PROBE_COLUMNS)
        return frame.set_index("probe_id", drop=False).rename_axis("probe")

    @cached_property
    def ontology(self) -> Ontology:
        frame = _to_frame(self._open(L.ONTOLOGY_GROUP, lazy=False), order=ONTOLOGY_COLUMNS)
        return Ontology(frame)

    @cached_property
    def _donor_sets(self) -> list[xr.Dataset]:
        return [self.donor(d) for d in self.donors]

    @cached_property
    def samples(self) -> pd.DataFrame:
        parts = []
        for d in self.donors:
            ds = self._open(L.donor_path(d), lazy=False)
            frame = _to_frame(ds.drop_dims(L.PROBE_DIM).drop_vars(
                list(ds.data_vars), errors="ignore"), index=L.SAMPLE_DIM,
                order=(L.SAMPLE_DIM, *L.SAMPLE_COLUMNS))
            frame = frame.rename(columns={L.SAMPLE_DIM: "sample_id"})
            frame.insert(0, "donor", np.int64(d))
            parts.append(frame)
        out = pd.concat(parts, ignore_index=True)
        out.index.name = L.SAMPLE_DIM
        return out

    def _combined(self, name: str) -> xr.DataArray:
        arrays = [ds[name].reset_coords(drop=True).drop_vars(
            [L.PROBE_DIM, L.SAMPLE_DIM], errors="ignore") for ds in self._donor_sets]
        da = xr.concat(arrays, dim=L.SAMPLE_DIM, join="override", coords="minimal",
                       compat="override")
        s = self.samples
        p = self.probes
        return da.assign_coords(
            probe_id=(L.PROBE_DIM, p["probe_id"].to_numpy()),
            gene_symbol=(L.PROBE_DIM, p["gene_symbol"].to_numpy()),
            donor=(L.SAMPLE_DIM, s["donor"].to_numpy()),
            sample_id=(L.SAMPLE_DIM, s["sample_id"].to_numpy()),
            structure_id=(L.SAMPLE_DIM, s["structure_id"].to_numpy()),
            well_id=(L.SAMPLE_DIM, s["well_id"].to_numpy()),
        ).rename(name)

    @cached_property
    def expression(self) -> xr.DataArray:
        return self._combined(L.EXPRESSION)

    @cached_property
    def pacall(self) -> xr.DataArray:
        return self._combined(L.PACALL)


def open_store(path_or_url: str | os.PathLike) -> AtlasStore:
    """Open a store written by ``atlas-engine convert`` (a path or an fsspec URL such as
    ``file:///data/ahba.zarr``, ``s3://bucket/ahba.zarr`` or ``memory://ahba.zarr``)."""
    return AtlasStore(_as_url(path_or_url))
