"""Where the reference volumes live (pure strings and constants, no I/O).

Mouse CCFv3 (AllenSDK ``ReferenceSpaceApi`` layout, shared more_datasets.md §2.1)::

    {download}/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/annotation_{res}.nrrd

Human reference atlas 3D (2020, v1; §2.4)::

    {download}/informatics-archive/allen_human_reference_atlas_3d_2020/version_1/annotation_full.nii.gz
"""

from __future__ import annotations

#: Host of the informatics archive (the real one; mirrors are given with ``--base-url``).
DOWNLOAD_BASE_URL = "http://download.alleninstitute.org"

MOUSE_CCF_DIR = "informatics-archive/current-release/mouse_ccf/annotation/ccf_2017"
HUMAN_ATLAS_DIR = "informatics-archive/allen_human_reference_atlas_3d_2020/version_1"

#: CCFv3 annotation shapes (AP, DV, ML) per resolution in µm.
CCF_SHAPES: dict[int, tuple[int, int, int]] = {
    10: (1320, 800, 1140), 25: (528, 320, 456), 50: (264, 160, 228), 100: (132, 80, 114),
}

#: Published SHA-256 of real files (BICCN cell-locator reference-atlases.md); checked when the
#: file comes from the real archive.
KNOWN_SHA256: dict[str, str] = {
    f"{MOUSE_CCF_DIR}/annotation_25.nrrd":
        "c620cbcc562183e4dcd40250d440130501781f74b41de35b1c1bdabace290c42",
    f"{HUMAN_ATLAS_DIR}/annotation_full.nii.gz":
        "2b05581e39c44f2623d9b0a69f64e3df0823c20d054abef92973812313335dc3",
}


def ccf_annotation_name(resolution: int) -> str:
    """``annotation_{res}.nrrd`` for 10, 25, 50 or 100 µm."""
    if resolution not in CCF_SHAPES:
        raise ValueError(f"CCF resolution must be one of {sorted(CCF_SHAPES)}, not {resolution}")
    return f"annotation_{resolution}.nrrd"


def archive_url(base_url: str, rel: str) -> str:
    """``{base}/{rel}`` for a path under the informatics archive."""
    return f"{base_url.rstrip('/')}/{rel.lstrip('/')}"


def mri_file_name(donor_id: int, kind: str) -> str:
    """Saved name of a donor's T1/T2 NIfTI well-known file."""
    return f"mri_donor{int(donor_id)}_{kind}.nii.gz"
