"""NIfTI volumes (Allen Human Reference Atlas 3D annotation, donor T1/T2 MRI).

The header is read by nibabel; the voxel data by :class:`~atlas_engine.volumes.base.Volume`
in slabs (``.nii`` in place with random access, ``.nii.gz`` inflated as a stream). Scaled data
(``scl_slope`` other than 0/1) is refused for label volumes, since labels must be the stored
values. :func:`write_nifti` writes a volume from slabs in bounded memory.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..atomic import atomic_output
from ..errors import FormatError
from .base import Volume


def _is_gz(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_nifti(path: str | Path, *, labels: bool = False) -> Volume:
    """Open a 3-D NIfTI-1/2 file lazily.

    Parameters
    ----------
    labels : bool
        The volume holds labels: refuse intensity scaling (``scl_slope``/``scl_inter``).

    Raises
    ------
    FormatError
        Not NIfTI, not 3-D (a 4-D file with one volume is accepted), or scaled labels.
    """
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for a bad file
        raise FormatError(path, f"not a readable NIfTI file: {exc}") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise FormatError(path, f"{type(img).__name__} is not NIfTI")
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise FormatError(path, f"image shape {shape}", expected="a 3-D volume")
    hdr = img.header
    # nibabel moves the scaling from the header into the array proxy on load
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    if labels and (slope != 1.0 or inter != 0.0):
        raise FormatError(path, f"label volume with scl_slope {slope}, scl_inter {inter}",
                          expected="unscaled labels")
    dtype = hdr.get_data_dtype()
    offset = int(img.dataobj.offset)
    zooms = tuple(float(z) for z in hdr.get_zooms()[:3])
    gz = _is_gz(path)

    def opener() -> IO[bytes]:
        fh: Any
        if gz:
            try:
                from isal import igzip
                fh = igzip.open(path, "rb")
            except ImportError:  # pragma: no cover - isal is a dependency
                fh = gzip.open(path, "rb")
        else:
            fh = open(path, "rb")
        fh.seek(offset)
        return fh

    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not gz and os.path.getsize(path) - offset < nbytes:
        raise FormatError(path, f"voxel data holds {os.path.getsize(path) - offset:,} bytes",
                          expected=f"{nbytes:,} bytes for shape {shape} of {dtype}")
    return Volume(path=path, shape=shape, dtype=dtype, spacing=zooms,  # type: ignore[arg-type]
                  unit="mm", affine=np.asarray(img.affine, dtype=float),
                  header={"nifti": hdr, "descrip": str(hdr.get("descrip", b""))},
                  open_stream=opener, raw_at=None if gz else (path, offset))


def write_nifti(path: str | Path, slabs: Iterable[np.ndarray], shape: Sequence[int],
                dtype: Any, affine: np.ndarray, *, extra_dims: int | None = None,
                description: str = "") -> Path:
    """Write a NIfTI-1 image from slabs along the last spatial axis, in bounded memory.

    ``shape`` is 3-D, or 4-D ``(x, y, z, n)`` when writing a stack of ``n`` maps; slabs are
    ``(x, y, planes)`` pieces in file order (first index fastest): for a stack, all slabs of
    map 0, then all of map 1, and so on. ``.nii.gz`` is gzip-streamed.
    The header comes from nibabel (``qform``/``sform`` = ``affine``, code 1 / scanner).
    """
    import nibabel as nib

    path = Path(path)
    dt = np.dtype(dtype)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dt)
    hdr.set_data_shape(tuple(int(s) for s in shape))
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm")
    if description:
        hdr["descrip"] = description.encode("ascii", "replace")[:79]
    hdr.set_slope_inter(1.0, 0.0)
    offset = 352
    hdr.set_data_offset(offset)
    gz = path.name.endswith(".gz")

    def write(tmp: Path) -> None:
        total = 0
        with open(tmp, "wb") as raw:
            out: Any = raw
            if gz:
                try:
                    from isal import igzip
                    out = igzip.IGzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0)
                except ImportError:  # pragma: no cover
                    out = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0)
            try:
                hb = hdr.binaryblock
                out.write(hb)
                out.write(b"\0" * (offset - len(hb)))
                for slab in slabs:
                    a = np.asarray(slab, dtype=dt.newbyteorder(hdr.endianness))
                    out.write(a.tobytes(order="F"))
                    total += a.size
            finally:
                if out is not raw:
                    out.close()
        if total != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"slabs held {total} voxels, shape {tuple(shape)} needs "
                             f"{int(np.prod(shape))}")

    return atomic_output(path, write)
