"""URL builders for the Allen API endpoints the engine uses (pure string work, no I/O)."""

from __future__ import annotations

from urllib.parse import quote

from ..errors import ConfigError

#: Characters AllenSDK leaves unescaped when it quotes a query URL
#: (``requests.utils.quote(url, ';/?:@&=+$,')``); ``[ ] ' "`` and spaces are percent-encoded.
RMA_SAFE_CHARS = ";/?:@&=+$,"


def _base(base_url: str) -> str:
    return base_url.rstrip("/")


def quote_rma_url(url: str) -> str:
    """Percent-encode a whole query URL the way AllenSDK does (keeps ``;/?:@&=+$,``)."""
    return quote(url, safe=RMA_SAFE_CHARS)


def well_known_file_url(base_url: str, file_id: int) -> str:
    """``{base}/api/v2/well_known_file_download/{id}``."""
    return f"{_base(base_url)}/api/v2/well_known_file_download/{int(file_id)}"


def structure_graph_url(base_url: str, graph_id: int) -> str:
    """``{base}/api/v2/structure_graph_download/{graph_id}.json``."""
    return f"{_base(base_url)}/api/v2/structure_graph_download/{int(graph_id)}.json"


def rma_query_url(base_url: str, stages: str, fmt: str = "json", *, param: str = "q") -> str:
    """``{base}/api/v2/data/query.{fmt}?q={stages}``, quoted like AllenSDK.

    ``param`` may be ``"criteria"`` (the documented name) or ``"q"`` (AllenSDK's synonym).
    """
    if fmt not in ("json", "xml", "csv"):
        raise ConfigError(f"RMA format {fmt!r}: expected json, xml or csv")
    return quote_rma_url(f"{_base(base_url)}/api/v2/data/query.{fmt}?{param}={stages}")
