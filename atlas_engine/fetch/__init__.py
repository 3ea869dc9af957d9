"""Async, resumable, verified downloads and the Allen RMA client.

Calling the package, ``atlas_engine.fetch(dest, ...)``, runs :func:`fetch_ahba`.

Public API: :func:`download_files`, :func:`fetch_ahba` (and :func:`afetch_ahba`),
:class:`HumanBrainAtlas` / :class:`AsyncHumanBrainAtlas`, :class:`RmaClient`,
:class:`DownloadSpec`, :class:`RetryPolicy`.
"""

from __future__ import annotations

from .._callable import make_callable
from .ahba import FetchReport, afetch_ahba, fetch_ahba
from .api import AsyncHumanBrainAtlas, HumanBrainAtlas
from .download import DownloadResult, DownloadSpec, download_files
from .http import RetryPolicy
from .rma import RmaClient

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

# ``atlas_engine.fetch(dest, ...)`` runs :func:`fetch_ahba`
make_callable(__name__, "atlas_engine.fetch.ahba:fetch_ahba")
