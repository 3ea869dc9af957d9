"""What both Cell Types layouts share: a matrix's header line, and the assembly of the store.

The store is written under ``STORE.partial`` (its checkpoint ``STORE.progress.json`` beside it)
and renamed into place when complete, with its metadata consolidated; ``obs``, ``var`` and
``uns`` are written as AnnData elements.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import zarr

from ..convert.zipstream import MemberSource
from ..errors import FormatError


# ------------------------------------------------------------------------------------------
# header
# ------------------------------------------------------------------------------------------
def read_header(src: MemberSource, chunks: Iterator[bytes] | None = None
                ) -> tuple[list[str], int, bytes]:
    """The header fields (CSV-unquoted), the header's length in bytes and the bytes after it
    that were read with it."""
    it = chunks if chunks is not None else src.iter_chunks()
    buf = bytearray()
    for piece in it:
        buf += piece
        nl = buf.find(b"\n")
        if nl >= 0:
            line = bytes(buf[:nl]).rstrip(b"\r").decode("utf-8")
            fields = next(csv.reader([line]))
            return fields, nl + 1, bytes(buf[nl + 1:])
    raise FormatError(src.display, "no header line", line=1,
                      expected="a header row ending in a newline")


# ------------------------------------------------------------------------------------------
# store assembly
# ------------------------------------------------------------------------------------------
def _write_annotations(root: zarr.Group, obs: pd.DataFrame, var: pd.DataFrame,
                       uns: dict[str, object]) -> None:
    import anndata as ad
    from anndata.io import write_elem

    with ad.settings.override(allow_write_nullable_strings=True, zarr_write_format=3,
                              auto_shard_zarr_v3=False):
        write_elem(root, "obs", obs)
        write_elem(root, "var", var)
        write_elem(root, "uns", uns)
        for key in ("obsm", "varm", "obsp", "varp"):
            write_elem(root, key, {})
        if "layers" not in root:
            write_elem(root, "layers", {})
    root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})


def _staging(store: Path) -> tuple[Path, Path, Path]:
    return (store.with_name(store.name + ".partial"), store.with_name(store.name + ".progress.json"),
            store.with_name(store.name + ".cells.txt"))


def _source_key(src: MemberSource) -> dict[str, object]:
    st = Path(src.archive).stat()
    return {"file": str(Path(src.archive).resolve()), "member": src.member, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns}


def _publish(staging: Path, store: Path, *extra: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        # consolidated metadata is not in the Zarr v3 spec yet; anndata's readers use it
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(staging))
    os.replace(staging, store)
    for p in extra:
        p.unlink(missing_ok=True)
