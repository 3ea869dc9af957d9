"""Convert AHBA microarray donors (zips or abagen folders) into one Zarr v3 store.

The first donor's Probes/Ontology tables are parsed (the other donors' copies must have the
same sha256) and written as groups while the donors stream. Per donor: SampleAnnot is read and
validated, then ``MicroarrayExpression.csv`` and ``PACall.csv`` are streamed concurrently, each
through inflate → parse → write stages joined by bounded queues (every stage releases the GIL
for its heavy part; inflate runs in the parse thread when every core already converts a donor;
see :func:`_stream_matrix`). By default two donors run at once within the memory plan
(:func:`plan_jobs`). The donor group is staged and published atomically; the root attributes
list it only afterwards. Donors whose recorded source size and mtime match are skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import zarr

from .. import __version__
from ..config import parse_size
from ..errors import AtlasEngineError, ConfigError, FormatError
from ..sources.donors import DONORS, MICROARRAY_MEMBERS
from ..store import layout as L
from . import writer
from .zipstream import MemberSource

if TYPE_CHECKING:   # pandas, xarray and the numba parser load only when a donor converts,
    import pandas as pd  # so a re-run over converted donors starts fast
    import xarray as xr

    from .blockparse import Block, ParseStats
    from .discover import Found
    from .metadata import Table

_KNOWN = {d.id: d for d in DONORS}


@dataclass
class DonorSource:
    """Where one donor's five CSVs are: a zip, or an extracted folder."""

    donor_id: int
    path: Path
    #: how the archive was recognised and its donor identified (member names, evidence)
    found: Found | None = None
    #: the CSVs a folder holds (their sizes and mtimes make the folder's fingerprint)
    members: ClassVar[tuple[str, ...]] = MICROARRAY_MEMBERS

    @property
    def is_zip(self) -> bool:
        return self.path.is_file()

    def origin(self, sha256: str | None = None) -> dict[str, Any] | None:
        """The source file for the provenance: name, size, sha256, how it was identified."""
        return self.found.record(sha256) if self.found is not None else None

    def member(self, name: str) -> MemberSource:
        if self.found is not None:
            return self.found.member(name)
        if self.is_zip:
            return MemberSource(self.path, name)
        f = self.path / name
        if not f.exists():
            raise FormatError(self.path, f"missing file {name}", expected=f"{name} in the folder")
        return MemberSource(f)

    def fingerprint(self) -> dict[str, Any]:
        """Name, size and mtime of the source (of each CSV for a folder): cheap change check."""
        if self.is_zip:
            st = self.path.stat()
            return {"name": self.path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        files = {}
        for n in self.members:
            f = self.path / n
            if f.exists():
                st = f.stat()
                files[n] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        return {"name": self.path.name, "files": files}


def find_sources(src: str | os.PathLike, donors: Iterable[int | str] | None = None
                 ) -> list[DonorSource]:
    """Microarray donor zips / folders in ``src`` (any names: recognised by their members, the
    donor identified from their content, see :mod:`.discover`), in donor-id order or the given
    order."""
    from .discover import MICROARRAY, scan, select

    sc = scan(src)
    if not sc.of_kind(MICROARRAY):
        raise sc.nothing((MICROARRAY,))
    return [DonorSource(f.donor, f.path, f) for f in select(sc, MICROARRAY, donors)
            if f.donor is not None]


def prefetch(it: Iterable[Any], depth: int = 3, name: str = "inflate") -> Iterator[Any]:
    """Run ``it`` in a thread, ``depth`` items ahead of the consumer (inflate or parsing
    overlaps the work on each item). Errors of ``it`` are raised in the consumer; closing the
    generator (or leaving its loop) stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in it:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            put(exc)

    t = threading.Thread(target=work, daemon=True, name=name)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()


@dataclass
class Options:
    dtype: str = "float32"
    probe_chunk: int = L.PROBE_CHUNK
    sample_chunk: int = L.SAMPLE_CHUNK
    memory_limit: int | None = None
    jobs: int | None = None
    #: "refuse" (default): a nan/inf token is an error; "nan": stored as NaN and counted
    nonfinite: str = "refuse"

    def record(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "probe_chunk": self.probe_chunk,
                "sample_chunk": self.sample_chunk, "nonfinite": self.nonfinite}


@dataclass
class ConvertResult:
    store: str
    converted: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    seconds: float = 0.0
    bytes_parsed: int = 0
    slow_tokens: int = 0
    unknown_structures: dict[int, list[int]] = field(default_factory=dict)
    #: non-finite values stored as NaN per donor (``allow_nonfinite`` only)
    nonfinite: dict[int, int] = field(default_factory=dict)


def _manifest_sha256(path: Path) -> str | None:
    """The sha256 that ``atlas-engine fetch`` recorded for ``path`` in its folder's
    manifest.json, if the file still has the recorded size and mtime (no re-hashing)."""
    from ..fetch.manifest import Manifest

    try:
        entry = Manifest.load(path.parent).entries.get(path.name)
    except AtlasEngineError:
        return None
    return entry.sha256 if entry is not None and entry.matches_stat(path) else None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while piece := fh.read(8 << 20):
            h.update(piece)
    return h.hexdigest()


def _donor_is_current(store_url: str, ds: DonorSource, opts: Options) -> bool:
    try:
        g = zarr.open_group(writer.join(store_url, L.donor_path(ds.donor_id)), mode="r",
                            zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError):
        return False
    attrs = g.attrs.asdict()
    prov = attrs.get("provenance", {})
    return (bool(attrs.get("complete")) and prov.get("source") == ds.fingerprint()
            and prov.get("options") == opts.record() and _group_whole(g))


#: the arrays every donor group holds (a group missing one is not complete, whatever it says)
DONOR_ARRAYS = (L.EXPRESSION, L.PACALL, L.PROBE_DIM, L.SAMPLE_DIM, *L.SAMPLE_COLUMNS)


def _group_whole(g: zarr.Group) -> bool:
    """Every array of a donor group is there (its metadata at least)."""
    return writer.group_whole(g, DONOR_ARRAYS)


def _samples_dataset(probes: Table, samples: pd.DataFrame) -> xr.Dataset:
    import xarray as xr

    n = len(samples)
    coords: dict[str, Any] = {
        L.PROBE_DIM: (L.PROBE_DIM, probes.frame["probe_id"].to_numpy()),
        L.SAMPLE_DIM: (L.SAMPLE_DIM, np.arange(1, n + 1, dtype=np.int64)),
    }
    for c in samples.columns:
        col = samples[c]
        values = col.to_numpy(dtype=object) if col.dtype == object or str(col.dtype) in (
            "str", "string") else col.to_numpy()
        if values.dtype == object:
            values = values.astype(str).astype(object)
        coords[c] = (L.SAMPLE_DIM, values)
    return xr.Dataset(coords=coords)


@dataclass(frozen=True)
class StreamPlan:
    """Buffer sizes of one matrix stream: inflated piece size, pieces queued ahead of the
    parser, and block buffers in flight (one being parsed, the others queued or being written)."""

    piece: int = 2 << 20
    depth: int = 4
    blocks: int = 2

    def bytes(self, block_rows: int, ncols: int, itemsize: int) -> int:
        """Peak working memory of one stream: queued and carried pieces, block buffers, and
        the encoding copies of the block being written (chunk copies plus compressed)."""
        block = block_rows * ncols * itemsize
        return (self.depth + 2) * self.piece + self.blocks * block + block + block // 2


def _stream_matrix(src: MemberSource, arr: zarr.Array, kind: str, probe_ids: np.ndarray,
                   ncols: int, opts: Options, plan: StreamPlan, other: str | None,
                   cancel: threading.Event, inline: bool = False
                   ) -> tuple[list[list[int]], ParseStats]:
    """Parse one matrix member block by block into ``arr``; returns per-chunk CRCs.

    Three stages overlap, each in its own thread and each releasing the GIL for its heavy
    part: inflate (``prefetch``, ``plan.depth`` pieces ahead), parse (this thread, into
    ``plan.blocks`` reusable block buffers) and write (checksums, Blosc, files). With
    ``inline`` the parse thread inflates too: when every core already runs a donor, the extra
    thread only adds hand-offs (measured on 2 cores, two donors at once: 1.3 CPU-s less).
    """
    from .blockparse import BlockPool, ParseStats, iter_blocks

    stats = ParseStats()
    crcs: list[list[int]] = []
    n = len(probe_ids)
    vdtype = np.dtype(opts.dtype) if kind == "float" else np.dtype(np.uint8)
    pool = BlockPool(plan.blocks, opts.probe_chunk, ncols, vdtype)
    todo: queue.Queue = queue.Queue()
    failed: list[BaseException] = []

    out = writer.BlockWriter(arr)

    def write() -> None:
        while (block := todo.get()) is not None:
            try:
                if not failed:
                    crcs.append(out.write(block.start, block.values))
            except BaseException as exc:  # noqa: BLE001 - re-raised by the parser thread
                failed.append(exc)
            finally:
                pool.release(block)

    wt = threading.Thread(target=write, daemon=True, name=f"write-{kind}")
    wt.start()
    pieces = src.iter_chunks(piece_size=plan.piece)
    blocks = iter_blocks(pieces if inline else prefetch(pieces, plan.depth), ncols,
                         opts.probe_chunk, kind=kind, name=src.display, stats=stats,
                         dtype=vdtype, pool=pool, nonfinite=opts.nonfinite)
    try:
        with contextlib.closing(blocks):
            for block in blocks:
                if cancel.is_set():
                    pool.release(block)
                    raise _Cancelled()
                if failed:
                    pool.release(block)
                    break
                err = _check_ids(block, probe_ids, src.display, other)
                if err is not None:
                    pool.release(block)
                    raise err
                todo.put(block)
    finally:
        todo.put(None)
        wt.join()
    if failed:
        raise failed[0]
    if stats.rows != n:
        raise FormatError(src.display, f"file ends after {stats.rows} rows",
                          line=stats.rows + 1, expected=f"{n} rows, one per Probes.csv probe")
    return crcs, stats


def _check_ids(block: Block, probe_ids: np.ndarray, name: str, other: str | None
               ) -> FormatError | None:
    """The error for a block whose ids are not the Probes.csv ids of its rows, else ``None``."""
    n = len(probe_ids)
    r0, r1 = block.start, block.start + len(block.ids)
    if r1 > n:
        return FormatError(name, "more rows than Probes.csv has probes", line=n + 1, column=1,
                           expected=f"{n} rows")
    bad = np.flatnonzero(block.ids != probe_ids[r0:r1])
    if not bad.size:
        return None
    k = int(bad[0])
    got, want = int(block.ids[k]), int(probe_ids[r0 + k])
    earlier = np.flatnonzero(probe_ids[:r0 + k] == got)
    if earlier.size:   # the id of an earlier row again: a repeated row
        return FormatError(name, f"probe id {got} appears twice (already on line "
                           f"{int(earlier[0]) + 1})", line=r0 + k + 1, column=1,
                           expected=f"probe {want}: one row per Probes.csv probe, in its order")
    against = f"{other} and Probes.csv" if other else "Probes.csv"
    return FormatError(name, f"probe id {got} differs from {against} ({want})",
                       line=r0 + k + 1, column=1,
                       expected=f"probe {want} in the Probes.csv row order")


class _Cancelled(Exception):
    pass


def convert_donor(store_url: str, ds: DonorSource, probes: Table, ontology_ids: set[int],
                  opts: Options, cancel: threading.Event | None = None,
                  plans: tuple[StreamPlan, StreamPlan] = (StreamPlan(), StreamPlan()),
                  inline: bool = False,
                  publish: Callable[[writer.Staged, dict[str, Any]], None] | None = None
                  ) -> dict[str, Any]:
    """Stage, fill and publish one donor group; returns a summary for the root attributes.

    ``publish(staged, info)`` moves the finished group into place (and lists it); by default
    the group is only moved (``staged.publish()``)."""
    from .metadata import read_samples

    cancel = cancel or threading.Event()
    t0 = time.perf_counter()
    samples = read_samples(ds.member("SampleAnnot.csv"))
    frame = samples.frame
    unknown = sorted({int(s) for s in frame["structure_id"] if int(s) not in ontology_ids})
    if unknown:
        warnings.warn(f"{samples.source}: structure_id(s) {unknown} are not in the ontology; "
                      "the samples are kept", stacklevel=2)
    ncols = len(frame)
    n = len(probes.frame)
    probe_ids = probes.frame["probe_id"].to_numpy()
    staged = writer.Staged.begin(store_url, L.donor_path(ds.donor_id))
    sha_box: dict[str, str | None] = {"sha256": _manifest_sha256(ds.path) if ds.is_zip else None}
    hasher = None
    if ds.is_zip and sha_box["sha256"] is None:
        def _hash() -> None:
            sha_box["sha256"] = _sha256_file(ds.path)
        hasher = threading.Thread(target=_hash, daemon=True)
        hasher.start()
    try:
        writer.write_dataset(staged.url, _samples_dataset(probes, frame))
        chunks = (min(opts.probe_chunk, n), min(opts.sample_chunk, ncols))
        dims = (L.PROBE_DIM, L.SAMPLE_DIM)
        expr = writer.create_matrix(staged.url, L.EXPRESSION, (n, ncols), chunks, opts.dtype, dims,
                                    {"long_name": "normalized expression (log2)"})
        pac = writer.create_matrix(staged.url, L.PACALL, (n, ncols), chunks, bool, dims,
                                   {"long_name": "present/absent call"})
        with ThreadPoolExecutor(2, thread_name_prefix=f"donor{ds.donor_id}") as pool:
            fe = pool.submit(_stream_matrix, ds.member("MicroarrayExpression.csv"), expr,
                             "float", probe_ids, ncols, opts, plans[0], None, cancel, inline)
            fp = pool.submit(_stream_matrix, ds.member("PACall.csv"), pac, "bool", probe_ids,
                             ncols, opts, plans[1], "MicroarrayExpression.csv", cancel, inline)
            done, _ = wait([fe, fp], return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in done):
                cancel.set()
            wait([fe, fp])
            errors = [f.exception() for f in (fe, fp) if f.exception() is not None]
            real = [e for e in errors if not isinstance(e, _Cancelled)]
            if errors:
                raise (real or errors)[0]
            crc_e, st_e = fe.result()
            crc_p, st_p = fp.result()
        if hasher is not None:
            hasher.join()
        known = _KNOWN.get(ds.donor_id)
        info = {
            "donor_id": ds.donor_id,
            "name": known.name if known else None,
            "age": known.age if known else None,
            "sex": known.sex if known else None,
            "n_samples": ncols,
            "unknown_structures": unknown,
        }
        provenance = {
            "source": ds.fingerprint(),
            "sha256": sha_box["sha256"],
            "origin": ds.origin(sha_box["sha256"]),
            "members": {
                "MicroarrayExpression.csv": st_e.bytes, "PACall.csv": st_p.bytes,
                "SampleAnnot.csv": samples.sha256,
            },
            "probes_sha256": probes.sha256,
            "nonfinite_values": st_e.nonfinite,
            "converter": f"atlas-engine {__version__}",
            "options": opts.record(),
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        g = zarr.open_group(staged.url, mode="a", zarr_format=3)
        g.attrs.update({
            "donor": info, "provenance": provenance,
            "checksums": {"algorithm": "crc32", "chunks": list(chunks),
                          L.EXPRESSION: crc_e, L.PACALL: crc_p},
            "slow_tokens": st_e.slow_tokens,
            "nonfinite": st_e.nonfinite,
        })
        g.attrs["complete"] = True   # last: the completion marker for non-local stores
        if publish is None:
            staged.publish()
        else:
            publish(staged, dict(info))
        info["bytes"] = st_e.bytes + st_p.bytes
        info["slow_tokens"] = st_e.slow_tokens
        info["nonfinite"] = st_e.nonfinite
        return info
    except BaseException:
        staged.abort()
        raise


def _tables_group(url: str, frame: pd.DataFrame, dim: str, index_col: str) -> xr.Dataset:
    import xarray as xr

    coords = {dim: (dim, frame[index_col].to_numpy())}
    data = {}
    for c in frame.columns:
        v = frame[c].to_numpy()
        if v.dtype == object or v.dtype.kind in "OUT" or str(frame[c].dtype) in ("str", "string"):
            v = frame[c].astype(str).to_numpy(dtype=object)
        data[c] = (dim, v)
    return xr.Dataset(data, coords=coords)


def _ensure_tables(store_url: str, probes: Table, ontology: Table, force: bool = False) -> None:
    """Write the probe and ontology groups unless the store holds them already (from the same
    bytes, every array there); ``force`` rewrites them regardless."""
    for name, table, dim, key in ((L.PROBES_GROUP, probes, L.PROBE_DIM, "probe_id"),
                                  (L.ONTOLOGY_GROUP, ontology, L.STRUCTURE_DIM, "id")):
        try:
            g = zarr.open_group(writer.join(store_url, name), mode="r", zarr_format=3)
            if not force and g.attrs.get("sha256") == table.sha256 and \
                    set(table.frame.columns) <= set(g.array_keys()):
                continue
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError):
            pass
        staged = writer.Staged.begin(store_url, name)
        try:
            writer.write_dataset(staged.url, _tables_group(staged.url, table.frame, dim, key))
            zarr.open_group(staged.url, mode="a", zarr_format=3).attrs.update(
                {"sha256": table.sha256, "source": table.source})
            staged.publish()
        except BaseException:
            staged.abort()
            raise


#: resident memory before any stream starts: interpreter, numpy, pandas, zarr, xarray, numba
#: kernels and the tables (measured 235-285 MB)
BASE_MEMORY = 280 * 2**20
#: per donor beyond its stream buffers: zarr metadata writes, sample tables, allocator slack
#: (measured: a 946-sample donor peaks ~110 MB above its planned stream buffers)
DONOR_OVERHEAD = 100 * 2**20
#: working-memory target when no ``memory_limit`` is given
DEFAULT_MEMORY = 1 << 30
#: stream buffer plans, most generous first
_PLANS = (StreamPlan(2 << 20, 4, 2), StreamPlan(1 << 20, 2, 2), StreamPlan(1 << 20, 1, 1))


def donor_memory(plan: StreamPlan, opts: Options, n_samples: int) -> int:
    """Planned peak memory of one donor: both streams (expression, PACall) and overhead."""
    itemsize = np.dtype(opts.dtype).itemsize
    rows, cols = opts.probe_chunk, max(n_samples, 1)
    return plan.bytes(rows, cols, itemsize) + plan.bytes(rows, cols, 1) + DONOR_OVERHEAD


def plan_jobs(opts: Options, n_samples_max: int, n_donors: int
              ) -> tuple[int, tuple[StreamPlan, StreamPlan]]:
    """Donors converted at once and the buffer plans of their two streams (expression, PACall).

    Two donors at once by default on two or more cores: the inflate of a member is one
    sequential stream, so a second donor lets both cores inflate (measured on 2 cores, six
    full-size donors: 11.1-13.3 s against 12.4-13.1 s one at a time, ~50 MB more peak RSS).
    Jobs and buffers are then cut down until ``BASE_MEMORY + jobs × donor_memory`` fits the
    memory limit (1 GiB when none is given); one donor with the leanest plan is the floor.
    """
    budget = opts.memory_limit or DEFAULT_MEMORY
    want = max(1, min(opts.jobs or min(2, os.cpu_count() or 1), n_donors))
    for jobs in range(want, 0, -1):
        for plan in _PLANS:
            if BASE_MEMORY + jobs * donor_memory(plan, opts, n_samples_max) <= budget:
                return jobs, (plan, plan)
    return 1, (_PLANS[-1], _PLANS[-1])


def convert_microarray(src: str | os.PathLike, store: str | os.PathLike, *,
                       dtype: str = "float32", donors: Iterable[int | str] | None = None,
                       memory_limit: int | str | None = None, jobs: int | None = None,
                       probe_chunk: int = L.PROBE_CHUNK, sample_chunk: int = L.SAMPLE_CHUNK,
                       force: bool = False, allow_nonfinite: bool = False, wait: bool = False,
                       log: Callable[[str], None] | None = None) -> ConvertResult:
    """Convert the donors found in ``src`` into the store ``store`` (created if needed).

    The store's writer lock is held throughout: another conversion into the same local store
    raises :class:`~atlas_engine.errors.StoreBusyError` naming it (or, with ``wait``, is waited
    for). ``force`` reconverts the selected donors even when they are current (a donor that
    ``verify`` or a reader found damaged). ``allow_nonfinite`` stores nan/inf tokens as NaN
    (counted in the provenance) instead of refusing them.

    Raises :class:`FormatError` on the first bad input; donors completed before it stay, the
    failing donor leaves nothing behind. Whatever an interrupted run left (staged groups, a
    published donor not yet listed, stale consolidated metadata) is repaired first.
    """
    t0 = time.perf_counter()
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"--dtype must be float32 or float64, not {dtype!r}")
    if probe_chunk < 1 or sample_chunk < 1:
        raise ConfigError("chunk sizes must be ≥ 1")
    opts = Options(dtype, probe_chunk, sample_chunk, parse_size(memory_limit), jobs,
                   "nan" if allow_nonfinite else "refuse")
    log = log or (lambda s: None)
    store_url = os.fspath(store)
    sources = find_sources(src, donors)
    for ds in sources:
        log(ds.found.describe() if ds.found is not None else f"donor {ds.donor_id}: {ds.path}")
    with writer.store_lock(store_url, wait=wait, log=log), \
            writer.disk_errors(store_url, "the converted donors"):
        return _convert_locked(store_url, sources, opts, force, log, t0)


def _convert_locked(store_url: str, sources: list[DonorSource], opts: Options, force: bool,
                    log: Callable[[str], None], t0: float) -> ConvertResult:
    dtype = opts.dtype
    root = writer.open_root(store_url)
    info = writer.root_info(root)
    if info and info.get("format") != L.FORMAT_MICROARRAY:
        raise ConfigError(f"{store_url} holds a {info.get('format')!r} store, not AHBA microarray")
    _check_layout(store_url, info)
    if info and info.get("dtype") not in (None, dtype):
        raise ConfigError(f"{store_url} was converted with dtype {info['dtype']}; "
                          f"convert into a new store for {dtype}")
    writer.clean_staging(store_url)     # no other writer: what is there, a crash left
    result = ConvertResult(store_url)
    todo = []
    for ds in sources:
        if not force and _donor_is_current(store_url, ds, opts):
            result.skipped.append(ds.donor_id)
        else:
            todo.append(ds)

    lock = writer.ROOT_LOCK
    order_hint = [d.donor_id for d in sources]

    def publish_root(new: dict[str, Any] | None = None, drop: int | None = None) -> None:
        """List the complete donor groups found in the store (minus ``drop``) in the root
        attributes, with the consolidated metadata, in one atomic step."""
        with lock:
            def update(cur: dict[str, Any]) -> dict[str, Any]:
                listed = [int(d) for d in cur.get("donors", [])]
                infos = {int(k): v for k, v in (cur.get("donor_info") or {}).items()}
                found = _complete_donors(store_url)
                if new is not None:
                    infos[int(new["donor_id"])] = new
                present = [d for d in found if d != drop]
                for d in present:
                    if d not in infos or (new is None and d not in listed):
                        infos[d] = dict(found[d])
                order = [d for d in order_hint if d in present]
                order += sorted(d for d in present if d not in order)
                keep = ("donor_id", "name", "age", "sex", "n_samples", "unknown_structures")
                donor_info = {str(d): {k: infos[d].get(k) for k in keep} for d in order}
                cur.update({
                    "format": L.FORMAT_MICROARRAY, "layout_version": L.LAYOUT_VERSION,
                    "dtype": cur.get("dtype") or dtype, "donors": order,
                    "donor_info": donor_info,
                    "unknown_structures": {str(d): donor_info[str(d)]["unknown_structures"]
                                           for d in order
                                           if donor_info[str(d)]["unknown_structures"]},
                    "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                })
                if tables_info:
                    cur.update(tables_info)
                    cur.update({"converter": f"atlas-engine {__version__}",
                                "options": opts.record()})
                elif "probes_source" not in cur:
                    cur.update(_tables_info_from_store(store_url))
                return cur

            writer.write_root(store_url, update)

    tables_info: dict[str, Any] = {}
    if not todo:
        # nothing to convert: repair what an interrupted run may have left (a donor published
        # but not listed, metadata not consolidated); writes nothing when all is in order
        if any(d not in (info.get("donors") or []) for d in result.skipped) or \
                _root_stale(store_url):
            publish_root()
        result.seconds = time.perf_counter() - t0
        return result

    # tables: identical across donors (and with what the store already holds)
    # (the first donor's are parsed; the others only hashed: identical bytes, identical tables)
    from .metadata import read_ontology, read_probes, read_samples

    ref = dict(info.get("probes_source") or {}) if info else {}
    first, *others = todo
    probes = read_probes(first.member("Probes.csv"))
    ontology = read_ontology(first.member("Ontology.csv"))
    if ref and ref.get("sha256") != probes.sha256:
        raise FormatError(probes.source, "Probes.csv differs from the one this store was "
                          f"converted from ({ref.get('file')})",
                          expected="the same Probes.csv in every donor")
    for ds in others:
        for name, table in (("Probes.csv", probes), ("Ontology.csv", ontology)):
            member = ds.member(name)
            if _member_sha256(member) != table.sha256:
                raise FormatError(member.display, f"{name} differs from {table.source}",
                                  expected=f"the same {name} in every donor")
    writer.open_root(store_url).require_group(L.DONORS_GROUP)
    ontology_ids = {int(i) for i in ontology.frame["id"]}
    tables_info.update({
        "n_probes": len(probes.frame),
        "probes_source": {"file": probes.source, "sha256": probes.sha256},
        "ontology_source": {"file": ontology.source, "sha256": ontology.sha256},
    })
    cancel = threading.Event()

    n_max = max(len(read_samples(ds.member("SampleAnnot.csv")).frame) for ds in todo)
    n_jobs, plans = plan_jobs(opts, n_max, len(todo))
    floor = BASE_MEMORY + donor_memory(_PLANS[-1], opts, n_max)
    if opts.memory_limit and opts.memory_limit < floor:
        log(f"warning: memory limit {opts.memory_limit / 2**20:.0f} MiB is below the "
            f"~{floor / 2**20:.0f} MiB one donor needs; converting one at a time with the "
            "smallest buffers")
    log(f"converting {len(todo)} donor(s) with {n_jobs} job(s); skipping {result.skipped}")
    inline = n_jobs >= (os.cpu_count() or 1)   # every core busy with a donor: no inflate thread

    tables_box: dict[str, Any] = {}

    def publish(staged: writer.Staged, got: dict[str, Any]) -> None:
        tables.join()   # the root lists a donor only once the tables it refers to exist
        if "error" in tables_box:
            raise tables_box["error"]
        with lock:
            if staged.replaces():      # out of the listing while its directory is swapped
                publish_root(drop=got["donor_id"])
            staged.publish()
            publish_root(got)

    def one(ds: DonorSource) -> dict[str, Any]:
        got = convert_donor(store_url, ds, probes, ontology_ids, opts, cancel, plans, inline,
                            publish)
        log(f"donor {ds.donor_id}: {got['n_samples']} samples")
        return got

    first_error: BaseException | None = None
    # the probe and ontology groups are written while the first donors stream
    tables = threading.Thread(target=_capture, args=(tables_box, _ensure_tables, store_url,
                                                    probes, ontology, force), name="tables")
    tables.start()
    with ThreadPoolExecutor(n_jobs, thread_name_prefix="convert") as pool:
        # largest first, so the last donors running at once are the short ones
        by_size = sorted(todo, key=_source_size, reverse=True)
        submitted = {ds.donor_id: pool.submit(one, ds) for ds in by_size}
        for fut in (submitted[ds.donor_id] for ds in todo):
            try:
                got = fut.result()
                result.converted.append(got["donor_id"])
                result.bytes_parsed += got["bytes"]
                result.slow_tokens += got["slow_tokens"]
                if got["nonfinite"]:
                    result.nonfinite[got["donor_id"]] = got["nonfinite"]
                if got["unknown_structures"]:
                    result.unknown_structures[got["donor_id"]] = got["unknown_structures"]
            except _Cancelled:
                continue
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                cancel.set()
                if first_error is None:
                    first_error = exc
    tables.join()
    if first_error is None and "error" in tables_box:
        first_error = tables_box["error"]
    if first_error is not None:
        raise first_error
    if result.skipped:
        publish_root()      # a skipped donor that an interrupted run left unlisted
    result.seconds = time.perf_counter() - t0
    return result


def _tables_info_from_store(store_url: str) -> dict[str, Any]:
    """``n_probes``, ``probes_source``, ``ontology_source`` from the table groups themselves
    (a root never written before a crash)."""
    out: dict[str, Any] = {}
    for group, key in ((L.PROBES_GROUP, "probes_source"), (L.ONTOLOGY_GROUP, "ontology_source")):
        try:
            g = zarr.open_group(writer.join(store_url, group), mode="r", zarr_format=3,
                                use_consolidated=False)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError):
            continue
        out[key] = {"file": g.attrs.get("source"), "sha256": g.attrs.get("sha256")}
        if group == L.PROBES_GROUP and "probe_id" in g:
            out["n_probes"] = int(g["probe_id"].shape[0])
    return out


def _check_layout(store_url: str, info: dict[str, Any]) -> None:
    """Refuse to add to a store written with another layout version."""
    version = info.get("layout_version") if info else None
    if info and version != L.LAYOUT_VERSION:
        raise ConfigError(f"{store_url} was written with store layout {version} (this version "
                          f"writes layout {L.LAYOUT_VERSION}, with a checksum in every chunk); "
                          "convert into a new store, or delete this one first")


def _complete_donors(store_url: str) -> dict[int, dict[str, Any]]:
    """Donor id → recorded ``donor`` attributes of every complete, whole donor group."""
    return writer.complete_groups(store_url, L.DONORS_GROUP, DONOR_ARRAYS)


def _root_stale(store_url: str) -> bool:
    """True when the root's consolidated metadata does not list every group and array of the
    store (an interrupted publication); local stores only (False elsewhere)."""
    path = writer.local_path(store_url)
    if path is None:
        return False
    try:
        import json

        meta = json.loads((path / "zarr.json").read_bytes())
    except (OSError, ValueError):
        return True
    known = set((meta.get("consolidated_metadata") or {}).get("metadata") or {})
    listed = ((meta.get("attributes") or {}).get(L.ROOT_ATTR) or {}).get("donors") or []
    if any(not (path / L.donor_path(d) / "zarr.json").exists() for d in listed):
        return True
    for f in path.glob("*/*/zarr.json"):
        rel = f.parent.relative_to(path).as_posix()
        if rel.startswith((L.STAGING_DIR, "cache")):
            continue
        if rel not in known:
            return True
    for f in path.glob("*/*/*/zarr.json"):
        rel = f.parent.relative_to(path).as_posix()
        if not rel.startswith((L.STAGING_DIR, "cache")) and rel not in known:
            return True
    return False


def _capture(box: dict[str, Any], func: Callable[..., Any], *args: Any) -> None:
    """Run ``func(*args)`` (in a thread), keeping an exception in ``box["error"]``."""
    try:
        func(*args)
    except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
        box["error"] = exc


def _member_sha256(src: MemberSource) -> str:
    """sha256 of a (small) member's bytes, CRC-checked, without a leading byte-order mark (as
    :func:`.metadata.table_bytes` hashes them)."""
    from .zipstream import BOM

    h = hashlib.sha256()
    first = True
    for piece in src.iter_chunks():
        if first and piece.startswith(BOM):
            piece = piece[len(BOM):]
        first = False
        h.update(piece)
    return h.hexdigest()


def _source_size(ds: DonorSource) -> int:
    if ds.is_zip:
        return ds.path.stat().st_size
    return sum((ds.path / n).stat().st_size for n in MICROARRAY_MEMBERS
               if (ds.path / n).exists())
