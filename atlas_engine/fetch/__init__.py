"""Async, resumable, verified downloads and the Allen RMA client.

Calling the package, ``atlas_engine.fetch(dest, ...)``, runs :func:`fetch_ahba`.

Public API: :func:`download_files`, :func:`fetch_ahba` (and :func:`afetch_ahba`),
:class:`HumanBrainAtlas` / :class:`AsyncHumanBrainAtlas`, :class:`RmaClient`,
:class:`DownloadSpec`, :class:`RetryPolicy`.

Every name is imported on first use, so ``atlas_engine.fetch`` itself stays cheap (no aiohttp,
no pandas until a download or a query needs them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._callable import make_callable

if TYPE_CHECKING:
    from .ahba import FetchReport, afetch_ahba, fetch_ahba
    from .api import AsyncHumanBrainAtlas, HumanBrainAtlas
    from .download import DownloadResult, DownloadSpec, download_files
    from .http import RetryPolicy
    from .rma import RmaClient

#: public name -> the submodule defining it
_EXPORTS: dict[str, str] = {
    "AsyncHumanBrainAtlas": ".api",
    "DownloadResult": ".download",
    "DownloadSpec": ".download",
    "FetchReport": ".ahba",
    "HumanBrainAtlas": ".api",
    "RetryPolicy": ".http",
    "RmaClient": ".rma",
    "afetch_ahba": ".ahba",
    "download_files": ".download",
    "fetch_ahba": ".ahba",
}

__all__ = [
    "AsyncHumanBrainAtlas",
    "DownloadResult",
    "DownloadSpec",
    "FetchReport",
    "HumanBrainAtlas",
    "RetryPolicy",
    "RmaClient",
    "afetch_ahba",
    "download_files",
    "fetch_ahba",
]


def __getattr__(name: str) -> Any:  # lazy: importing the package must not import aiohttp
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


# ``atlas_engine.fetch(dest, ...)`` runs :func:`fetch_ahba`
make_callable(__name__, "atlas_engine.fetch.ahba:fetch_ahba")
