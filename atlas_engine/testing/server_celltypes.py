"""``model::CellType`` records of the local mirror, read from the Cell Types files it serves.

The real Allen RMA field list of ``CellType`` is UNCONFIRMED (shared more_datasets.md and
allen_formats.md name the model but not its fields), so the mirror serves one record per
cluster of every generated data set it finds, with fields chosen here and read from the data
set's own files (so the answer is consistent with the counts ``convert`` reads):

``id``
    Made here as ``CELL_TYPE_ID_BASE + 100_000 * k + order`` (``k`` the data set's position in
    :data:`~atlas_engine.celltypes.datasets.DATASETS`); the real ids are UNCONFIRMED.
``name``
    The cluster label (portal ``cluster_label``, 2018 ``cluster``).
``order``
    Portal ``cluster_order`` / ``cluster_id``; 2018 sets: the position of the label in sorted
    order (they carry no order column).
``class``, ``subclass``
    The cluster's class and subclass label (``None`` when the set has no such column).
``color_hex_triplet``
    The cluster colour without ``#`` (as ``Structure`` writes it); ``None`` for 2018 sets.
``cell_count``
    Cells of the cluster in the metadata.
``data_set``, ``species``
    The ``--what celltypes:<name>`` name and ``human`` / ``mouse``.

Portal sets are read from ``DIR/{bucket_prefix}/metadata.csv``, 2018 sets from the
``samples-columns`` member of their zip (``DIR/{zip_name}`` or the path ``index.json`` maps the
well-known file id to).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

from ..celltypes.datasets import DATASETS, CellTypeDataset
from ..errors import FormatError

#: First generated CellType id (real ids UNCONFIRMED).
CELL_TYPE_ID_BASE = 900_000_000

Record = dict[str, Any]


def _zip_path(root: Path, ds: CellTypeDataset) -> Path | None:
    candidates = [root / str(ds.zip_name)]
    index = root / "index.json"
    if index.is_file():
        try:
            rel = json.loads(index.read_text()).get(str(ds.wkf_id))
        except (ValueError, AttributeError):
            rel = None
        if isinstance(rel, str):
            candidates.insert(0, root / rel)
    return next((p for p in candidates if p.is_file()), None)


def _portal_frame(path: Path) -> pd.DataFrame:
    head = pd.read_csv(path, nrows=0).columns
    order = "cluster_order" if "cluster_order" in head else "cluster_id"
    want = [c for c in ("cluster_label", order, "cluster_color", "class_label",
                        "subclass_label") if c in head]
    if "cluster_label" not in want:
        raise FormatError(path, "no cluster_label column", line=1,
                          expected="cluster_label/_order/_color columns")
    df = pd.read_csv(path, usecols=want, dtype=str, keep_default_na=False)
    out = pd.DataFrame({"name": df["cluster_label"]})
    out["order"] = pd.to_numeric(df[order], errors="coerce") if order in df else None
    out["color"] = df["cluster_color"] if "cluster_color" in df else None
    out["class"] = df["class_label"] if "class_label" in df else None
    out["subclass"] = df["subclass_label"] if "subclass_label" in df else None
    return out


def _zip_frame(path: Path, ds: CellTypeDataset) -> pd.DataFrame:
    member = ds.member("samples-columns")
    with zipfile.ZipFile(path) as zf:
        try:
            raw = zf.open(member)
        except KeyError:
            raise FormatError(path, f"member {member} is missing",
                              expected="the 2018 zip members") from None
        with raw:
            df = pd.read_csv(raw, dtype=str, keep_default_na=False)
    if "cluster" not in df.columns:
        raise FormatError(f"{path}:{member}", "no cluster column", line=1,
                          expected="a cluster column")
    out = pd.DataFrame({"name": df["cluster"]})
    labels = sorted(set(df["cluster"]) - {""})
    out["order"] = out["name"].map({n: i + 1 for i, n in enumerate(labels)})
    out["color"] = None
    out["class"] = df["class"] if "class" in df.columns else None
    out["subclass"] = df["subclass"] if "subclass" in df.columns else None
    return out


def _records(frame: pd.DataFrame, k: int, ds: CellTypeDataset) -> list[Record]:
    frame = frame[frame["name"] != ""]
    out = []
    for name, group in frame.groupby("name", sort=False):
        first = group.iloc[0]
        order = first["order"]
        order_i = int(order) if order is not None and pd.notna(order) else None
        color = first["color"]
        out.append({
            "cell_count": int(len(group)),
            "class": first["class"] if first["class"] not in (None, "") else None,
            "color_hex_triplet": str(color).lstrip("#") if color not in (None, "") else None,
            "data_set": ds.name,
            "id": CELL_TYPE_ID_BASE + 100_000 * k + (order_i or 0),
            "name": str(name),
            "order": order_i,
            "species": ds.species,
            "subclass": first["subclass"] if first["subclass"] not in (None, "") else None,
        })
    out.sort(key=lambda r: (r["order"] is None, r["order"], r["name"]))
    return out


def cell_types(root: str | Path) -> list[Record]:
    """Every ``CellType`` record of the data sets found under ``root`` (data set order)."""
    root = Path(root)
    out: list[Record] = []
    for k, ds in enumerate(DATASETS.values()):
        if ds.layout == "portal":
            path = root / str(ds.bucket_prefix) / "metadata.csv"
            if path.is_file():
                out += _records(_portal_frame(path), k, ds)
        else:
            zpath = _zip_path(root, ds)
            if zpath is not None:
                out += _records(_zip_frame(zpath, ds), k, ds)
    return out
