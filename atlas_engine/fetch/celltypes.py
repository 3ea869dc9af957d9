"""What ``fetch --what celltypes:<dataset>`` downloads (planning only; the Downloader does the rest).

* 2018 zips (``human-mtg``, ``mouse-visp``): the well-known file, saved under its zip name in
  DEST (from ``celltypes.brain-map.org`` unless a base URL is given);
* portal sets (``human-m1``, ``human-mca``, ``mouse-ctx-hpf-10x``, ...): every file of the set
  from the download bucket (``{bucket}/{prefix}/{file}``), saved under ``DEST/{prefix}/`` (its own
  manifest), the folder ``atlas-engine convert`` then reads.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..celltypes.datasets import BUCKET_URL, CELLTYPES_API_URL, bucket_url, get_dataset
from ..errors import ConfigError
from ..sources.urls import well_known_file_url
from .download import DownloadSpec

PREFIX = "celltypes:"


def split_what(items: Iterable[str]) -> tuple[list[str], list[str]]:
    """``--what`` items → (the AHBA kinds, the cell-types data set names)."""
    kinds: list[str] = []
    sets: list[str] = []
    for item in items:
        text = item.strip()
        if text.lower().startswith(PREFIX):
            name = text[len(PREFIX):].strip()
            if not name:
                raise ConfigError("--what celltypes:<dataset> needs a data set name")
            sets.append(get_dataset(name).name)
        elif text:
            kinds.append(text)
    return kinds, list(dict.fromkeys(sets))


def plan_celltypes(names: Iterable[str], base_url: str | None) -> list[tuple[str, DownloadSpec]]:
    """``(subfolder, spec)`` for every file of the named data sets ("" = DEST itself)."""
    out: list[tuple[str, DownloadSpec]] = []
    for name in names:
        ds = get_dataset(name)
        if ds.layout == "zip2018":
            assert ds.wkf_id is not None and ds.zip_name is not None
            url = well_known_file_url(base_url or CELLTYPES_API_URL, ds.wkf_id)
            out.append(("", DownloadSpec(url, ds.zip_name, "zip", ds.wkf_id)))
        else:
            for f in ds.files:
                out.append((str(ds.bucket_prefix),
                            DownloadSpec(bucket_url(base_url or BUCKET_URL, ds, f), f, "raw")))
    return out
