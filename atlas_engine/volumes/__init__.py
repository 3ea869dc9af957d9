"""Reference atlas volumes: NRRD (CCFv3), MetaImage (old P56 annotation zip) and NIfTI
(human reference atlas, donor MRI), read in slabs or as lazy Dask arrays; voxel counts per
structure; structure masks."""
from __future__ import annotations

from pathlib import Path

from ..errors import FormatError
from .base import Volume

__all__ = ["Volume", "open_volume"]


def open_volume(path: str | Path, *, labels: bool = True) -> Volume:
    """Open a volume by its name: ``.nrrd``, ``.zip``/``.mhd`` (MetaImage) or
    ``.nii``/``.nii.gz``; ``labels`` refuses scaled NIfTI data."""
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
