"""The atlas argument of :func:`~.expression.get_expression_data` as a :class:`VolumeAtlas`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .matching import VolumeAtlas, check_atlas_info, image_arrays, load_nifti


def resolve_atlas(atlas: Any, atlas_info: Any) -> VolumeAtlas:
    from .atlases import resolve

    info = None
    if isinstance(atlas_info, pd.DataFrame):
        info = atlas_info
    elif atlas_info is not None:
        path = resolve(atlas_info, "info")
        info = check_atlas_info(pd.read_csv(path), source=path)   # errors name the file
    if isinstance(atlas, (str, Path)):
        atlas = resolve(atlas, "image")
    if isinstance(atlas, VolumeAtlas):
        if info is not None:
            return VolumeAtlas(*_atlas_arrays(atlas), info)
        return atlas
    if isinstance(atlas, tuple) and len(atlas) == 2 and np.ndim(atlas[0]) == 3:
        return VolumeAtlas(atlas[0], atlas[1], info)                # (labels, affine)
    if hasattr(atlas, "dataobj") and hasattr(atlas, "affine"):   # a nibabel image
        return VolumeAtlas(*image_arrays(atlas), info)
    if isinstance(atlas, (dict, list, tuple)):      # abagen's per-donor or GIFTI forms
        raise ConfigError(
            "per-donor (native space) and surface atlases are not supported: give one "
            "volumetric MNI atlas (a NIfTI path, a nibabel image, (labels, affine) or a "
            "shipped atlas name)")
    labels, affine = load_nifti(atlas)
    return VolumeAtlas(labels, affine, info)


def _atlas_arrays(atlas: VolumeAtlas) -> tuple[np.ndarray, np.ndarray]:
    vol = np.zeros(atlas.shape, dtype=np.int64)
    inv = np.linalg.inv(atlas.affine)
    ijk = np.rint(atlas.coords @ inv[:3, :3].T + inv[:3, 3]).astype(np.int64)
    vol[tuple(ijk.T)] = atlas.voxel_labels
    return vol, atlas.affine

