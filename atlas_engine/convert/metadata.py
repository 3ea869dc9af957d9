"""Read and validate the small per-donor tables: Probes.csv, SampleAnnot.csv, Ontology.csv.

They are a few MB at most, so pandas' CSV reader is used (quoted names with commas stay intact);
every column gets a fixed dtype and the header must match Allen's exactly. A UTF-8 byte-order
mark at the start (editors add one) is dropped before parsing and hashing.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import FormatError
from ..store.layout import MISSING_INT, PROBE_COLUMNS, SAMPLE_COLUMNS
from ..store.ontology import ONTOLOGY_COLUMNS
from .zipstream import BOM, MemberSource


def table_bytes(src: MemberSource) -> bytes:
    """The bytes of a small table, CRC-checked and size-bounded, without a leading UTF-8
    byte-order mark (its sha256 is then the same with or without one)."""
    data = src.read_bytes()
    return data[len(BOM):] if data.startswith(BOM) else data


@dataclass
class Table:
    """A parsed table plus the sha256 of its bytes and where it came from."""

    frame: pd.DataFrame
    sha256: str
    source: str


#: integers are exact in a float64 below this
_EXACT_INT = 2.0 ** 53


def _read(data: bytes, name: str, columns: tuple[str, ...], dtype: dict) -> pd.DataFrame:
    """The table ``data`` with ``dtype`` per column; ``"Int64"`` columns come back as float64
    holding whole numbers, NaN where the cell is empty.

    Integer columns are parsed as float64 and then checked to hold integers (pandas' nullable
    Int64 parse took 0.20 s for Probes.csv against 0.08 s, and raised a bare ``TypeError`` or
    ``OverflowError`` for a token such as ``12.5`` or ``inf``); a value that is not a whole
    number below 2^53 is refused with its line and column."""
    if not data.strip():
        raise FormatError(name, "empty file", line=1, expected="a header line")
    first = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    header = [h.strip().strip('"') for h in first.split(",")]
    if tuple(header) != columns:
        raise FormatError(name, f"unexpected header {first!r}", line=1,
                          expected=",".join(columns))
    ints = [c for c, t in dtype.items() if t == "Int64"]
    try:
        frame = pd.read_csv(io.BytesIO(data), keep_default_na=False,
                            dtype={c: "float64" if c in ints else t for c, t in dtype.items()},
                            na_values={c: [""] for c, t in dtype.items() if t is not str})
    except (ValueError, OverflowError, TypeError, pd.errors.ParserError) as exc:
        raise FormatError(name, f"cannot parse table ({exc})",
                          expected=f"columns {', '.join(columns)} with their types") from None
    for c in ints:
        v = frame[c].to_numpy()
        with np.errstate(invalid="ignore"):
            bad = ~np.isnan(v) & ((np.abs(v) >= _EXACT_INT) | (v != np.trunc(v)))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise FormatError(name, f"{c} value {v[row]:g} is not an integer", line=row + 2,
                              column=columns.index(c) + 1, expected="an integer")
    return frame


def _check_ints(frame: pd.DataFrame, name: str, cols: tuple[str, ...], allow_missing=()) -> None:
    for c in cols:
        col = frame[c]
        bad = col.isna() if c not in allow_missing else pd.Series(False, index=col.index)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise FormatError(name, f"missing {c}", line=row + 2,
                              column=frame.columns.get_loc(c) + 1, expected="an integer")


def read_probes(src: MemberSource) -> Table:
    """Probes.csv → frame with int64 probe_id/gene_id, int64 entrez_id (``-1`` = missing), str
    probe_name/gene_symbol/gene_name/chromosome (``""`` = missing)."""
    data = table_bytes(src)
    name = src.display
    frame = _read(data, name, PROBE_COLUMNS, {
        "probe_id": "Int64", "probe_name": str, "gene_id": "Int64", "gene_symbol": str,
        "gene_name": str, "entrez_id": "Int64", "chromosome": str})
    _check_ints(frame, name, ("probe_id", "gene_id"))
    frame["probe_id"] = frame["probe_id"].astype(np.int64)
    frame["gene_id"] = frame["gene_id"].astype(np.int64)
    frame["entrez_id"] = frame["entrez_id"].fillna(MISSING_INT).astype(np.int64)
    dup = frame["probe_id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise FormatError(name, f"duplicate probe_id {frame['probe_id'].iloc[row]}",
                          line=row + 2, column=1, expected="unique probe ids")
    if len(frame) == 0:
        raise FormatError(name, "no probes", line=2, expected="at least one probe row")
    return Table(frame, hashlib.sha256(data).hexdigest(), name)


def read_samples(src: MemberSource) -> Table:
    """SampleAnnot.csv → frame with every column typed (ints int64, MNI float64, text str)."""
    data = table_bytes(src)
    name = src.display
    types: dict = {c: "Int64" for c in ("structure_id", "slab_num", "well_id", "polygon_id",
                                         "mri_voxel_x", "mri_voxel_y", "mri_voxel_z")}
    types.update({c: "float64" for c in ("mni_x", "mni_y", "mni_z")})
    types.update({c: str for c in ("slab_type", "structure_acronym", "structure_name")})
    frame = _read(data, name, SAMPLE_COLUMNS, types)
    ints = tuple(c for c, t in types.items() if t == "Int64")
    _check_ints(frame, name, ints)
    for c in ints:
        frame[c] = frame[c].astype(np.int64)
    if len(frame) == 0:
        raise FormatError(name, "no samples", line=2, expected="at least one sample row")
    return Table(frame, hashlib.sha256(data).hexdigest(), name)


def read_ontology(src: MemberSource) -> Table:
    """Ontology.csv → frame; parent_structure_id ``-1`` at the root, hemisphere ``""`` if none."""
    data = table_bytes(src)
    name = src.display
    frame = _read(data, name, ONTOLOGY_COLUMNS, {
        "id": "Int64", "acronym": str, "name": str, "parent_structure_id": "Int64",
        "hemisphere": str, "graph_order": "Int64", "structure_id_path": str,
        "color_hex_triplet": str})
    _check_ints(frame, name, ("id", "graph_order"))
    frame["id"] = frame["id"].astype(np.int64)
    frame["graph_order"] = frame["graph_order"].astype(np.int64)
    frame["parent_structure_id"] = frame["parent_structure_id"].fillna(MISSING_INT).astype(
        np.int64)
    return Table(frame, hashlib.sha256(data).hexdigest(), name)


def _or_missing(na: tuple[str, ...]) -> str:
    """How a missing cell is written, for an error's "expected" part."""
    return " or NA" if "NA" in na else " or an empty cell"


def read_typed_table(src: MemberSource, columns: tuple[str, ...], ints: tuple[str, ...] = (),
                     floats: tuple[str, ...] = (), *, na: tuple[str, ...] = ("",),
                     rename: dict[str, str] | None = None) -> pd.DataFrame:
    """A small table read as text, then typed column by column: ``ints`` as int64 (an empty
    or ``na`` cell → ``MISSING_INT``), ``floats`` as float64 (NaN), the others as ``str``
    (``""`` for an ``na`` cell). The header (after ``rename``) must be ``columns``. A cell
    that is not a whole number in an integer column, or not a number in a float column, is
    refused with its line and column, never rounded or turned into text."""
    data = table_bytes(src)
    if not data.strip():
        raise FormatError(src.display, "empty file", line=1, expected=",".join(columns))
    try:
        frame = pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values=list(na),
                            dtype=str)
    except (ValueError, pd.errors.ParserError) as exc:
        raise FormatError(src.display, f"not a CSV table ({exc})",
                          expected=",".join(columns)) from None
    frame = frame.rename(columns=rename or {})
    if tuple(frame.columns) != columns:
        raise FormatError(src.display, f"unexpected header {list(frame.columns)}", line=1,
                          expected=",".join(columns))
    for c in columns:
        col = frame[c]
        if c in ints:
            num = pd.to_numeric(col, errors="coerce")
            with np.errstate(invalid="ignore"):
                bad = num.notna() & ((num.abs() >= _EXACT_INT) | (num != np.floor(
                    num.fillna(0))))
            bad |= col.notna() & num.isna()
            if bad.any():
                k = int(np.flatnonzero(bad.to_numpy())[0])
                raise FormatError(src.display, f"bad integer {col.iloc[k]!r} in {c}",
                                  line=k + 2, column=columns.index(c) + 1,
                                  expected="an integer" + _or_missing(na))
            frame[c] = num.fillna(MISSING_INT).astype(np.int64)
        elif c in floats:
            num = pd.to_numeric(col, errors="coerce")
            bad = col.notna() & num.isna()
            if bad.any():
                k = int(np.flatnonzero(bad.to_numpy())[0])
                raise FormatError(src.display, f"bad number {col.iloc[k]!r} in {c}",
                                  line=k + 2, column=columns.index(c) + 1,
                                  expected="a decimal number" + _or_missing(na))
            frame[c] = num.astype(np.float64)
        else:
            frame[c] = col.fillna("").astype(str)
    return frame
