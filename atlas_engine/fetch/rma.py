"""Async client for the Allen RMA API: paging, retries, an on-disk response cache.

Queries are built by :mod:`atlas_engine.sources.rma`; this module sends them::

    async with RmaClient("https://human.brain-map.org", cache_dir="~/.cache/rma") as rma:
        genes = await rma.model_rows(model_query("Gene", "[acronym$in'BDNF','COMT']"))

Model queries are paged with a stable order (``[order$eq'id']`` unless the query has one) and
``num_rows`` = ``page_size`` until a page comes back short or empty (the server sometimes
overstates ``total_rows``, so that count is never trusted to end the loop).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from ..atomic import atomic_write_bytes
from ..errors import ApiError, ConfigError, FetchError, HttpStatusError
from ..sources.donors import HBA_STRUCTURE_GRAPH, HUMAN_MA_PRODUCT_ID
from ..sources.rma import ModelQuery, ServiceQuery, eq_filter, in_filter, model_query, service_query
from ..sources.urls import rma_query_url
from .http import (
    TRANSIENT_ERRORS,
    RetryPolicy,
    is_retryable_status,
    make_session,
    parse_retry_after,
    unreachable,
)

DEFAULT_PAGE_SIZE = 2000
#: The stable order used for paging when a query names none.
DEFAULT_ORDER = ("'id'",)
#: Ids per ``$in`` list / service call, to keep URLs short.
BATCH = 200


class RmaClient:
    """Sends RMA queries to ``base_url``; responses are cached under ``cache_dir`` by URL."""

    def __init__(self, base_url: str, *, cache_dir: str | Path | None = None,
                 policy: RetryPolicy | None = None, page_size: int = DEFAULT_PAGE_SIZE,
                 session: aiohttp.ClientSession | None = None, concurrency: int = 4) -> None:
        if page_size < 1:
            raise ConfigError(f"page_size {page_size!r}: expected at least 1 row per page")
        if concurrency < 1:
            raise ConfigError(f"concurrency {concurrency!r}: expected at least 1 request at a "
                              "time")
        self.base_url = base_url.rstrip("/")
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.policy = policy or RetryPolicy()
        self.page_size = page_size
        self._session = session
        self._own_session = session is None
        self._semaphore = asyncio.Semaphore(concurrency)
        #: URLs requested over the network (cache hits are not counted), for tests and logs.
        self.requests: list[str] = []

    async def __aenter__(self) -> RmaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session when this client made it (a session passed in stays open)."""
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = make_session(self.policy)
            self._own_session = True
        return self._session

    # -- raw requests -----------------------------------------------------------------------
    def url_for(self, stages: str | ModelQuery | ServiceQuery, fmt: str = "json") -> str:
        """The request URL of a query (``{base}/api/v2/data/query.{fmt}?q={stages}``).

        Parameters
        ----------
        stages : str, ModelQuery or ServiceQuery
            The query: RMA stage text or a query built by :mod:`atlas_engine.sources.rma`.
        fmt : str, default "json"
            The answer format: ``"json"``, ``"xml"`` or ``"csv"``.

        Returns
        -------
        str
            The URL, quoted as AllenSDK quotes it.

        Raises
        ------
        ConfigError
            ``fmt`` is not one of the formats above.
        """
        return rma_query_url(self.base_url, str(stages), fmt)

    def _cache_path(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / (hashlib.sha256(url.encode()).hexdigest() + ".json")

    async def get_json(self, url: str, *, cache: bool = True) -> Any:
        """GET ``url`` and parse JSON, with retries; served from / stored in the cache.

        Parameters
        ----------
        url : str
            The request URL.
        cache : bool, default True
            Answer from the cache under ``cache_dir`` when it holds ``url``, and store a
            successful answer there (no effect without ``cache_dir``).

        Returns
        -------
        object
            The parsed JSON document.

        Raises
        ------
        ApiError
            The answer is not JSON.
        FetchError
            The server cannot be reached or keeps failing after the policy's retries, sends
            an HTML page, or answers with an HTTP error status (:class:`HttpStatusError`).
        """
        path = self._cache_path(url) if cache else None
        if path is not None and path.exists():
            try:
                return json.loads(path.read_bytes())
            except ValueError:
                path.unlink(missing_ok=True)  # a damaged cache entry is refetched
        body = await self._get_bytes(url)
        try:
            doc = json.loads(body)
        except ValueError:
            head = body[:80].decode("utf-8", "replace")
            raise ApiError(f"{url}: answer is not JSON (starts {head!r})") from None
        if path is not None and isinstance(doc, dict) and doc.get("success") is True:
            path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(atomic_write_bytes, path, body)
        return doc

    async def _get_bytes(self, url: str) -> bytes:
        policy = self.policy
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                async with self._semaphore:
                    self.requests.append(url)
                    async with self._get_session().get(url) as resp:
                        if is_retryable_status(resp.status):
                            if resp.status in (429, 503):
                                wait = parse_retry_after(resp.headers.get("Retry-After"))
                            raise FetchError(f"HTTP {resp.status} {resp.reason or ''}".rstrip())
                        body = await resp.read()
                        if resp.status >= 400:
                            raise HttpStatusError(url, resp.status, _error_text(body, resp.reason))
                        ctype = resp.headers.get("Content-Type", "")
                        if "text/html" in ctype or body.lstrip()[:1] == b"<":
                            raise FetchError("server sent an HTML page instead of JSON "
                                             "(the Allen site may be down)")
                        return body
            except HttpStatusError:
                raise
            except (*TRANSIENT_ERRORS, FetchError) as exc:
                cause = unreachable(exc)
                if cause and attempt >= cause[1]:  # no network / nothing listening: fail fast
                    raise FetchError(f"{url}: {cause[0]}") from None
                if attempt >= policy.max_attempts:
                    raise FetchError(f"{url}: giving up after {attempt} attempts: {exc}") from None
                if wait is not None and wait > policy.max_retry_after:
                    raise FetchError(f"{url}: {exc} with Retry-After {wait:,.0f} s, longer than "
                                     f"the {policy.max_retry_after:,.0f} s a query waits - try "
                                     "again later") from None
            await asyncio.sleep(wait if wait is not None else policy.backoff(attempt))

    async def envelope(self, stages: str | ModelQuery | ServiceQuery, *,
                       cache: bool = True) -> dict[str, Any]:
        """One request; the checked envelope (``success`` true) is returned whole.

        Parameters
        ----------
        stages : str, ModelQuery or ServiceQuery
            The query: RMA stage text or a query built by :mod:`atlas_engine.sources.rma`.
        cache : bool, default True
            Use and fill the response cache (:meth:`get_json`).

        Returns
        -------
        dict
            The envelope: ``success``, ``msg`` and, for model queries, ``start_row``,
            ``num_rows`` and ``total_rows``.

        Raises
        ------
        ApiError
            The answer is not an RMA envelope, or says ``success: false``.
        FetchError
            The server cannot be reached or keeps failing after the policy's retries, sends
            an HTML page, or answers with an HTTP error status (:class:`HttpStatusError`).
        """
        url = self.url_for(stages)
        doc = await self.get_json(url, cache=cache)
        if not isinstance(doc, dict) or "success" not in doc or "msg" not in doc:
            raise ApiError(f"{url}: answer is not an RMA envelope (no success/msg)")
        if not doc["success"]:
            raise ApiError(f"{url}: RMA query failed: {doc.get('msg')}")
        return doc

    # -- paged model queries ----------------------------------------------------------------
    async def model_rows(self, query: ModelQuery, *, cache: bool = True,
                         page_size: int | None = None) -> list[dict[str, Any]]:
        """Every row of a model query, paged until a short or empty page.

        Pages are asked for in a stable order (``id`` unless the query names one); rows seen
        on an earlier page are not repeated. A query that sets its own ``start_row`` or
        ``num_rows`` is sent once, as it is.

        Parameters
        ----------
        query : ModelQuery
            The query (:func:`atlas_engine.sources.rma.model_query`).
        cache : bool, default True
            Use and fill the response cache (:meth:`get_json`).
        page_size : int, optional
            Rows per page (default the client's ``page_size``).

        Returns
        -------
        list of dict
            The records, as the server sends them.

        Raises
        ------
        ApiError
            An answer is not an RMA envelope, says ``success: false`` or holds no list.
        FetchError
            The server cannot be reached or keeps failing after the policy's retries, sends
            an HTML page, or answers with an HTTP error status (:class:`HttpStatusError`).
        """
        size = page_size or self.page_size
        if query.num_rows is not None or query.start_row is not None:
            doc = await self.envelope(query, cache=cache)  # the caller chose the window
            return _rows(doc, self.url_for(query))
        rows: list[dict[str, Any]] = []
        seen: set[Any] = set()
        start = 0
        while True:
            page_query = query.page(start, size, DEFAULT_ORDER)
            doc = await self.envelope(page_query, cache=cache)
            page = _rows(doc, self.url_for(page_query))
            new = 0
            for row in page:
                key = row.get("id", None) if isinstance(row, dict) else None
                if key is not None:
                    if key in seen:
                        continue
                    seen.add(key)
                rows.append(row)
                new += 1
            if len(page) < size or new == 0:
                return rows
            start += len(page)

    async def service(self, query: ServiceQuery, *, cache: bool = True) -> Any:
        """The ``msg`` of a service query.

        Parameters
        ----------
        query : ServiceQuery
            The query (:func:`atlas_engine.sources.rma.service_query`).
        cache : bool, default True
            Use and fill the response cache (:meth:`get_json`).

        Returns
        -------
        object
            The envelope's ``msg``, as the server sends it.

        Raises
        ------
        ApiError
            The answer is not an RMA envelope, or says ``success: false``.
        FetchError
            The server cannot be reached or keeps failing after the policy's retries, sends
            an HTML page, or answers with an HTTP error status (:class:`HttpStatusError`).
        """
        return (await self.envelope(query, cache=cache))["msg"]

    # -- typed helpers ----------------------------------------------------------------------
    async def donors(self) -> list[dict[str, Any]]:
        """The Human Brain Microarray donors (product id 2).

        Returns
        -------
        list of dict
            One ``Donor`` record per donor.
        """
        return await self.model_rows(model_query(
            "Donor", f"products[id$eq{HUMAN_MA_PRODUCT_ID}]"))

    async def genes(self, symbols: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Genes of the microarray product, all or those with the given symbols.

        Parameters
        ----------
        symbols : sequence of str, optional
            Gene symbols (acronyms), asked for in batches; None: every gene of the product.

        Returns
        -------
        list of dict
            One ``Gene`` record per gene found (unknown symbols are simply absent).
        """
        product = f"products[id$eq{HUMAN_MA_PRODUCT_ID}]"
        if symbols is None:
            return await self.model_rows(model_query("Gene", product))
        out: list[dict[str, Any]] = []
        for batch in _batches(list(dict.fromkeys(symbols))):
            out += await self.model_rows(model_query(
                "Gene", [in_filter("acronym", batch), product]))
        return out

    async def probes(self, symbols: Sequence[str]) -> list[dict[str, Any]]:
        """Microarray (DNA) probes of genes given by symbol.

        Parameters
        ----------
        symbols : sequence of str
            Gene symbols (acronyms), asked for in batches.

        Returns
        -------
        list of dict
            One ``Probe`` record per probe.
        """
        out: list[dict[str, Any]] = []
        for batch in _batches(list(dict.fromkeys(symbols))):
            out += await self.model_rows(model_query("Probe", [
                eq_filter("probe_type", "DNA"),
                f"products[id$eq{HUMAN_MA_PRODUCT_ID}]",
                "gene" + in_filter("acronym", batch),
            ]))
        return out

    async def structures(self, graph_id: int = HBA_STRUCTURE_GRAPH) -> list[dict[str, Any]]:
        """Every structure of an ontology graph (10 = Human Brain Atlas).

        Parameters
        ----------
        graph_id : int, default 10
            The structure graph (1 adult mouse, 10 human, 16/17 developing human/mouse).

        Returns
        -------
        list of dict
            One ``Structure`` record per structure.
        """
        return await self.model_rows(model_query("Structure", f"[graph_id$eq{int(graph_id)}]"))

    async def cell_types(self, data_set: str | None = None) -> list[dict[str, Any]]:
        """``model::CellType`` records, all or those of one data set.

        The real model's fields are UNCONFIRMED (shared more_datasets.md names the model, not
        its fields): records are returned as the server sends them, whatever their keys. The
        filter on ``data_set`` (the ``celltypes:<name>`` names, e.g. ``human-m1``) is the one
        the local mirror serves; against another server pass criteria to :meth:`model_rows`.

        Parameters
        ----------
        data_set : str, optional
            A Cell Types data set name (``human-m1``, ...); None: every record.

        Returns
        -------
        list of dict
            The records, whatever their keys.
        """
        criteria = [eq_filter("data_set", data_set)] if data_set else None
        return await self.model_rows(model_query("CellType", criteria))

    async def human_microarray_expression(
        self, probes: Iterable[int], donors: Iterable[int] | None = None,
        structures: Iterable[int] | None = None,
    ) -> dict[str, Any]:
        """``service::human_microarray_expression``; expression values converted to float.

        Parameters
        ----------
        probes : iterable of int
            Probe ids (at least one).
        donors : iterable of int, optional
            Donor ids to restrict the samples to (default every donor).
        structures : iterable of int, optional
            Structure ids to restrict the samples to (default every structure).

        Returns
        -------
        dict
            ``{"probes": [...], "samples": [...]}`` with each probe's ``expression_level``
            and ``z-score`` as lists of floats, one per sample (the server sends strings).

        Raises
        ------
        ConfigError
            No probe id given.
        ApiError
            The answer lacks ``probes``/``samples``, a value is not a number, or a probe has
            not one value per sample.
        FetchError
            The server cannot be reached or keeps failing after the policy's retries, sends
            an HTML page, or answers with an HTTP error status (:class:`HttpStatusError`).
        """
        probe_ids = [int(p) for p in probes]
        if not probe_ids:
            raise ConfigError("human_microarray_expression: no probe id given; expected at "
                              "least one")
        params: dict[str, object] = {"probes": probe_ids}
        if donors is not None:
            params["donors"] = [int(d) for d in donors]
        if structures is not None:
            params["structures"] = [int(s) for s in structures]
        msg = await self.service(service_query("human_microarray_expression", **params))
        if not isinstance(msg, dict) or "probes" not in msg or "samples" not in msg:
            raise ApiError("human_microarray_expression: msg lacks 'probes'/'samples'")
        n = len(msg["samples"])
        for probe in msg["probes"]:
            for key in ("expression_level", "z-score"):
                if key in probe:
                    values = [_to_float(v) for v in probe[key]]
                    if len(values) != n:
                        raise ApiError(f"human_microarray_expression: probe {probe.get('id')} "
                                       f"has {len(values)} {key} values for {n} samples")
                    probe[key] = values
        return msg


def _to_float(value: Any) -> float:
    if value is None or value == "":
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ApiError(f"expression value {value!r} is not a number") from None


def _rows(doc: dict[str, Any], url: str) -> list[dict[str, Any]]:
    msg = doc["msg"]
    if not isinstance(msg, list):
        raise ApiError(f"{url}: expected a list of records in msg, got {type(msg).__name__}")
    return msg


def _batches(items: list[Any], n: int = BATCH) -> list[list[Any]]:
    return [items[i:i + n] for i in range(0, len(items), n)] or []


def _error_text(body: bytes, reason: str | None) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("msg"):
            return f"{reason or ''}: {doc['msg']}"
    except ValueError:
        pass
    return reason or ""
