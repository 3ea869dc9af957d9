"""An atlas's affine as the axis-aligned grid that sample matching works on.

Matching (abagen's, :mod:`.matching`) snaps samples to the atlas grid one axis at a time, so
it needs each voxel axis to run along one world axis. Real label images do not always say so
exactly: an affine written through float32 or through direction cosines carries rounding noise
off the diagonal (1e-16 to 1e-7), and some images store their axes in another order (the
world's x along the second voxel axis, say). Both are the same grid as an axis-aligned one:

* off-diagonal terms that move no voxel of the volume by more than :data:`NOISE_SHIFT` of a
  voxel are dropped (and said: a warning);
* voxel axes are put in world x, y, z order (the labels transposed with the affine's columns);
  a negative voxel size (a flipped axis) is kept as it is.

A rotated (oblique) affine is refused. abagen 0.1.3 takes any affine but builds its grid from
the non-zero entries of the affine's 3×3 part in row order, so with any term off the diagonal,
even 1e-16, its grid is wrong and no sample matches a region (measured on its own
Desikan–Killiany atlas: 195 of 200 samples matched with the exact affine, none with 1e-16,
1e-9 or 1e-5 added off the diagonal, none rotated by 2°); with permuted axes it pairs one
axis's voxel size with another's length (11 of 300 samples labelled otherwise).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

#: off-diagonal terms are rounding noise when the largest shift they cause anywhere in the
#: volume is below this fraction of the smallest voxel size
NOISE_SHIFT = 1e-3


def axis_aligned(labels: np.ndarray, affine: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, str | None]:
    """``(labels, affine, note)`` with the voxel axes along world x, y, z and the 3×3 part of
    the affine diagonal; ``note`` says what was dropped (None when nothing was).

    Parameters
    ----------
    labels : (X, Y, Z) array
        The label image.
    affine : (4, 4) array
        Voxel → world (mm).

    Raises
    ------
    ConfigError
        The affine is not finite, degenerate, or rotated by more than rounding noise.
    """
    aff = np.asarray(affine, dtype=np.float64)
    lin = aff[:3, :3]
    if not np.all(np.isfinite(aff)):
        raise ConfigError("atlas affine has values that are not finite")
    # for each world axis (row), the voxel axis (column) that carries it
    cols = np.argmax(np.abs(lin), axis=1)
    main = lin[np.arange(3), cols]
    if sorted(cols.tolist()) != [0, 1, 2] or np.any(main == 0):
        raise ConfigError("atlas affine is degenerate or oblique (no voxel axis along each "
                          "world axis); resample the atlas to an axis-aligned grid")
    rest = lin.copy()
    rest[np.arange(3), cols] = 0.0
    extent = np.asarray(labels.shape, dtype=np.float64) - 1
    # the largest distance (mm) the other terms move a voxel anywhere in the volume
    shift = float(np.max(np.abs(rest) @ np.maximum(extent, 0)))
    voxel = float(np.min(np.abs(main)))
    if shift > NOISE_SHIFT * voxel:
        raise ConfigError(
            f"atlas affine is oblique (its off-diagonal terms move voxels by up to "
            f"{shift:.3g} mm); resample the atlas to an axis-aligned grid, e.g. nilearn's "
            f"resample_img with a diagonal target_affine")
    notes = []
    if shift > 0:
        notes.append(f"off-diagonal affine terms up to {np.max(np.abs(rest)):.3g} dropped as "
                     f"rounding noise (they move no voxel more than {shift:.3g} mm)")
    data = labels
    if cols.tolist() != [0, 1, 2]:
        data = np.ascontiguousarray(np.transpose(labels, cols))
    clean = np.eye(4)
    clean[:3, :3] = np.diag(main)
    clean[:3, 3] = aff[:3, 3]
    return data, clean, "; ".join(notes) or None
