"""Read a GTEx median-TPM GCT file (plain or gzip) into a table, refusing malformed files.

Layout (GCT 1.2, shared more_datasets.md §4): line 1 ``#1.2``; line 2 ``<rows>\\t<columns>``
(data columns only); line 3 ``Name\\tDescription\\t<tissue>…``; then one row per gene.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_write_bytes
from ..errors import FormatError

GCT_VERSION = "#1.2"


@dataclass
class GctTable:
    """A GCT file's content: ``genes`` (``name`` = versioned id, ``ensembl`` = unversioned,
    ``symbol``) and ``values`` (genes × tissues, float64 TPM), in file order."""

    genes: pd.DataFrame
    values: pd.DataFrame
    path: str

    @property
    def tissues(self) -> list[str]:
        return list(self.values.columns)


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    raw = gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def _fast_table(body: str, n_fields: int) -> pd.DataFrame | None:
    """The data rows parsed by pandas' C reader with float value columns, or None when that
    reader refuses them (the careful path then names the problem)."""
    if not body.strip():
        return None
    dtypes: dict[int, type] = {0: str, 1: str}
    dtypes.update({j: np.float64 for j in range(2, n_fields)})
    try:
        frame = pd.read_csv(io.StringIO(body), sep="\t", header=None, names=range(n_fields),
                            dtype=dtypes, keep_default_na=False, na_values=[], quoting=3,
                            engine="c", skip_blank_lines=True)
    except (ValueError, pd.errors.ParserError):
        return None
    if frame[0].isna().any() or frame[1].isna().any():
        return None
    return frame


def read_gct(path: str | os.PathLike) -> GctTable:
    """Read ``path`` (``.gct`` or ``.gct.gz``); :class:`FormatError` names the line and column
    of the first problem (version line, dimensions, header, a row's field count, a value that is
    not a non-negative number, a duplicate gene id, a row count that disagrees with line 2)."""
    p = Path(path)
    name = str(p)
    try:
        fh = _open_text(p)
    except FileNotFoundError:
        raise FormatError(name, "file not found", expected="a GTEx .gct or .gct.gz file") from None
    with fh:
        try:
            first = fh.readline().rstrip("\r\n")
            dims = fh.readline().rstrip("\r\n")
            header = fh.readline().rstrip("\r\n")
            body = fh.read()
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise FormatError(name, f"cannot read ({exc})", expected="gzip or text GCT") from None
    if first.strip() != GCT_VERSION:
        raise FormatError(name, f"first line is {first[:40]!r}", line=1, expected=GCT_VERSION)
    parts = dims.split("\t")
    try:
        n_rows, n_cols = (int(x) for x in parts[:2])
        if len(parts) != 2 or n_rows < 0 or n_cols < 1:
            raise ValueError
    except ValueError:
        raise FormatError(name, f"dimensions line is {dims[:40]!r}", line=2,
                          expected="<rows>\\t<data columns>") from None
    cols = header.split("\t")
    if cols[:2] != ["Name", "Description"]:
        raise FormatError(name, f"header starts {cols[:2]}", line=3, column=1,
                          expected="Name\\tDescription\\t<tissues>")
    tissues = cols[2:]
    if len(tissues) != n_cols:
        raise FormatError(name, f"header has {len(tissues)} data columns, line 2 says {n_cols}",
                          line=3, column=len(cols), expected=f"{n_cols} tissue columns")
    dup_t = pd.Index(tissues)[pd.Index(tissues).duplicated()]
    if len(dup_t):
        raise FormatError(name, f"tissue column {dup_t[0]!r} appears twice", line=3,
                          column=tissues.index(dup_t[0], tissues.index(dup_t[0]) + 1) + 3,
                          expected="distinct tissue names")
    fast = _fast_table(body, len(cols))
    if fast is not None and len(fast) == n_rows:
        ids = fast[0].to_numpy(dtype=object)
        vals = fast.iloc[:, 2:].to_numpy(dtype=np.float64)
        if (np.isfinite(vals).all() and (vals >= 0).all() and not pd.Index(ids).duplicated().any()
                and (fast[0].str.strip() != "").all()):
            genes = pd.DataFrame({"name": ids, "ensembl": fast[0].str.split(".").str[0].to_numpy(),
                                  "symbol": fast[1].to_numpy(dtype=object)})
            if not genes["ensembl"].duplicated().any():
                return GctTable(genes=genes, values=pd.DataFrame(vals, columns=tissues),
                                path=name)
    # something is off (or the fast reader could not cope): find the first problem line by line
    lines = body.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != n_rows:
        raise FormatError(name, f"{len(lines)} data rows, line 2 says {n_rows}",
                          line=3 + min(len(lines), n_rows) + (1 if len(lines) > n_rows else 0),
                          expected=f"{n_rows} rows")
    counts = np.array([ln.count("\t") + 1 for ln in lines], dtype=np.int64)
    bad = np.flatnonzero(counts != len(cols))
    if bad.size:
        k = int(bad[0])
        raise FormatError(name, f"{counts[k]} fields", line=4 + k, expected=f"{len(cols)} fields")
    frame = pd.read_csv(io.StringIO("\n".join(lines)), sep="\t", header=None, dtype=str,
                        keep_default_na=False, quoting=3, on_bad_lines="error",
                        names=range(len(cols))) if lines else \
        pd.DataFrame(columns=range(len(cols)), dtype=str)
    ids = frame[0].to_numpy(dtype=object)
    empty = np.flatnonzero(frame[0].str.strip() == "")
    if empty.size:
        raise FormatError(name, "empty gene id", line=4 + int(empty[0]), column=1,
                          expected="a versioned Ensembl id such as ENSG00000223972.5")
    dup = pd.Index(ids).duplicated()
    if dup.any():
        k = int(np.flatnonzero(dup)[0])
        raise FormatError(name, f"gene id {ids[k]!r} appears again", line=4 + k, column=1,
                          expected="one row per gene id")
    values = np.empty((len(frame), len(tissues)), dtype=np.float64)
    for j in range(len(tissues)):
        col = pd.to_numeric(frame[j + 2], errors="coerce").to_numpy(dtype=np.float64)
        badv = np.flatnonzero(~np.isfinite(col) | (col < 0))
        if badv.size:
            k = int(badv[0])
            raise FormatError(name, f"value {frame.iat[k, j + 2]!r} in {tissues[j]!r}",
                              line=4 + k, column=j + 3, expected="a non-negative number (TPM)")
        values[:, j] = col
    genes = pd.DataFrame({"name": ids, "ensembl": frame[0].str.split(".").str[0].to_numpy(),
                          "symbol": frame[1].to_numpy(dtype=object)})
    dup_e = genes["ensembl"].duplicated()
    if dup_e.any():
        k = int(np.flatnonzero(dup_e.to_numpy())[0])
        raise FormatError(name, f"Ensembl id {genes['ensembl'].iat[k]} appears again (another "
                          "version)", line=4 + k, column=1, expected="one row per gene")
    return GctTable(genes=genes, values=pd.DataFrame(values, columns=tissues), path=name)


def write_gct(path: str | os.PathLike, genes: pd.DataFrame, values: np.ndarray,
              tissues: list[str] | tuple[str, ...], *, digits: int = 6) -> Path:
    """Write a GCT 1.2 file (gzip when ``path`` ends in ``.gz``): ``genes`` has ``name`` and
    ``symbol``; ``values`` is genes × tissues."""
    out = Path(path)
    lines = [GCT_VERSION, f"{len(genes)}\t{len(tissues)}",
             "\t".join(["Name", "Description", *tissues])]
    fmt = f"%.{digits}g"
    for name, sym, row in zip(genes["name"], genes["symbol"], values, strict=True):
        lines.append("\t".join([str(name), str(sym), *(fmt % v for v in row)]))
    data = ("\n".join(lines) + "\n").encode()
    if out.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(out, data, fsync=False)
