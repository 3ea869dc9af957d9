"""NRRD volumes (CCFv3 ``annotation_{10,25,50,100}.nrrd``): header by pynrrd, data in slabs.

The header is parsed with :func:`nrrd.read_header` (pynrrd); the voxel data is then read by
:class:`~atlas_engine.volumes.base.Volume` in slabs (``raw`` encoding: in place, random access;
``gzip``: inflated as a stream), so a 10 µm annotation (1320 × 800 × 1140 uint32, 4.8 GB) is
never whole in memory. Only 3-D, attached-data, ``raw``/``gzip`` files are accepted; anything
else is refused with the file and field named.

:func:`write_nrrd` writes a header pynrrd reads and the data from an iterator of slabs (gzip
streamed), so generated and mapped volumes of any size are written in bounded memory.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..atomic import atomic_output
from ..errors import FormatError
from .base import Volume

#: NRRD ``type`` names → numpy kinds (the NRRD spec's synonyms).
_TYPES = {
    "uint8": "u1", "uchar": "u1", "unsigned char": "u1", "uint8_t": "u1",
    "int8": "i1", "signed char": "i1", "int8_t": "i1",
    "uint16": "u2", "ushort": "u2", "unsigned short": "u2", "unsigned short int": "u2",
    "uint16_t": "u2",
    "int16": "i2", "short": "i2", "short int": "i2", "signed short": "i2", "int16_t": "i2",
    "uint32": "u4", "uint": "u4", "unsigned int": "u4", "uint32_t": "u4",
    "int32": "i4", "int": "i4", "signed int": "i4", "int32_t": "i4",
    "uint64": "u8", "ulonglong": "u8", "unsigned long long": "u8", "uint64_t": "u8",
    "int64": "i8", "longlong": "i8", "long long": "i8", "int64_t": "i8",
    "float": "f4", "double": "f8",
}


def _dtype(header: dict[str, Any], path: Path) -> np.dtype:
    name = str(header.get("type", "")).strip().lower()
    if name not in _TYPES:
        raise FormatError(path, f"NRRD type {header.get('type')!r} is not supported",
                          expected="an integer or float type such as uint32")
    dt = np.dtype(_TYPES[name])
    if dt.itemsize > 1:
        endian = str(header.get("endian", "")).strip().lower()
        if endian not in ("little", "big"):
            raise FormatError(path, f"NRRD endian {header.get('endian')!r}",
                              expected="little or big (required for multi-byte types)")
        dt = dt.newbyteorder("<" if endian == "little" else ">")
    return dt


def _spacing(header: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(3×3 direction matrix, origin) from ``space directions``/``spacings``."""
    dirs = header.get("space directions")
    if dirs is not None:
        m = np.asarray(dirs, dtype=float)
        if m.shape == (3, 3) and np.isfinite(m).all():
            origin = np.asarray(header.get("space origin", (0.0, 0.0, 0.0)), dtype=float)
            return m, origin
    sp = header.get("spacings")
    m = np.diag(np.asarray(sp, dtype=float)) if sp is not None else np.eye(3)
    return m, np.zeros(3)


def open_nrrd(path: str | Path) -> Volume:
    """Open an NRRD volume lazily (header now, data on demand).

    Raises
    ------
    FormatError
        Not NRRD, not 3-D, detached data, an encoding other than raw/gzip, a bad type or
        endian, or (raw) a file whose length does not match ``sizes``.
    """
    import nrrd

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            header = nrrd.read_header(fh)
            offset = fh.tell()
    except nrrd.NRRDError as exc:
        raise FormatError(path, f"not a readable NRRD header: {exc}",
                          expected="NRRD000x magic line and fields") from None
    except (StopIteration, ValueError, UnicodeDecodeError) as exc:
        raise FormatError(path, f"not a readable NRRD header: {exc}") from None
    if int(header.get("dimension", 0)) != 3:
        raise FormatError(path, f"NRRD dimension {header.get('dimension')}", expected="3")
    sizes = tuple(int(s) for s in np.asarray(header.get("sizes", ())).ravel())
    if len(sizes) != 3 or min(sizes) < 1:
        raise FormatError(path, f"NRRD sizes {sizes}", expected="three positive sizes")
    if header.get("data file") or header.get("datafile"):
        raise FormatError(path, "detached NRRD data (a 'data file' field) is not supported",
                          expected="data attached after the header")
    for key in ("line skip", "lineskip", "byte skip", "byteskip"):
        if int(header.get(key, 0) or 0) != 0:
            raise FormatError(path, f"NRRD field {key!r} is not supported", expected="0")
    dtype = _dtype(header, path)
    encoding = str(header.get("encoding", "")).strip().lower()
    directions, origin = _spacing(header)
    affine = np.eye(4)
    affine[:3, :3] = directions.T
    affine[:3, 3] = origin
    spacing = tuple(float(np.linalg.norm(directions[i])) for i in range(3))
    nbytes = int(np.prod(sizes, dtype=np.int64)) * dtype.itemsize
    vol_kwargs = dict(path=path, shape=sizes, dtype=dtype, spacing=spacing, unit="um",
                      affine=affine, header=dict(header))
    if encoding == "raw":
        size = os.path.getsize(path) - offset
        if size != nbytes:
            raise FormatError(path, f"raw NRRD data holds {size:,} bytes",
                              expected=f"{nbytes:,} bytes for sizes {' '.join(map(str, sizes))} "
                              f"of {header.get('type')}")

        def open_raw() -> IO[bytes]:
            fh = open(path, "rb")
            fh.seek(offset)
            return fh

        return Volume(**vol_kwargs, open_stream=open_raw, raw_at=(path, offset))
    if encoding in ("gzip", "gz"):
        def open_gzip() -> IO[bytes]:
            fh = open(path, "rb")
            fh.seek(offset)
            return _GzipStream(fh)

        return Volume(**vol_kwargs, open_stream=open_gzip)
    raise FormatError(path, f"NRRD encoding {header.get('encoding')!r} is not supported",
                      expected="raw or gzip")


class _GzipStream(io.RawIOBase):
    """A gzip member stream over an open file (isal when available), closing both."""

    def __init__(self, fh: IO[bytes]) -> None:
        super().__init__()
        self._fh = fh
        try:
            from isal import igzip
            self._gz: Any = igzip.IGzipFile(fileobj=fh, mode="rb")
        except ImportError:  # pragma: no cover - isal is a dependency
            self._gz = gzip.GzipFile(fileobj=fh, mode="rb")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            return self._gz.readinto(b)
        except (gzip.BadGzipFile, EOFError, OSError) as exc:
            raise OSError(f"gzip data damaged ({exc})") from None

    def read(self, n: int = -1) -> bytes:
        try:
            return self._gz.read(n)
        except (gzip.BadGzipFile, EOFError, OSError) as exc:
            raise OSError(f"gzip data damaged ({exc})") from None

    def close(self) -> None:
        try:
            self._gz.close()
        finally:
            self._fh.close()
            super().close()


def nrrd_header_text(shape: Sequence[int], dtype: np.dtype, spacing: Sequence[float],
                     *, encoding: str = "gzip", origin: Sequence[float] = (0.0, 0.0, 0.0),
                     space: str | None = "left-posterior-superior") -> bytes:
    """An NRRD0004 header (CCF layout: diagonal space directions in µm, domain kinds)."""
    names = {"u1": "uint8", "i1": "int8", "u2": "uint16", "i2": "int16", "u4": "uint32",
             "i4": "int32", "u8": "uint64", "i8": "int64", "f4": "float", "f8": "double"}
    dt = np.dtype(dtype)
    lines = ["NRRD0004", "# Complete NRRD file format specification at:",
             "# http://teem.sourceforge.net/nrrd/format.html",
             f"type: {names[dt.kind + str(dt.itemsize)]}", "dimension: 3"]
    if space:
        lines.append(f"space: {space}")
    lines.append("sizes: " + " ".join(str(int(s)) for s in shape))
    dirs = []
    for i in range(3):
        v = [0.0, 0.0, 0.0]
        v[i] = float(spacing[i])
        dirs.append("(" + ",".join(f"{x:g}" for x in v) + ")")
    lines.append("space directions: " + " ".join(dirs))
    lines.append("kinds: domain domain domain")
    if dt.itemsize > 1:
        lines.append("endian: little")
    lines.append(f"encoding: {encoding}")
    lines.append("space origin: (" + ",".join(f"{float(x):g}" for x in origin) + ")")
    return ("\n".join(lines) + "\n\n").encode("ascii")


def write_nrrd(path: str | Path, slabs: Iterable[np.ndarray], shape: Sequence[int],
               dtype: Any, spacing: Sequence[float], *, encoding: str = "gzip",
               compresslevel: int = 1, origin: Sequence[float] = (0.0, 0.0, 0.0)) -> Path:
    """Write a 3-D NRRD from slabs along the last axis (in order), in bounded memory.

    ``slabs`` must cover ``shape[2]`` planes exactly; each slab is cast to ``dtype`` and
    written little-endian, first index fastest. The file appears under ``path`` only when
    complete.
    """
    path = Path(path)
    dt = np.dtype(dtype).newbyteorder("<")

    def write(tmp: Path) -> None:
        planes = 0
        with open(tmp, "wb") as raw:
            raw.write(nrrd_header_text(shape, dt, spacing, encoding=encoding, origin=origin))
            out: Any = _gzip_writer(raw, compresslevel) if encoding == "gzip" else raw
            try:
                for slab in slabs:
                    slab = np.asarray(slab)
                    if slab.shape[:2] != tuple(shape[:2]):
                        raise ValueError(f"slab shape {slab.shape} does not fit {tuple(shape)}")
                    out.write(np.asarray(slab, dtype=dt).tobytes(order="F"))
                    planes += slab.shape[2]
            finally:
                if out is not raw:
                    out.close()
        if planes != int(shape[2]):
            raise ValueError(f"slabs held {planes} planes, shape needs {shape[2]}")

    return atomic_output(path, write)


def _gzip_writer(raw: IO[bytes], level: int) -> Any:
    """A gzip stream on ``raw`` (isal's igzip when available: several times zlib's speed)."""
    try:
        from isal import igzip
        return igzip.IGzipFile(fileobj=raw, mode="wb", compresslevel=min(level, 3), mtime=0)
    except ImportError:  # pragma: no cover - isal is a dependency
        return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0)
