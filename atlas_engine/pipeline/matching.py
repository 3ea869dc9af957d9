"""Sample → region matching on a volumetric MNI atlas (abagen ``matching.AtlasTree``).

The atlas is a 3-D integer label array plus its 4×4 affine (0 = background). Coordinates are
snapped to the atlas grid first (the largest grid value strictly below each coordinate), then
matched with growing radius 0, 1, …, ``tolerance`` mm; the first radius with an acceptable
candidate label decides. Among several candidate labels at that radius:

* without region info, the most frequent label among the voxels within the radius wins, ties go
  to the label with the nearest centroid;
* with region info (``hemisphere`` L/R/B and broad ``structure`` class per label), candidate
  labels of another hemisphere or class are dropped (only the class for bilateral labels) and,
  as abagen 0.1.3 does (``AtlasTree._assign_sample`` counts the *unique* remaining labels
  again, so each counts once), the remaining label with the nearest centroid wins whatever its
  voxel count. ``rule="majority"`` keeps the voxel-count vote here too (abagen's docstring
  describes it; abagen's code does not do it).

Each sample's way of matching is reported with :data:`HOW` codes.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..choices import MATCH_RULES
from ..errors import ConfigError, FormatError
from ..store.ontology import BROAD_CLASSES
from .atlas_affine import axis_aligned

#: How a sample matched (codes returned by :meth:`VolumeAtlas.label_samples` with
#: ``return_how=True``), by code.
HOW = {
    0: "too far",            # no labelled voxel within the tolerance
    1: "inside",             # inside a labelled voxel (radius 0)
    2: "within radius",      # one candidate label (or a clear majority) within r mm
    3: "centroid tie-break",  # several candidate labels within r mm, nearest centroid chosen
    4: "rejected",           # candidates within the tolerance, all of another hemisphere/class
}

_HEMI_ALIASES = {"lh": "L", "l": "L", "left": "L", "rh": "R", "r": "R", "right": "R",
                 "bilateral": "B", "b": "B"}
_CLASS_ALIASES = {"subcortex": "subcortex/brainstem", "brainstem": "subcortex/brainstem"}


def load_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI label image file as ``(int labels (3-D), affine (4×4))``: :func:`image_arrays`
    of the image nibabel reads."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for a bad file
        raise FormatError(path, f"cannot read as NIfTI: {exc}", expected="a NIfTI-1/2 image") from exc
    return image_arrays(img, str(path))


def image_arrays(img: Any, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A label image (nibabel, e.g. ``nib.load(...)`` or one of nilearn's atlases) as ``(int
    labels (3-D), affine (4×4))``: a 4-D image holding one volume read as 3-D, its axes along
    world x, y, z and rounding noise off the affine's diagonal dropped with a warning
    (:func:`~.atlas_affine.axis_aligned`). Errors and the warning name ``name`` (default: the
    image's file, else "atlas image")."""
    name = name or (img.get_filename() if hasattr(img, "get_filename") else None) \
        or "atlas image"
    data = np.asarray(img.dataobj)
    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        data = data.reshape(data.shape[:3])   # (X, Y, Z, 1): one volume, as abagen reads it
    if data.ndim != 3:
        raise FormatError(name, f"atlas has shape {data.shape}",
                          expected="a 3-D label image (or one volume in 4-D)")
    if data.dtype.kind == "f":
        # labels stored as floats: each within abagen's np.allclose tolerance of an integer
        # (1e-8 + 1e-5·|label|) is that integer, on either side (abagen truncates, so it takes
        # 3.0000002 as 3 but refuses 2.9999998); anything else (NaN too) is refused
        near = np.rint(data)
        with np.errstate(invalid="ignore"):
            ok = np.abs(data - near) <= 1e-8 + 1e-5 * np.abs(near)
        if not np.all(ok):
            bad = float(data[~ok].ravel()[0])
            raise FormatError(name, f"atlas has non-integer values (e.g. {bad!r})",
                              expected="integer labels")
        data = near
    try:
        data, affine, note = axis_aligned(data, img.affine)
    except ConfigError as exc:
        raise FormatError(name, str(exc), expected="an axis-aligned affine") from exc
    if note:
        warnings.warn(f"{name}: {note}", stacklevel=3)
    return data.astype(np.int64), affine


#: abagen's broad structural classes (the samples' classes,
#: :data:`~atlas_engine.store.ontology.BROAD_CLASSES`), the values ``structure`` may take in
#: atlas info
ATLAS_CLASSES = tuple(dict.fromkeys(BROAD_CLASSES.values()))


def check_atlas_info(info: pd.DataFrame, source: str | Path | None = None) -> pd.DataFrame:
    """Region info indexed by label id with normalised ``hemisphere`` and ``structure``.

    As abagen's ``check_atlas_info``, the ids come from an ``id`` column or an index named
    ``id``; names and values are read in any case and without surrounding spaces;
    ``hemisphere`` takes L/R/B (or lh, left, right, bilateral, …) and ``structure`` one of
    :data:`ATLAS_CLASSES` (or subcortex, brainstem). Anything else is refused (a class no
    sample has would silently reject every sample near that region); errors name ``source``
    (the info file) when given (:class:`~atlas_engine.errors.FormatError`), else are
    :class:`~atlas_engine.errors.ConfigError`."""

    def refuse(message: str, expected: str) -> Exception:
        if source is None:
            return ConfigError(f"atlas info: {message} (expected {expected})")
        return FormatError(source, message, expected=expected)

    t = info.copy()
    names = {str(c).strip().lower(): c for c in t.columns}
    if "id" in names:
        t = t.set_index(names["id"])
    elif str(t.index.name).lower() != "id":
        raise refuse(f"no id column (columns: {', '.join(map(str, t.columns))})",
                     "columns id, hemisphere and structure")
    t.index.name = "id"
    for col in ("hemisphere", "structure"):
        if col not in names:
            raise refuse(f"no {col} column (columns: {', '.join(map(str, t.columns))})",
                         "columns id, hemisphere and structure")
        t = t.rename(columns={names[col]: col})
    t["hemisphere"] = [_HEMI_ALIASES.get(str(h).strip().lower(), str(h).strip())
                       for h in t["hemisphere"]]
    t["structure"] = [_CLASS_ALIASES.get(str(s).strip().lower(), str(s).strip().lower())
                      for s in t["structure"]]
    bad = sorted(set(t["hemisphere"]) - {"L", "R", "B"})
    if bad:
        raise refuse(f"hemisphere values {bad}", "L, R or B")
    bad = sorted(set(t["structure"]) - set(ATLAS_CLASSES))
    if bad:
        raise refuse(f"structure values {bad}", f"one of {', '.join(ATLAS_CLASSES)}")
    try:
        ids = pd.to_numeric(t.index, errors="raise")
        if not np.all(np.equal(np.mod(ids, 1), 0)):
            raise ValueError
    except (ValueError, TypeError):
        raise refuse("ids that are not integers", "integer label ids") from None
    t.index = pd.Index(np.asarray(ids, dtype=np.int64), name="id")
    return t


class VolumeAtlas:
    """A volumetric label atlas ready for sample matching.

    Parameters
    ----------
    labels : (X, Y, Z) int array
    affine : (4, 4) array, voxel → world (mm); axis-aligned up to rounding noise and axis
        order (:func:`~.atlas_affine.axis_aligned`; oblique affines are refused).
    atlas_info : DataFrame, optional
        Columns id (or index), hemisphere, structure.
    """

    def __init__(
        self, labels: np.ndarray, affine: np.ndarray, atlas_info: pd.DataFrame | None = None
    ) -> None:
        data = np.asarray(labels)
        aff = np.asarray(affine, dtype=np.float64)
        if data.ndim != 3 or aff.shape != (4, 4):
            raise ConfigError("atlas needs a 3-D label array and a 4×4 affine")
        data, aff, note = axis_aligned(data, aff)
        if note:
            warnings.warn(f"atlas: {note}", stacklevel=2)
        self.shape = data.shape
        self.affine = aff
        # voxel-centre world coordinates per axis, as arange(offset, offset + size·n, size)
        self.grid = tuple(
            np.sort(np.arange(aff[k, 3], aff[k, 3] + aff[k, k] * n, aff[k, k]))
            for k, n in enumerate(data.shape)
        )
        nz = np.nonzero(data)
        vox = np.column_stack(nz)
        self.voxel_labels = data[nz].astype(np.int64)
        self.coords = vox.astype(np.float64) @ aff[:3, :3].T + aff[:3, 3]
        # each voxel's row in coords (-1: background) over the box of the labelled voxels
        # (_corner: its first voxel), for the radius searches on the grid
        self._corner = vox.min(axis=0) if len(vox) else np.zeros(3, dtype=np.int64)
        box = vox.max(axis=0) - self._corner + 1 if len(vox) else (0, 0, 0)
        self._index = np.full(tuple(int(v) for v in box), -1,
                              dtype=np.int32 if len(vox) < 2**31 else np.int64)
        self._index[tuple((vox - self._corner).T)] = np.arange(len(vox))
        self.labels = np.unique(self.voxel_labels)
        codes = np.searchsorted(self.labels, self.voxel_labels)
        counts = np.bincount(codes, minlength=len(self.labels)).astype(np.float64)
        self.centroids = np.column_stack(
            [np.bincount(codes, weights=self.coords[:, k], minlength=len(self.labels)) / counts
             for k in range(3)]
        )
        self.atlas_info = None if atlas_info is None else check_atlas_info(atlas_info)
        if self.atlas_info is not None:  # sorted label ids with their hemisphere and class
            order = np.argsort(self.atlas_info.index.to_numpy(), kind="stable")
            self._info_ids = self.atlas_info.index.to_numpy()[order]
            self._info_hemi = self.atlas_info["hemisphere"].to_numpy().astype(str)[order]
            self._info_cls = self.atlas_info["structure"].to_numpy().astype(str)[order]

    @functools.cached_property
    def tree(self) -> Any:
        """A KD-tree of the labelled voxels' coordinates (built on first use: only the
        nearest-voxel queries of ``missing='interpolate'`` need one)."""
        from scipy.spatial import cKDTree

        return cKDTree(self.coords)

    def voxels_within(self, points: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """The labelled voxels within ``radius`` mm of each point (rows of ``coords``), as CSR
        ``(indptr, indices)``: the voxels ``cKDTree(coords).query_ball_point`` finds
        (:mod:`atlas_engine.kernels.gridball`)."""
        from ..kernels.gridball import voxels_within

        step = np.diag(self.affine[:3, :3])
        # the box's origin only bounds the voxels scanned; distances use coords themselves
        return voxels_within(self._index, self.coords, self.affine[:3, 3] + step * self._corner,
                             step, points, radius)

    # ------------------------------------------------------------------------------------
    def snap(self, xyz: np.ndarray) -> np.ndarray:
        """Each coordinate moved to the largest grid value below it (abagen's flooring; a
        value at or below the first grid value wraps to the last, as in abagen)."""
        xyz = np.asarray(xyz, dtype=np.float64)
        out = np.empty_like(xyz)
        for k in range(3):
            idx = self.grid[k]
            out[:, k] = idx[np.searchsorted(idx, xyz[:, k]) - 1]
        return out

    def _allowed(self, cand: np.ndarray, hemi: str | None, cls: str | None) -> np.ndarray:
        if self.atlas_info is None or hemi is None:
            return np.ones(len(cand), dtype=bool)
        ids = self._info_ids
        pos = np.minimum(np.searchsorted(ids, cand), len(ids) - 1)
        if len(ids) == 0 or not np.array_equal(ids[pos], cand):
            return np.ones(len(cand), dtype=bool)
        h = self._info_hemi[pos]
        same_cls = self._info_cls[pos] == str(cls)
        return np.where(h == "B", same_cls, same_cls & (h == hemi))

    def _assign(self, voxels: np.ndarray, point: np.ndarray, hemi, cls,
                majority: bool = False) -> tuple[int, int]:
        """``(label, how)`` for one sample from the atlas voxels within the radius."""
        labs, counts = np.unique(self.voxel_labels[voxels], return_counts=True)
        filtered = self.atlas_info is not None and hemi is not None
        if filtered:
            ok = self._allowed(labs, hemi, cls)
            labs, counts = labs[ok], counts[ok]
            if not majority:  # abagen: the unique allowed labels are counted again
                counts = np.ones_like(counts)
        if labs.size == 0:
            return 0, 4
        top = np.flatnonzero(counts == counts.max())
        if top.size == 1:
            return int(labs[top[0]]), 2
        # a tie goes to the nearest centroid among *all* candidate labels (abagen's
        # closest_centroid over every label within the radius, not only the tied ones)
        cents = self.centroids[np.searchsorted(self.labels, labs)]
        d = np.sum(np.abs(cents - point) ** 2, axis=-1) ** 0.5  # as scipy's distance_matrix
        return int(labs[np.argmin(d)]), 3

    def label_samples(
        self,
        xyz: np.ndarray,
        tolerance: float = 2,
        hemisphere: np.ndarray | None = None,
        structure: np.ndarray | None = None,
        snap: bool = True,
        rule: str = "abagen",
        return_how: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Atlas label per sample (0 = unmatched).

        Parameters
        ----------
        xyz : (N, 3) MNI coordinates.
        tolerance : mm; radii 0, 1, …, floor(|tolerance|) are tried in turn.
        hemisphere, structure : (N,) per-sample hemisphere (L/R/B) and broad class, used
            with ``atlas_info``.
        snap : floor coordinates to the atlas grid first (abagen does for group atlases).
        rule : "abagen" (default; with atlas_info the nearest-centroid candidate wins) or
            "majority" (the voxel-count vote also with atlas_info). See the module docstring.
        return_how : also return how each sample matched (:data:`HOW` codes, int8) and the
            radius (mm) that decided it (-1 when no voxel was within the tolerance).

        Returns
        -------
        labels : (N,) int64, or ``(labels, how, radius)`` with ``return_how``.
        """
        if rule not in MATCH_RULES:
            raise ConfigError(f"match rule must be one of {', '.join(MATCH_RULES)}, got {rule!r}")
        majority = rule == "majority"
        pts = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        if snap:
            pts = self.snap(pts)
        n = len(pts)
        labels = np.zeros(n, dtype=np.int64)
        how = np.zeros(n, dtype=np.int8)
        radius = np.full(n, -1, dtype=np.int64)
        hemi = [None] * n if hemisphere is None else list(hemisphere)
        cls = [None] * n if structure is None else list(structure)
        tol = 0
        todo = np.arange(n)
        # samples within reach of a single voxel (every sample at radius 0, most at 1) get
        # that voxel's label when allowed, all at once: what _assign returns for one voxel
        filtered = self.atlas_info is not None and hemisphere is not None
        strings = not filtered or all(isinstance(h, str) for h in hemi)
        hemi_arr, cls_arr = np.asarray(hemi, dtype=object), np.asarray(cls, dtype=object)
        while tol <= abs(tolerance) and todo.size:
            indptr, found = self.voxels_within(pts[todo], tol)
            sizes = np.diff(indptr)
            radius[todo[sizes > 0]] = tol
            if strings:
                one = np.flatnonzero(sizes == 1)
                voxel = found[indptr[one]]
                lab = self.voxel_labels[voxel]
                if filtered:
                    pick = todo[one]
                    lab = np.where(self._allowed_each(lab, hemi_arr[pick], cls_arr[pick]), lab,
                                   0)
                labels[todo[one]] = lab
                how[todo[one]] = np.where(lab != 0, 1 if tol == 0 else 2, 4)
                many = np.flatnonzero(sizes > 1)
            else:
                many = np.flatnonzero(sizes > 0)
            for j in many.tolist():
                i = int(todo[j])
                labels[i], how[i] = self._assign(found[indptr[j]:indptr[j + 1]], pts[i], hemi[i],
                                                 cls[i], majority)
                if tol == 0 and how[i] == 2:
                    how[i] = 1
            todo = np.flatnonzero(labels == 0)
            tol += 1
        if return_how:
            return labels, how, radius
        return labels

    def _allowed_each(self, lab: np.ndarray, hemi: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """:meth:`_allowed` of one candidate label per sample, for many samples at once."""
        ids = self._info_ids
        if len(ids) == 0:
            return np.ones(len(lab), dtype=bool)
        pos = np.minimum(np.searchsorted(ids, lab), len(ids) - 1)
        known = ids[pos] == lab          # labels missing from atlas_info are not filtered
        h = self._info_hemi[pos]
        same_cls = self._info_cls[pos] == np.asarray([str(c) for c in cls.tolist()])
        ok = np.where(h == "B", same_cls, same_cls & (h == hemi.astype(str)))
        return ~known | ok

    def nearest_to_centroids(
        self,
        sample_xyz: np.ndarray,
        empty: np.ndarray,
        hemisphere: np.ndarray | None = None,
        structure: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """For each label in ``empty``, the sample nearest its centroid and the distance
        (-1 / inf when no sample of the same hemisphere and class exists)."""
        pts = np.asarray(sample_xyz, dtype=np.float64).reshape(-1, 3)
        empty = np.asarray(empty, dtype=np.int64)
        cents = self.centroids[np.searchsorted(self.labels, empty)]
        idx = np.full(len(empty), -1, dtype=np.int64)
        dist = np.full(len(empty), np.inf)
        if len(pts) == 0:
            return idx, dist
        use_info = self.atlas_info is not None and hemisphere is not None and structure is not None
        groups = [(np.arange(len(empty)), np.arange(len(pts)))]
        if use_info:
            info = self.atlas_info.reindex(empty)
            h_lab = info["hemisphere"].to_numpy().astype(str)
            c_lab = info["structure"].to_numpy().astype(str)
            h_smp = np.asarray(hemisphere).astype(str)
            c_smp = np.asarray(structure).astype(str)
            groups = []
            for h, c in sorted(set(zip(h_lab.tolist(), c_lab.tolist(), strict=True))):
                groups.append((np.flatnonzero((h_lab == h) & (c_lab == c)),
                               np.flatnonzero((h_smp == h) & (c_smp == c))))
        from .interpolate import nearest_first

        for rows, cand in groups:
            if not cand.size or not rows.size:
                continue
            # the nearest sample (first in sample order on a tie), by KD-tree
            j, _ = nearest_first(pts[cand], np.arange(cand.size), cents[rows])
            idx[rows] = cand[j]
            dist[rows] = np.linalg.norm(pts[cand[j]] - cents[rows], axis=1)
        return idx, dist


def inverse_distance_weights(dist: np.ndarray) -> np.ndarray:
    """``1/d``; when any distance is 0 only the zero-distance entries count (weight 1)."""
    d = np.asarray(dist, dtype=np.float64)
    with np.errstate(divide="ignore"):
        w = 1.0 / d
    inf = np.isinf(w)
    return inf.astype(np.float64) if inf.any() else w
