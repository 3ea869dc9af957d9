"""Read and validate the small tables: the per-donor Probes.csv, SampleAnnot.csv and
Ontology.csv, and (through :func:`read_typed_table`) BrainSpan's and RNA-seq's.

They are a few MB at most, so pandas' CSV reader is used (quoted names with commas stay intact);
every column gets a fixed type (:func:`typed_frame`, the one reader of them all) and the header
must match Allen's exactly. A UTF-8 byte-order mark at the start (editors add one) is dropped
before parsing and hashing.
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


def read_probes(src: MemberSource) -> Table:
    """Probes.csv → frame with int64 probe_id/gene_id, int64 entrez_id (``-1`` = missing), str
    probe_name/gene_symbol/gene_name/chromosome (``""`` = missing)."""
    data = table_bytes(src)
    name = src.display
    frame = typed_frame(data, name, PROBE_COLUMNS, ("probe_id", "gene_id", "entrez_id"),
                        required=("probe_id", "gene_id"))
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
    ints = ("structure_id", "slab_num", "well_id", "polygon_id", "mri_voxel_x", "mri_voxel_y",
            "mri_voxel_z")
    frame = typed_frame(data, name, SAMPLE_COLUMNS, ints, ("mni_x", "mni_y", "mni_z"),
                        required=ints)
    if len(frame) == 0:
        raise FormatError(name, "no samples", line=2, expected="at least one sample row")
    return Table(frame, hashlib.sha256(data).hexdigest(), name)


def read_ontology(src: MemberSource) -> Table:
    """Ontology.csv → frame; parent_structure_id ``-1`` at the root, hemisphere ``""`` if none."""
    data = table_bytes(src)
    name = src.display
    frame = typed_frame(data, name, ONTOLOGY_COLUMNS, ("id", "parent_structure_id",
                                                       "graph_order"),
                        required=("id", "graph_order"))
    return Table(frame, hashlib.sha256(data).hexdigest(), name)


def _or_missing(na: tuple[str, ...]) -> str:
    """How a missing cell is written, for an error's "expected" part."""
    return " or NA" if "NA" in na else " or an empty cell"


#: integers are exact in a float64 below this
_EXACT_INT = 2.0 ** 53


def read_typed_table(src: MemberSource, columns: tuple[str, ...], ints: tuple[str, ...] = (),
                     floats: tuple[str, ...] = (), *, required: tuple[str, ...] = (),
                     na: tuple[str, ...] = ("",), rename: dict[str, str] | None = None
                     ) -> pd.DataFrame:
    """:func:`typed_frame` of the small table ``src`` (its bytes from :func:`table_bytes`)."""
    return typed_frame(table_bytes(src), src.display, columns, ints, floats, required=required,
                       na=na, rename=rename)


def typed_frame(data: bytes, name: str, columns: tuple[str, ...], ints: tuple[str, ...] = (),
                floats: tuple[str, ...] = (), *, required: tuple[str, ...] = (),
                na: tuple[str, ...] = ("",), rename: dict[str, str] | None = None
                ) -> pd.DataFrame:
    """A small CSV table with typed columns: ``ints`` int64 (a ``na`` cell → ``MISSING_INT``,
    or refused as missing when in ``required``), ``floats`` float64 (NaN), the others ``str``
    (``""`` for a ``na`` cell). The header, names stripped of spaces and after ``rename``,
    must be ``columns``.

    Numbers are parsed by pandas' C reader as float64 (as abagen reads the MNI coordinates;
    ``pd.to_numeric`` gives the same bits, checked on 800,000 tokens), integers then checked
    whole and below 2^53: pandas' nullable Int64 parse was 2.5× slower on Probes.csv and
    raised a bare ``TypeError`` / ``OverflowError`` for ``12.5`` or ``inf``. A cell that is not
    a number, a whole number or present where it must be is refused with its line and column,
    never rounded or read as text."""
    if not data.strip():
        raise FormatError(name, "empty file", line=1, expected=",".join(columns))
    rename = rename or {}
    try:
        header = [str(c).strip() for c in pd.read_csv(io.BytesIO(data), nrows=0).columns]
    except (ValueError, pd.errors.ParserError) as exc:
        raise FormatError(name, f"not a CSV table ({exc})", line=1,
                          expected=",".join(columns)) from None
    if tuple(rename.get(c, c) for c in header) != columns:
        raise FormatError(name, f"unexpected header {header}", line=1,
                          expected=",".join(columns))
    numeric = set(ints) | set(floats)
    read = {"header": 0, "names": list(columns), "index_col": False, "keep_default_na": False,
            "na_values": list(na)}
    try:
        frame = pd.read_csv(io.BytesIO(data), **read,
                            dtype={c: "float64" if c in numeric else str for c in columns})
    except (ValueError, OverflowError, TypeError, pd.errors.ParserError) as exc:
        # a token that is not a number: found in the text, with its line and column
        raise _bad_number(data, name, columns, ints, floats, read) or FormatError(
            name, f"not a CSV table ({exc})", expected=",".join(columns)) from None
    for c in columns:
        if c in ints:
            v = frame[c].to_numpy(dtype=np.float64)
            missing = np.isnan(v)
            with np.errstate(invalid="ignore"):
                bad = ~missing & ((np.abs(v) >= _EXACT_INT) | (v != np.trunc(v)))
            if c in required:
                bad |= missing
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                if missing[k]:
                    raise FormatError(name, f"missing {c}", line=k + 2,
                                      column=columns.index(c) + 1, expected="an integer")
                token = pd.read_csv(io.BytesIO(data), **read, dtype=str)[c].iloc[k]
                raise FormatError(name, f"bad integer {token!r} in {c}", line=k + 2,
                                  column=columns.index(c) + 1,
                                  expected="an integer" + _or_missing(na))
            frame[c] = np.where(missing, MISSING_INT, v).astype(np.int64)
        elif c not in floats and frame[c].isna().any():    # read as str: only gaps to fill
            frame[c] = frame[c].fillna("")
    return frame


def _bad_number(data: bytes, name: str, columns: tuple[str, ...], ints: tuple[str, ...],
                floats: tuple[str, ...], read: dict) -> FormatError | None:
    """The error for the first cell of a number column that is not a number (``None`` when
    the table cannot be read even as text, or every number reads)."""
    try:
        text = pd.read_csv(io.BytesIO(data), **read, dtype=str)
    except (ValueError, pd.errors.ParserError):
        return None
    for c in columns:
        if c not in ints and c not in floats:
            continue
        col = text[c]
        bad = col.notna() & pd.to_numeric(col, errors="coerce").isna()
        if bad.any():
            k = int(np.flatnonzero(bad.to_numpy())[0])
            what = "integer" if c in ints else "number"
            return FormatError(name, f"bad {what} {col.iloc[k]!r} in {c}", line=k + 2,
                               column=columns.index(c) + 1,
                               expected=("an integer" if c in ints else "a decimal number")
                               + _or_missing(tuple(read["na_values"])))
    return None
