"""A local Allen mirror: serves a raw directory under the real Allen URL layout, with faults.

Endpoints (shared allen_formats.md §2 and §5):

* ``GET/HEAD /api/v2/well_known_file_download/{id}`` — the file for a well-known-file id
  (:func:`~atlas_engine.sources.donors.well_known_files`, plus an optional ``index.json``
  ``{"<id>": "relative/file"}`` in the directory), with ``Content-Length``,
  ``Content-Disposition: attachment; filename="<name>"``, ``Accept-Ranges: bytes`` and single
  HTTP ranges (``bytes=N-``, ``bytes=N-M``, ``bytes=-K`` → 206; unsatisfiable → 416; a
  multi-range or malformed header is ignored, as RFC 9110 allows), ``ETag`` (size and mtime)
  and ``Last-Modified``, and ``If-Range`` (a Range applies only when it names the file's
  current version; otherwise the whole file, ``200``). Bodies stream in 1 MiB chunks, never
  whole in memory; a file replaced on disk between requests is a new version.
* ``GET /api/v2/data/query.json?criteria=...`` (or ``q=``), ``/api/v2/data/{Model}/query.json``
  and ``/api/v2/data/{Model}/{id}.json`` — the RMA subset of :mod:`.server_rma`, answered from
  the directory's own files (:mod:`.server_data`). Legacy ``num_rows``/``start_row``/
  ``order``/``only`` URL parameters apply when the query has no such option. A query that
  cannot be parsed gets HTTP 400; one that parses but cannot be answered (unknown model,
  attribute, probe, ...) gets HTTP 200. Both carry ``success: false`` and the reason in ``msg``.
* ``GET/HEAD /informatics-archive/{path}`` — files under the directory's
  ``informatics-archive/`` (the download.alleninstitute.org layout of the CCF NRRDs and the human
  reference atlas), with the same headers, ranges and faults as well-known files.
* ``GET/HEAD /{prefix}/{name}`` with ``prefix`` starting ``aibs_`` — a file of the Cell Types
  download bucket (``DIR/aibs_human_m1_10x/matrix.csv``, ...), served like a well-known file.
* ``GET /api/v2/structure_graph_download/{id}.json`` — ``structure_graph_{id}.json`` from the
  directory when present, else (graph 10) built from ``Ontology.csv``.
* ``GET/HEAD /adult-gtex/bulk-gex/{v8|v10}/rna-seq/{file}`` — GTEx's median-TPM GCT files (the
  bucket layout of storage.googleapis.com), served from the directory by their real names, with
  the same ranges and faults as the downloads.

Faults (:class:`Faults`) can be changed at any time through :attr:`MirrorServer.faults`; every
request is logged (:attr:`MirrorServer.log`) and concurrent download responses are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from ..errors import AtlasEngineError, ConfigError
from .server_data import MirrorData
from .server_faults import _RECORD, Faults, RequestRecord, _Counters
from .server_files import CHUNK_SIZE, FileServing, parse_range
from .server_rma import RmaError, evaluate, parse_query

__all__ = [
    "CHUNK_SIZE", "DOWNLOAD_PREFIX", "UNAVAILABLE_HTML", "Faults", "MirrorServer", "RequestRecord",
    "parse_range", "serving",
]

DOWNLOAD_PREFIX = "/api/v2/well_known_file_download/"

UNAVAILABLE_HTML = (
    "<!DOCTYPE html>\n<html><head><title>Site unavailable</title></head>\n"
    "<body><h1>The Allen Brain Atlas site is temporarily unavailable</h1>\n"
    "<p>We are performing scheduled maintenance. Please try again later.</p></body></html>\n"
)


def _envelope(success: bool, msg: Any, start_row: int = 0, num_rows: int = 0,
              total_rows: int = 0) -> dict[str, Any]:
    return {"success": success, "id": 0, "start_row": start_row, "num_rows": num_rows,
            "total_rows": total_rows, "msg": msg}


def _json_response(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


class MirrorServer(FileServing):
    """Loopback Allen mirror over a raw directory (see the module docstring)."""

    def __init__(self, root: str | Path, *, host: str = "127.0.0.1", port: int = 0,
                 faults: Faults | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """``clock`` and ``sleep`` pace throttled downloads (:attr:`Faults.bandwidth`): a
        test can give a clock of its own and a ``sleep`` that records what was asked and
        advances that clock, instead of waiting."""
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"{self.root} is not a directory")
        self.host = host
        self.port = port
        self.data = MirrorData(self.root)
        self.url = ""
        self.log: list[RequestRecord] = []
        self.concurrent_downloads = 0
        self.max_concurrent_downloads = 0
        self._faults = faults or Faults()
        self.clock = clock
        self.sleep = sleep
        self._counters = _Counters(rng=random.Random(self._faults.drop_seed))
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- faults and statistics ------------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._faults = value
        self.reset_counters()

    def set_faults(self, **changes: Any) -> Faults:
        """Replace some fault fields (counters restart); returns the new :class:`Faults`."""
        self.faults = replace(self._faults, **changes)
        return self._faults

    def reset_counters(self) -> None:
        """Restart the ``*_first`` counters and the random drop offsets."""
        self._counters = _Counters(rng=random.Random(self._faults.drop_seed))

    def reset_stats(self) -> None:
        """Clear the request log and the concurrency maximum."""
        self.log.clear()
        self.max_concurrent_downloads = self.concurrent_downloads

    def downloads(self) -> list[RequestRecord]:
        """Log records of well-known-file downloads only."""
        return [r for r in self.log if r.path.startswith(DOWNLOAD_PREFIX)]

    # -- life cycle ---------------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(DOWNLOAD_PREFIX + "{wkf}", self._download)
        app.router.add_get(r"/api/v2/data/query.{fmt:json|xml|csv}", self._query)
        app.router.add_get(r"/api/v2/data/{model:[A-Za-z]+}/query.{fmt:json|xml|csv}",
                           self._query)
        app.router.add_get(r"/api/v2/data/{model:[A-Za-z]+}/{rid:\d+}.{fmt:json|xml|csv}",
                           self._query)
        app.router.add_get(r"/api/v2/structure_graph_download/{gid:\d+}.json", self._graph)
        app.router.add_get(r"/informatics-archive/{tail:.+}", self._archive)
        app.router.add_get(r"/{prefix:aibs_[A-Za-z0-9_.-]+}/{name:[A-Za-z0-9_.-]+}", self._bucket)
        app.router.add_get(r"/adult-gtex/bulk-gex/{version}/rna-seq/{name}", self._gtex)
        return app

    async def start(self) -> str:
        """Start listening; returns the base URL (also :attr:`url`)."""
        if self._runner is not None:
            return self.url
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc}") from None
        self._runner = runner
        server = site._server
        assert server is not None
        sock = server.sockets[0]  # type: ignore[attr-defined]
        self.port = int(sock.getsockname()[1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> MirrorServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    def start_in_thread(self) -> str:
        """Run the server on its own event loop in a daemon thread; returns the base URL."""
        if self._thread is not None:
            return self.url
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        self._thread = threading.Thread(target=run, name="atlas-mirror", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self.url

    def stop_thread(self) -> None:
        """Stop a server started with :meth:`start_in_thread` (waits for its thread)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        self._thread = None
        self._loop = None

    def __enter__(self) -> MirrorServer:
        self.start_in_thread()
        return self

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop_thread()

    # -- request handling ---------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        record = RequestRecord(request.method, request.path, request.query_string,
                               request.headers.get("Range"), time.time())
        _RECORD.set(record)
        # Logged at once and completed in place, so a client that has read a whole body always
        # finds its record (the handler finishes after the last byte is on the wire).
        self.log.append(record)
        t0 = time.perf_counter()
        try:
            response = self._gate(request, record)
            if response is None:
                response = await handler(request)
            record.status = response.status
            return response
        except web.HTTPException as exc:
            record.status = exc.status
            raise
        except BaseException:
            record.status = record.status or 500
            raise
        finally:
            record.duration = time.perf_counter() - t0

    def _gate(self, request: web.Request, record: RequestRecord) -> web.StreamResponse | None:
        """The fail/HTML fault response for this request, if one is due."""
        f, c = self._faults, self._counters
        kind = ("download" if request.path.startswith((DOWNLOAD_PREFIX, "/aibs_"))
                else "api")
        if f.scope not in ("all", kind):
            return None
        if c.fail < f.fail_first:
            c.fail += 1
            record.fault = "fail"
            headers = {}
            if f.retry_after is not None:
                ra = f.retry_after
                headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
            reason = "Too Many Requests" if f.fail_status == 429 else "Service Unavailable"
            return web.Response(status=f.fail_status, text=f"{f.fail_status} {reason}\n",
                                headers=headers)
        if c.html < f.html_first:
            c.html += 1
            record.fault = "html"
            return web.Response(text=UNAVAILABLE_HTML, content_type="text/html")
        return None

    def _not_found(self, what: str) -> web.Response:
        return _json_response(_envelope(False, what), status=404)

    async def _download(self, request: web.Request) -> web.StreamResponse:
        text = request.match_info["wkf"]
        if not text.isdigit():
            return self._not_found(f"Well known file {text!r} is not an id")
        path = await asyncio.to_thread(self.data.file_for_id, int(text))
        if path is None:
            return self._not_found(f"Well known file with id {text} not found")
        return await self._serve_file(request, path)

    async def _gtex(self, request: web.Request) -> web.StreamResponse:
        """``/adult-gtex/bulk-gex/{version}/rna-seq/{name}``: a GTEx median-TPM GCT file of
        the served directory (only the known file names of each version)."""
        from ..sources.gtex import GTEX_FILES

        version, name = request.match_info["version"], request.match_info["name"]
        path = self.data.root / name
        if GTEX_FILES.get(version) != name or not path.is_file():
            return web.Response(status=404, text=f"No such object: {version}/{name}")
        return await self._serve_file(request, path)

    async def _archive(self, request: web.Request) -> web.StreamResponse:
        """``/informatics-archive/...`` (download.alleninstitute.org layout) from the directory's
        ``informatics-archive/`` folder."""
        rel = request.match_info["tail"]
        root = (self.root / "informatics-archive").resolve()
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            return web.Response(status=404, text="404 Not Found\n")
        return await self._serve_file(request, path)

    async def _bucket(self, request: web.Request) -> web.StreamResponse:
        """A download-bucket object, ``/{prefix}/{name}`` → ``DIR/{prefix}/{name}``."""
        root = self.data.root.resolve()
        path = (root / request.match_info["prefix"] / request.match_info["name"]).resolve()
        if root not in path.parents or not path.is_file():
            return web.Response(status=404, text="<Error><Code>NoSuchKey</Code></Error>",
                                content_type="application/xml")
        return await self._serve_file(request, path)

    async def _query(self, request: web.Request) -> web.Response:
        if request.match_info["fmt"] != "json":
            return _json_response(_envelope(False, "only query.json is served by this mirror"),
                                  status=400)
        params = request.query
        text = params.get("criteria") or params.get("q") or ""
        model = request.match_info.get("model")
        if model:
            rid = request.match_info.get("rid")
            parts = [f"model::{model}"]
            if rid:
                parts.append(f"rma::criteria,[id$eq{rid}]")
            if text:
                parts.append(text if text.startswith("rma::") else f"rma::criteria,{text}")
            text = ",".join(parts)
        try:
            query = parse_query(text)
            for name in ("num_rows", "start_row", "order", "only"):
                if name in params and name not in query.options:
                    query.options[name] = params[name]
            result = await asyncio.to_thread(
                evaluate, query, self.data,
                overstate_total_rows=self._faults.overstate_total_rows)
        except RmaError as exc:
            return _json_response(_envelope(False, str(exc)), status=400 if exc.parse else 200)
        except AtlasEngineError as exc:  # the served files are broken
            return _json_response(_envelope(False, str(exc)), status=500)
        body = _envelope(True, result.msg, result.start_row, result.num_rows, result.total_rows)
        text_out = await asyncio.to_thread(json.dumps, body)
        return web.Response(text=text_out, content_type="application/json")

    async def _graph(self, request: web.Request) -> web.StreamResponse:
        gid = int(request.match_info["gid"])
        path = self.root / f"structure_graph_{gid}.json"
        if path.is_file():
            return web.FileResponse(path, headers={"Content-Type": "application/json"})
        if gid != 10:
            return self._not_found(f"Structure graph {gid} not found")
        try:
            roots = await asyncio.to_thread(self.data.structure_graph)
        except AtlasEngineError as exc:
            return _json_response(_envelope(False, str(exc)), status=500)
        return _json_response(_envelope(True, roots, 0, len(roots), len(roots)))


@contextlib.contextmanager
def serving(root: str | Path, **kwargs: Any) -> Any:
    """``with serving(dir) as server:`` — a :class:`MirrorServer` in thread mode."""
    server = MirrorServer(root, **kwargs)
    server.start_in_thread()
    try:
        yield server
    finally:
        server.stop_thread()
