"""MetaImage volumes: the old P56 mouse annotation zip (well-known file 197642854).

That archive holds ``annotation.mhd`` (a ``key = value`` text header) and ``annotation.raw``
(uint32 voxels, first index fastest, 25 µm; shared more_datasets.md §2.2). It is read straight
from the zip: a stored member in place (random access), a deflated one as a stream. A loose
``.mhd`` next to its data file is read the same way.

:func:`write_metaimage_zip` writes such an archive (used by the generator).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..atomic import atomic_output
from ..errors import FormatError
from .base import Volume

_ELEMENT_TYPES = {
    "MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2",
    "MET_UINT": "u4", "MET_INT": "i4", "MET_ULONG_LONG": "u8", "MET_LONG_LONG": "i8",
    "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}
_NAMES = {v: k for k, v in _ELEMENT_TYPES.items()}


def parse_mhd(text: str, source: str | Path) -> dict[str, str]:
    """``key = value`` lines → dict (keys as written); a line without ``=`` is refused."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, eq, value = line.partition("=")
        if not eq:
            raise FormatError(source, f"line {line.strip()[:40]!r} has no '='", line=n,
                              expected="key = value")
        out[key.strip()] = value.strip()
    return out


def _volume_from_header(h: dict[str, str], source: Path,
                        ) -> tuple[tuple[int, int, int], np.dtype, tuple[float, ...], str]:
    def need(key: str) -> str:
        if key not in h:
            raise FormatError(source, f"MetaImage header lacks {key}")
        return h[key]

    if int(need("NDims")) != 3:
        raise FormatError(source, f"NDims {h['NDims']}", expected="3")
    try:
        dims = tuple(int(x) for x in need("DimSize").split())
    except ValueError:
        raise FormatError(source, f"DimSize {h['DimSize']!r}", expected="3 integers") from None
    if len(dims) != 3 or min(dims) < 1:
        raise FormatError(source, f"DimSize {h['DimSize']!r}", expected="3 positive integers")
    et = need("ElementType").upper()
    if et not in _ELEMENT_TYPES:
        raise FormatError(source, f"ElementType {et}", expected=", ".join(_ELEMENT_TYPES))
    msb = h.get("BinaryDataByteOrderMSB", h.get("ElementByteOrderMSB", "False")).lower() == "true"
    dt = np.dtype(_ELEMENT_TYPES[et]).newbyteorder(">" if msb else "<")
    if h.get("CompressedData", "False").lower() == "true":
        raise FormatError(source, "CompressedData = True is not supported",
                          expected="CompressedData = False")
    if int(h.get("HeaderSize", "0") or 0) not in (0,):
        raise FormatError(source, f"HeaderSize {h['HeaderSize']}", expected="0")
    sp = h.get("ElementSpacing", h.get("ElementSize", "1 1 1")).split()
    spacing = tuple(float(x) for x in sp) if len(sp) == 3 else (1.0, 1.0, 1.0)
    return dims, dt, spacing, need("ElementDataFile")  # type: ignore[return-value]


def open_metaimage(path: str | Path, *, spacing_unit: str = "um") -> Volume:
    """Open a MetaImage volume: a zip holding one ``.mhd`` and its data, or a ``.mhd`` file.

    The old Allen annotation gives ``ElementSpacing`` in µm (25 25 25); ``spacing_unit``
    records the unit.

    Raises
    ------
    FormatError
        No ``.mhd``, a missing data member, an unsupported header or a data size that does not
        match ``DimSize`` × the element size.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        zf = zipfile.ZipFile(path)
        try:
            mhds = [n for n in zf.namelist() if n.lower().endswith(".mhd")]
            if len(mhds) != 1:
                raise FormatError(path, f"{len(mhds)} .mhd members",
                                  expected="one MetaImage header (annotation.mhd)")
            src = f"{path}:{mhds[0]}"
            h = parse_mhd(zf.read(mhds[0]).decode("ascii", "replace"), src)
            dims, dt, spacing, data_name = _volume_from_header(h, Path(src))
            folder = mhds[0].rpartition("/")[0]
            member = f"{folder}/{data_name}" if folder else data_name
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise FormatError(path, f"data member {member!r} named by {mhds[0]} is missing"
                                  ) from None
        finally:
            zf.close()
        nbytes = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
        if info.file_size != nbytes:
            raise FormatError(f"{path}:{member}", f"holds {info.file_size:,} bytes",
                              expected=f"{nbytes:,} bytes for DimSize "
                              f"{' '.join(map(str, dims))} of {h['ElementType']}")

        def open_member() -> IO[bytes]:
            z = zipfile.ZipFile(path)
            return _MemberStream(z, z.open(member))

        raw_at = None
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as fh:
                fh.seek(info.header_offset)
                local = fh.read(30)
                name_len = int.from_bytes(local[26:28], "little")
                extra_len = int.from_bytes(local[28:30], "little")
            raw_at = (path, info.header_offset + 30 + name_len + extra_len)
        return _make(path, dims, dt, spacing, spacing_unit, h, open_member, raw_at)

    h = parse_mhd(path.read_text("ascii", "replace"), path)
    dims, dt, spacing, data_name = _volume_from_header(h, path)
    data = path.parent / data_name
    if not data.is_file():
        raise FormatError(path, f"data file {data_name!r} is missing")
    nbytes = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
    if data.stat().st_size != nbytes:
        raise FormatError(data, f"holds {data.stat().st_size:,} bytes",
                          expected=f"{nbytes:,} bytes for DimSize {' '.join(map(str, dims))}")
    return _make(path, dims, dt, spacing, spacing_unit, h, lambda: open(data, "rb"), (data, 0))


def _make(path: Path, dims: tuple[int, int, int], dt: np.dtype, spacing: tuple[float, ...],
          unit: str, h: dict[str, str], opener: Any, raw_at: tuple[Path, int] | None) -> Volume:
    affine = np.diag([*spacing, 1.0])
    off = h.get("Offset", h.get("Position", "")).split()
    if len(off) == 3:
        affine[:3, 3] = [float(x) for x in off]
    return Volume(path=path, shape=dims, dtype=dt, spacing=tuple(spacing),  # type: ignore[arg-type]
                  unit=unit, affine=affine, header=dict(h), open_stream=opener, raw_at=raw_at)


class _MemberStream(io.RawIOBase):
    def __init__(self, zf: zipfile.ZipFile, member: IO[bytes]) -> None:
        super().__init__()
        self._zf, self._m = zf, member

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            data = self._m.read(len(b))
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise OSError(f"zip member damaged ({exc})") from None
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._m.close()
            self._zf.close()
        finally:
            super().close()


def write_metaimage_zip(path: str | Path, slabs: Iterable[np.ndarray], shape: Sequence[int],
                        dtype: Any, spacing: Sequence[float], *, name: str = "annotation",
                        compress: bool = True) -> Path:
    """Write ``name.mhd`` + ``name.raw`` into a zip (the layout of WKF 197642854), streamed."""
    path = Path(path)
    dt = np.dtype(dtype).newbyteorder("<")
    header = "\n".join([
        "ObjectType = Image", "NDims = 3", "BinaryData = True",
        "BinaryDataByteOrderMSB = False", "CompressedData = False",
        "TransformMatrix = 1 0 0 0 1 0 0 0 1", "Offset = 0 0 0", "CenterOfRotation = 0 0 0",
        "ElementSpacing = " + " ".join(f"{float(s):g}" for s in spacing),
        "DimSize = " + " ".join(str(int(s)) for s in shape),
        f"ElementType = {_NAMES[dt.kind + str(dt.itemsize)]}",
        f"ElementDataFile = {name}.raw", ""])
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED

    def write(tmp: Path) -> None:
        planes = 0
        with zipfile.ZipFile(tmp, "w", compression=method,
                             compresslevel=1 if compress else None, allowZip64=True) as zf:
            zf.writestr(f"{name}.mhd", header)
            info = zipfile.ZipInfo(f"{name}.raw", (2012, 1, 1, 0, 0, 0))
            info.compress_type = method
            with zf.open(info, "w", force_zip64=True) as out:
                for slab in slabs:
                    out.write(np.asarray(slab, dtype=dt).tobytes(order="F"))
                    planes += np.asarray(slab).shape[2]
        if planes != int(shape[2]):
            raise ValueError(f"slabs held {planes} planes, shape needs {shape[2]}")

    return atomic_output(path, write)
