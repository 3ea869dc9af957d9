"""``Volume``: a 3-D image on disk read in slabs, streamed or as a lazy Dask array.

Every format the engine reads (NRRD, MetaImage, NIfTI) stores voxels with the first index
varying fastest (Fortran order). A *slab* is a run of whole planes along the last axis, so it
is one contiguous byte range: slabs are read with ``pread`` from uncompressed data (random
access, any slab in any order, from any thread) or decompressed in order from a gzip/deflate
stream. :meth:`Volume.to_dask` needs random access: compressed data is first inflated once to
a cache file (streamed, never whole in memory).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..atomic import atomic_output
from ..errors import FormatError

#: Default bytes of one slab (whole planes along the last axis).
SLAB_BYTES = 64 << 20


@dataclass
class Volume:
    """A 3-D volume on disk (see the module docstring).

    Attributes
    ----------
    path : Path
        The file named in errors.
    shape : tuple of int
        Array shape, first index fastest on disk (CCF: AP, DV, ML).
    dtype : numpy.dtype
        On-disk element type (with its byte order).
    spacing : tuple of float
        Voxel size per axis, in ``unit``.
    unit : str
        ``"um"`` (NRRD/MetaImage CCF volumes) or ``"mm"`` (NIfTI).
    affine : (4, 4) array
        Voxel index → space coordinates.
    header : dict
        The format's parsed header.
    """

    path: Path
    shape: tuple[int, int, int]
    dtype: np.dtype
    spacing: tuple[float, float, float]
    unit: str
    affine: np.ndarray
    header: dict[str, Any]
    #: Opens a stream positioned at the first data byte (decompressing when needed).
    open_stream: Callable[[], IO[bytes]] = field(repr=False, default=None)  # type: ignore[assignment]
    #: (file, byte offset) of uncompressed data, when random access is possible.
    raw_at: tuple[Path, int] | None = None
    _cache_dir: Path | None = field(default=None, repr=False)

    # -- sizes -----------------------------------------------------------------------------
    @property
    def plane_voxels(self) -> int:
        return int(self.shape[0]) * int(self.shape[1])

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def voxel_volume(self) -> float:
        """Volume of one voxel in ``unit``³."""
        return float(np.prod(self.spacing))

    def slab_depth(self, slab_bytes: int = SLAB_BYTES) -> int:
        """Planes per slab so that one slab is about ``slab_bytes``."""
        return max(1, min(int(self.shape[2]),
                          slab_bytes // max(1, self.plane_voxels * self.dtype.itemsize)))

    def _native(self, flat: np.ndarray, planes: int) -> np.ndarray:
        arr = flat.reshape((self.shape[0], self.shape[1], planes), order="F")
        if not self.dtype.isnative:
            arr = arr.astype(self.dtype.newbyteorder("="))
        return arr

    # -- reading ---------------------------------------------------------------------------
    def slabs(self, depth: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_plane, array)`` for consecutive slabs along the last axis, in order.

        Compressed data is inflated as it goes (memory: one slab). Raises
        :class:`FormatError` when the data holds fewer or more bytes than the header's sizes.
        """
        depth = depth or self.slab_depth()
        plane_bytes = self.plane_voxels * self.dtype.itemsize
        n = int(self.shape[2])
        with self.open_stream() as fh:
            got = 0
            for z0 in range(0, n, depth):
                planes = min(depth, n - z0)
                want = planes * plane_bytes
                buf = bytearray(want)
                view = memoryview(buf)
                pos = 0
                try:
                    while pos < want:
                        k = fh.readinto(view[pos:])
                        if not k:
                            break
                        pos += k
                except (OSError, EOFError, ValueError) as exc:
                    raise FormatError(self.path, f"voxel data unreadable after {got + pos:,} "
                                      f"bytes: {exc}") from None
                got += pos
                if pos < want:
                    raise FormatError(self.path, f"voxel data ends after {got:,} bytes",
                                      expected=f"{self.nbytes:,} bytes for sizes "
                                      f"{' '.join(map(str, self.shape))} of {self.dtype}")
                yield z0, self._native(np.frombuffer(buf, dtype=self.dtype), planes)
            try:
                extra = fh.read(1)
            except (OSError, EOFError, ValueError):
                extra = b""
            if extra:
                raise FormatError(self.path, "voxel data is longer than the header's sizes",
                                  expected=f"{self.nbytes:,} bytes for sizes "
                                  f"{' '.join(map(str, self.shape))} of {self.dtype}")

    def read(self) -> np.ndarray:
        """The whole volume as one numpy array (small volumes only)."""
        out = np.empty(self.shape, dtype=self.dtype.newbyteorder("="), order="F")
        for z0, slab in self.slabs():
            out[:, :, z0:z0 + slab.shape[2]] = slab
        return out

    def _random_access(self, cache_dir: str | Path | None) -> tuple[Path, int]:
        if self.raw_at is not None:
            return self.raw_at
        base = Path(cache_dir) if cache_dir is not None else None
        if self._cache_dir is None:
            d = Path(tempfile.mkdtemp(prefix="atlas-volume-", dir=base))
            self._cache_dir = d
            weakref.finalize(self, shutil.rmtree, d, True)
        target = self._cache_dir / (self.path.name + ".raw")
        if not target.exists():
            def write(tmp: Path) -> None:
                with open(tmp, "wb") as out:
                    for _, slab in self.slabs():
                        out.write(np.asfortranarray(slab.astype(self.dtype, copy=False))
                                  .tobytes("F"))

            atomic_output(target, write)
        return target, 0

    def to_dask(self, depth: int | None = None, cache_dir: str | Path | None = None) -> Any:
        """A lazy Dask array of the volume, chunked in slabs along the last axis.

        Uncompressed data is read in place; compressed data is inflated once into a cache file
        (under ``cache_dir``, default the system temporary directory; removed with this object).
        """
        import dask.array as da

        path, offset = self._random_access(cache_dir)
        size = os.path.getsize(path)
        if size - offset < self.nbytes:
            raise FormatError(self.path, f"voxel data holds {size - offset:,} bytes",
                              expected=f"{self.nbytes:,} bytes for sizes "
                              f"{' '.join(map(str, self.shape))} of {self.dtype}")
        src = _SlabSource(path, offset, self.shape, self.dtype)
        depth = depth or self.slab_depth()
        return da.from_array(src, chunks=(self.shape[0], self.shape[1], depth), asarray=False,
                             lock=False, fancy=False, name=f"volume-{path}-{offset}-{depth}")


class _SlabSource:
    """Array-like over uncompressed Fortran-order data; reads whole planes with ``pread``."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, int, int],
                 dtype: np.dtype) -> None:
        self.path, self.offset = Path(path), int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype.newbyteorder("=") if not dtype.isnative else dtype
        self._disk = dtype
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        z0, z1, step = key[2].indices(self.shape[2])
        plane = self.shape[0] * self.shape[1] * self._disk.itemsize
        n = max(0, z1 - z0)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            buf = bytearray(n * plane)
            view = memoryview(buf)
            pos = 0
            while pos < len(buf):
                k = os.preadv(fd, [view[pos:]], self.offset + z0 * plane + pos)
                if not k:
                    raise FormatError(self.path, f"voxel data ends at plane {z0 + pos // plane}")
                pos += k
        finally:
            os.close(fd)
        arr = np.frombuffer(buf, dtype=self._disk).reshape(
            (self.shape[0], self.shape[1], n), order="F")
        if not self._disk.isnative:
            arr = arr.astype(self.dtype)
        return arr[key[0], key[1], ::step]
