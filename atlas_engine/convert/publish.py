"""Publishing a conversion: which donor groups are current and whole, the probe and ontology
groups, and the root attributes (donor list + consolidated metadata) replaced in one atomic
step (:func:`.writer.write_root`), repairing whatever an interrupted run left."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import zarr

from .. import __version__
from ..errors import ConfigError
from ..store import layout as L
from ..store import location
from . import writer
from .params import ConvertOptions
from .sources import DonorSource
from .staging import Staged

if TYPE_CHECKING:
    import pandas as pd

    from .metadata import Table


def donor_is_current(store_url: str, ds: DonorSource, opts: ConvertOptions) -> bool:
    try:
        g = zarr.open_group(location.join(store_url, L.donor_path(ds.donor_id)), mode="r",
                            zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError):
        return False
    attrs = g.attrs.asdict()
    prov = attrs.get("provenance", {})
    return (bool(attrs.get("complete")) and prov.get("source") == ds.fingerprint()
            and prov.get("options") == opts.record() and group_whole(g))


#: the arrays every donor group holds (a group missing one is not complete, whatever it says)
DONOR_ARRAYS = (L.EXPRESSION, L.PACALL, L.PROBE_DIM, L.SAMPLE_DIM, *L.SAMPLE_COLUMNS)


def group_whole(g: zarr.Group) -> bool:
    """Every array of a donor group is there (its metadata at least)."""
    return writer.group_whole(g, DONOR_ARRAYS)


def tables_group(frame: pd.DataFrame, dim: str, index_col: str
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(coords, data_vars)`` of a table's group (:func:`.writer.write_dataset`): the index
    ``dim`` from ``index_col`` and every column along it."""
    coords = {dim: (dim, frame[index_col].to_numpy())}
    data = {}
    for c in frame.columns:
        v = frame[c].to_numpy()
        if v.dtype == object or v.dtype.kind in "OUT" or str(frame[c].dtype) in ("str", "string"):
            v = frame[c].astype(str).to_numpy(dtype=object)
        data[c] = (dim, v)
    return coords, data


def ensure_tables(store_url: str, probes: Table, ontology: Table, force: bool = False) -> None:
    """Write the probe and ontology groups unless the store holds them already (from the same
    bytes, every array there); ``force`` rewrites them regardless."""
    for name, table, dim, key in ((L.PROBES_GROUP, probes, L.PROBE_DIM, "probe_id"),
                                  (L.ONTOLOGY_GROUP, ontology, L.STRUCTURE_DIM, "id")):
        try:
            g = zarr.open_group(location.join(store_url, name), mode="r", zarr_format=3)
            if not force and g.attrs.get("sha256") == table.sha256 and \
                    set(table.frame.columns) <= set(g.array_keys()):
                continue
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError):
            pass
        staged = Staged.begin(store_url, name)
        try:
            writer.write_dataset(staged.url, *tables_group(table.frame, dim, key))
            zarr.open_group(staged.url, mode="a", zarr_format=3).attrs.update(
                {"sha256": table.sha256, "source": table.source})
            staged.publish()
        except BaseException:
            staged.abort()
            raise


def tables_info_from_store(store_url: str) -> dict[str, Any]:
    """``n_probes``, ``probes_source``, ``ontology_source`` from the table groups themselves
    (a root never written before a crash)."""
    out: dict[str, Any] = {}
    for group, key in ((L.PROBES_GROUP, "probes_source"), (L.ONTOLOGY_GROUP, "ontology_source")):
        try:
            g = zarr.open_group(location.join(store_url, group), mode="r", zarr_format=3,
                                use_consolidated=False)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError):
            continue
        out[key] = {"file": g.attrs.get("source"), "sha256": g.attrs.get("sha256")}
        if group == L.PROBES_GROUP and "probe_id" in g:
            out["n_probes"] = int(g["probe_id"].shape[0])
    return out


def check_layout(store_url: str, info: dict[str, Any]) -> None:
    """Refuse to add to a store written with another layout version."""
    version = info.get("layout_version") if info else None
    if info and version != L.LAYOUT_VERSION:
        raise ConfigError(f"{store_url} was written with store layout {version} (this version "
                          f"writes layout {L.LAYOUT_VERSION}, with a checksum in every chunk); "
                          "convert into a new store, or delete this one first")


def complete_donors(store_url: str) -> dict[int, dict[str, Any]]:
    """Donor id → recorded ``donor`` attributes of every complete, whole donor group."""
    return writer.complete_groups(store_url, L.DONORS_GROUP, DONOR_ARRAYS)


def root_stale(store_url: str) -> bool:
    """True when the root's consolidated metadata does not list every group and array of the
    store (an interrupted publication); local stores only (False elsewhere)."""
    path = location.local_path(store_url)
    if path is None:
        return False
    try:
        meta = json.loads((path / "zarr.json").read_bytes())
    except (OSError, ValueError):
        return True
    known = set((meta.get("consolidated_metadata") or {}).get("metadata") or {})
    listed = ((meta.get("attributes") or {}).get(L.ROOT_ATTR) or {}).get("donors") or []
    if any(not (path / L.donor_path(d) / "zarr.json").exists() for d in listed):
        return True
    for f in path.glob("*/*/zarr.json"):
        rel = f.parent.relative_to(path).as_posix()
        if rel.startswith((L.STAGING_DIR, "cache")):
            continue
        if rel not in known:
            return True
    for f in path.glob("*/*/*/zarr.json"):
        rel = f.parent.relative_to(path).as_posix()
        if not rel.startswith((L.STAGING_DIR, "cache")) and rel not in known:
            return True
    return False


class RootPublisher:
    """Lists the complete donor groups found in the store in the root attributes, with the
    consolidated metadata, in one atomic step (under :data:`.writer.ROOT_LOCK`).

    ``order`` is the order donors were asked for (others follow by id); ``tables_info`` (probe
    and ontology sources) is filled once the tables of this run are known.
    """

    def __init__(self, store_url: str, order: list[int], opts: ConvertOptions) -> None:
        self.store_url = store_url
        self.order = order
        self.opts = opts
        self.tables_info: dict[str, Any] = {}

    def __call__(self, new: dict[str, Any] | None = None, drop: int | None = None) -> None:
        """Publish the root: ``new`` is the summary of a donor just published, ``drop`` a
        donor to leave out while its directory is swapped."""
        with writer.ROOT_LOCK:
            writer.write_root(self.store_url, lambda cur: self._update(cur, new, drop))

    def _update(self, cur: dict[str, Any], new: dict[str, Any] | None, drop: int | None
                ) -> dict[str, Any]:
        listed = [int(d) for d in cur.get("donors", [])]
        infos = {int(k): v for k, v in (cur.get("donor_info") or {}).items()}
        found = complete_donors(self.store_url)
        if new is not None:
            infos[int(new["donor_id"])] = new
        present = [d for d in found if d != drop]
        for d in present:
            if d not in infos or (new is None and d not in listed):
                infos[d] = dict(found[d])
        order = [d for d in self.order if d in present]
        order += sorted(d for d in present if d not in order)
        keep = ("donor_id", "name", "age", "sex", "n_samples", "unknown_structures")
        donor_info = {str(d): {k: infos[d].get(k) for k in keep} for d in order}
        cur.update({
            "format": L.FORMAT_MICROARRAY, "layout_version": L.LAYOUT_VERSION,
            "dtype": cur.get("dtype") or self.opts.dtype, "donors": order,
            "donor_info": donor_info,
            "unknown_structures": {str(d): donor_info[str(d)]["unknown_structures"]
                                   for d in order if donor_info[str(d)]["unknown_structures"]},
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        if self.tables_info:
            cur.update(self.tables_info)
            cur.update({"converter": f"atlas-engine {__version__}",
                        "options": self.opts.record()})
        elif "probes_source" not in cur:
            cur.update(tables_info_from_store(self.store_url))
        return cur
