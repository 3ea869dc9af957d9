"""``open_store``: the whole AHBA microarray store as lazy xarray arrays and pandas tables.

>>> store = open_store("ahba.zarr")                         # doctest: +SKIP
>>> store.expression                                        # probes × all samples, dask-backed
>>> store.samples.loc[store.samples.donor == 9861]          # SampleAnnot columns + donor
>>> store.ontology.descendants(4008)                        # the ontology tree
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import StoreError, StoreNotFoundError
from ..sources.donors import DONORS
from . import layout as L
from .access import remote_access
from .location import without_file_scheme
from .ontology import ONTOLOGY_COLUMNS, Ontology
from .tables import (
    _frame,
    _frame_from_npz,
    _local_dir,
    _read_columns,
    _root_attrs_local,
    _save_npz,
    _to_frame,
)

if TYPE_CHECKING:
    import xarray as xr

#: folder of the store holding derived, re-creatable files (shared with the pipeline cache)
CACHE_DIR = "cache"


def store_missing(url: str) -> bool:
    """Whether nothing at all exists at ``url``, a store's path or fsspec URL.

    Parameters
    ----------
    url
        A local path, a ``file://`` URL or any fsspec URL (``s3://…``, ``memory://…``).

    Returns
    -------
    bool
        True only when the location is known to be empty; False when something is there or
        when it cannot be told (no fsspec backend for the protocol, no credentials, no
        network), so that an unreachable store is never reported as a missing one.
    """
    text = without_file_scheme(url)
    if "://" not in text:
        return not os.path.exists(text)
    try:
        import fsspec

        fs, root = fsspec.core.url_to_fs(text)
        return not fs.exists(root)
    except Exception:  # noqa: BLE001 - unknown protocol, credentials, network: cannot tell
        return False


def _unfinished(url: str) -> str:
    """The message for a store that lists no finished donor yet."""
    from ..convert.store_lock import lock_holder

    holder = lock_holder(url)
    if holder is not None:
        return (f"{url}: holds no finished donor yet; it is being converted by process "
                f"{holder.get('pid')} (since {holder.get('since')}) — wait for it to finish")
    return (f"{url}: holds no finished donor yet (a conversion was interrupted or has not "
            f"started); run: atlas-engine convert SRC {url}")


def check_layout(url: str, attrs: dict[str, Any]) -> None:
    """Refuse a store written with an older layout (before per-chunk CRC-32C checksums)."""
    version = attrs.get("layout_version")
    if not isinstance(version, int) or version < L.LAYOUT_VERSION:
        raise StoreError(f"{url}: written with store layout {version} by an older atlas-engine "
                         f"(this version reads layout {L.LAYOUT_VERSION}, where every chunk "
                         "carries a checksum); re-convert it into a new store: "
                         "atlas-engine convert SRC NEW_STORE")
    if version > L.LAYOUT_VERSION:
        raise StoreError(f"{url}: written with store layout {version} by a newer atlas-engine "
                         f"(this version reads layout {L.LAYOUT_VERSION}); upgrade atlas-engine")


@contextlib.contextmanager
def _metadata_errors(url: str, group: str) -> Iterator[None]:
    """Damaged or missing metadata of ``group`` as one :class:`StoreError` line (chunk damage
    already raises :class:`~atlas_engine.errors.DamagedStoreError`)."""
    from .integrity import owner, repair_hint

    try:
        yield
    except StoreError:
        raise
    except (KeyError, ValueError, TypeError, OSError, AttributeError) as exc:
        raise StoreError(f"{url}: the metadata of {group} ({owner(group)}) cannot be read "
                         f"({type(exc).__name__}: {str(exc)[:200]}); "
                         f"{repair_hint(url, group)}") from None


@dataclass(frozen=True)
class GroupLayout:
    """A store group as its metadata describes it (:meth:`AtlasStore.group_layout`)."""

    #: array name -> its dimension names
    arrays: dict[str, tuple[str, ...]]
    #: dimension name -> length
    sizes: dict[str, int]
    attrs: dict[str, Any]


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
        #: keep the tables (probes, samples, ontology) as plain arrays in the store's
        #: ``cache/`` folder once read (see :meth:`cache_tables`)
        self._cache_tables = False
        attrs = _root_attrs_local(url)
        if attrs is None:
            import zarr

            try:
                with remote_access(url):
                    root = zarr.open_group(url, mode="r", zarr_format=3)
            except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
                if store_missing(url):
                    raise StoreNotFoundError(f"{url}: no such store") from None
                raise StoreError(f"{url}: not a zarr v3 store ({exc})") from None
            except ValueError as exc:
                if "://" not in url and os.path.isfile(os.path.join(url, "zarr.json")):
                    raise StoreError(f"{url}: the root metadata (zarr.json) is damaged ({exc}); "
                                     "re-run convert to rebuild it: atlas-engine convert SRC "
                                     f"{url}") from None
                raise StoreError(f"{url}: not a zarr v3 store ({exc})") from None
            attrs = dict(root.attrs.get(L.ROOT_ATTR, {}))
        if not attrs:
            raise StoreError(_unfinished(url))
        if attrs.get("format") == L.FORMAT_BRAINSPAN:
            raise StoreError(f"{url}: a BrainSpan store, not an AHBA microarray store (open it "
                             "with atlas_engine.store.brainspan.open_brainspan)")
        if attrs.get("format") != L.FORMAT_MICROARRAY:
            raise StoreError(f"{url}: not an atlas-engine AHBA microarray store "
                             f"(format {attrs.get('format')!r})")
        check_layout(url, attrs)
        self.attrs: dict[str, Any] = attrs
        # canonical donor order (the order of the Allen donor table), whatever order the
        # donors were converted in, so the sample axis is the same for every store
        rank = {d.id: i for i, d in enumerate(DONORS)}
        self.donors: list[int] = sorted((int(d) for d in attrs.get("donors", [])),
                                        key=lambda d: (rank.get(d, len(rank)), d))
        if not self.donors:
            raise StoreError(_unfinished(url))

    def cache_tables(self, enabled: bool = True) -> None:
        """Read the probe, sample and ontology tables from (and, on a miss, save them to) a
        plain ``.npz`` file per table in the store's ``cache/`` folder (local stores only;
        keyed by the root metadata, so a store changed by ``convert`` misses). Loading one is
        ~20× faster than decoding the Zarr arrays and needs neither zarr nor xarray."""
        self._cache_tables = bool(enabled)

    def __repr__(self) -> str:
        return (f"AtlasStore({self.url!r}, donors={self.donors}, probes={len(self.probes)}, "
                f"samples={len(self.samples)}, dtype={self.attrs.get('dtype')})")

    def _open(self, group: str, lazy: bool = True) -> xr.Dataset:
        import xarray as xr

        from .checked import checked_store

        # tables are read straight into numpy (chunks=None): one read per column instead of
        # one Dask graph and compute per column; every chunk read is checked (CheckedStore)
        with _metadata_errors(self.url, group):
            return xr.open_zarr(checked_store(self.url), group=group, consolidated=True,
                                chunks={} if lazy else None)

    def _table(self, group: str, index: str | None = None,
               order: tuple[str, ...] = ()) -> pd.DataFrame:
        """The 1-D arrays of ``group`` as a frame (the table cache first, see
        :meth:`cache_tables`; else zarr directly, or xarray for arrays needing decoding)."""
        cached = self._table_file(group) if self._cache_tables else None
        if cached is not None and cached.is_file():
            try:
                return _frame_from_npz(cached)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                pass     # damaged (the npz members carry CRC-32s): read the store instead
        with _metadata_errors(self.url, group):
            cols = _read_columns(self.url, group, index)
        if cols is None:  # arrays with encodings zarr alone does not apply: xarray
            ds = self._open(group, lazy=False)
            if group.startswith(L.DONORS_GROUP + "/"):
                ds = ds.drop_dims(L.PROBE_DIM).drop_vars(list(ds.data_vars), errors="ignore")
            frame = _to_frame(ds, index=index, order=order)
        else:
            frame = _frame(cols, order)
        if cached is not None:
            _save_npz(cached, frame)
        return frame

    def _table_file(self, group: str) -> Path | None:
        root = _local_dir(self.url)
        if root is None:
            return None
        try:
            ident = hashlib.sha256((root / "zarr.json").read_bytes()).hexdigest()[:20]
        except OSError:
            return None
        return root / CACHE_DIR / f"table-{group.replace('/', '_')}-{ident}.npz"

    def donor(self, donor_id: int) -> xr.Dataset:
        """One donor's group: ``expression``, ``pacall`` (lazy, Dask) and the SampleAnnot
        coordinates, loaded (so ``.where(ds.structure_acronym == "CN", drop=True)`` and
        ``.groupby("structure_acronym")`` work; ``xr.open_zarr`` alone makes them Dask
        arrays, on which both fail)."""
        if int(donor_id) not in self.donors:
            raise StoreError(f"{self.url}: donor {donor_id} is not in the store "
                             f"(complete donors: {self.donors})")
        return eager_coords(self._open(L.donor_path(donor_id)))

    def sources(self) -> dict[int, dict[str, Any] | None]:
        """Where each donor's data came from: file name, size, sha256 (when known), member
        folder, sample count and how conversion identified the donor (the ``origin`` in the
        group's provenance; ``None`` for stores converted before it was recorded)."""
        return {d: (self.donor(d).attrs.get("provenance") or {}).get("origin")
                for d in self.donors}

    @property
    def rnaseq_donors(self) -> list[int]:
        """Donors with a complete RNA-seq group (``rnaseq/{id}``; 9861 and 10021 at most)."""
        return [int(d) for d in (self.attrs.get("rnaseq") or {}).get("donors", [])]

    def group_layout(self, group: str) -> GroupLayout:
        """The arrays of ``group`` (e.g. ``donors/9861``) with their dimensions, and the
        group's attributes, from its metadata alone (no values read; neither xarray nor Dask
        imported): what checks of the layout (``verify``) need."""
        import zarr

        from .checked import checked_store

        with _metadata_errors(self.url, group):
            grp = zarr.open_group(checked_store(self.url), path=group, mode="r",
                                  zarr_format=3)
            arrays: dict[str, tuple[str, ...]] = {}
            sizes: dict[str, int] = {}
            for name, arr in grp.arrays():
                dims = tuple(arr.metadata.dimension_names or ())
                if len(dims) != arr.ndim or None in dims:
                    raise ValueError(f"{name}: no name for each dimension")
                arrays[name] = dims  # type: ignore[assignment]
                for dim, n in zip(dims, arr.shape, strict=True):
                    if sizes.setdefault(dim, n) != n:
                        raise ValueError(f"{name}: dimension {dim} has {n}, not {sizes[dim]}")
            return GroupLayout(arrays=arrays, sizes=sizes, attrs=dict(grp.attrs))

    def rnaseq(self, donor_id: int) -> xr.Dataset:
        """One donor's RNA-seq group: ``tpm`` and ``counts`` (gene, sample), Genes.csv columns
        on ``gene`` (the gene symbol) and SampleAnnot.csv columns on ``sample`` (1..N)."""
        if int(donor_id) not in self.rnaseq_donors:
            raise StoreError(f"{self.url}: no RNA-seq data for donor {donor_id} (RNA-seq "
                             f"donors: {self.rnaseq_donors}; convert rnaseq_donor{donor_id}.zip)")
        return eager_coords(self._open(f"{L.RNASEQ_GROUP}/{int(donor_id)}"))

    @cached_property
    def probes(self) -> pd.DataFrame:
        frame = self._table(L.PROBES_GROUP, order=L.PROBE_COLUMNS)
        return frame.set_index("probe_id", drop=False).rename_axis("probe")

    @cached_property
    def ontology(self) -> Ontology:
        frame = self._table(L.ONTOLOGY_GROUP, order=ONTOLOGY_COLUMNS)
        return Ontology(frame)

    @cached_property
    def _donor_sets(self) -> list[xr.Dataset]:
        return [self.donor(d) for d in self.donors]

    @cached_property
    def samples(self) -> pd.DataFrame:
        parts = []
        for d in self.donors:
            frame = self._table(L.donor_path(d), index=L.SAMPLE_DIM,
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
        import xarray as xr

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


def eager_coords(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with every coordinate loaded into memory (data variables stay lazy)."""
    lazy = {name: c.variable for name, c in ds.coords.items()
            if name not in ds.indexes and c.chunks is not None}
    if not lazy:
        return ds
    import dask

    from ..scheduler import scheduler_for_compute

    # one graph for all of them (not a compute per coordinate)
    loaded = dask.compute(lazy, scheduler=scheduler_for_compute())[0]
    return ds.assign_coords(loaded)


def open_store(path_or_url: str | os.PathLike) -> AtlasStore:
    """Open an AHBA microarray store written by ``atlas-engine convert``.

    Only the root metadata is read here; the tables are read on first use and the matrices
    stay lazy (Dask-backed), every chunk checked against its recorded checksum as it is read.

    Parameters
    ----------
    path_or_url : str or os.PathLike
        The store: a local path or an fsspec URL such as ``file:///data/ahba.zarr``,
        ``s3://bucket/ahba.zarr`` or ``memory://ahba.zarr``.

    Returns
    -------
    AtlasStore
        ``expression`` and ``pacall`` (probe × sample), the ``probes``, ``samples`` and
        ``ontology`` tables and the complete ``donors``.

    Raises
    ------
    StoreNotFoundError
        There is no store at ``path_or_url``.
    StoreError
        Not a Zarr v3 store, damaged root metadata, a BrainSpan store, a store of another
        layout version, or one that holds no finished donor yet.
    """
    return AtlasStore(without_file_scheme(path_or_url))
