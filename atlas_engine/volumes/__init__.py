"""Reference atlas volumes: NRRD (CCFv3), MetaImage (old P56 annotation zip) and NIfTI
(human reference atlas, donor MRI), read in slabs or as lazy Dask arrays; voxel counts per
structure; structure masks."""
from __future__ import annotations

from pathlib import Path

from ..errors import FormatError
from .base import Volume

__all__ = ["Volume", "open_volume"]


def open_volume(path: str | Path, *, labels: bool = True) -> Volume:
    """Open a volume, its format chosen by the file name.

    Only the header is read; the voxels are read in slabs or as a lazy Dask array.

    Parameters
    ----------
    path : str or Path
        The volume: ``.nrrd``/``.nhdr`` (NRRD, e.g. the CCFv3 annotation), ``.zip``/``.mhd``
        (MetaImage, e.g. the old P56 annotation zip) or ``.nii``/``.nii.gz`` (NIfTI).
    labels : bool, default True
        The volume holds labels: refuse NIfTI data with intensity scaling
        (``scl_slope``/``scl_inter``), which labels cannot have. False for intensity images
        such as donor MRI.

    Returns
    -------
    Volume
        Shape, data type, voxel spacing and unit, affine, and slab / Dask access to the voxels.

    Raises
    ------
    FormatError
        No such file, an unknown format, or a header the reader refuses (scaled labels among
        them).
    """
    p = Path(path)
    name = p.name.lower()
    if not p.is_file():
        raise FormatError(p, "no such file")
    if name.endswith(".nrrd") or name.endswith(".nhdr"):
        from .nrrd import open_nrrd
        return open_nrrd(p)
    if name.endswith((".zip", ".mhd")):
        from .metaimage import open_metaimage
        return open_metaimage(p)
    if name.endswith((".nii", ".nii.gz")):
        from .nifti import open_nifti
        return open_nifti(p, labels=labels)
    raise FormatError(p, "unknown volume format", expected=".nrrd, .zip/.mhd (MetaImage) or "
                      ".nii/.nii.gz")
