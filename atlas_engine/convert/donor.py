"""Convert AHBA microarray donors (zips or abagen folders) into one Zarr v3 store.

The orchestrator: :func:`convert_microarray` reads top to bottom as the steps of a conversion.
The steps live in modules named for them: :mod:`.sources` (where each donor's CSVs are, the
shared Probes/Ontology tables), :mod:`.params` (validated options), :mod:`.memplan` (buffers and
donors at once), :mod:`.stream` (one matrix member streamed into its array), :mod:`.donor_group`
(one donor staged, filled and published) and :mod:`.publish` (current donors, table groups,
the root attributes in one atomic step).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..store import layout as L
from . import writer
from .donor_group import convert_donor
from .memplan import BASE_MEMORY, PLANS, donor_memory, plan_jobs
from .params import ConvertOptions
from .publish import RootPublisher, check_layout, donor_is_current, ensure_tables, root_stale
from .sources import DonorSource, find_sources, shared_tables, source_size
from .staging import Staged, clean_staging
from .store_lock import disk_errors, store_lock
from .stream import Cancelled, prefetch

__all__ = ["ConvertResult", "DonorSource", "convert_microarray", "find_sources", "prefetch"]


@dataclass
class ConvertResult:
    """What a conversion did: donors converted and skipped, bytes parsed, time, and what the
    data held that is worth a word (unknown structures, non-finite values stored as NaN)."""

    store: str
    converted: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    seconds: float = 0.0
    bytes_parsed: int = 0
    slow_tokens: int = 0
    unknown_structures: dict[int, list[int]] = field(default_factory=dict)
    #: non-finite values stored as NaN per donor (``allow_nonfinite`` only)
    nonfinite: dict[int, int] = field(default_factory=dict)

    def add(self, got: dict[str, Any]) -> None:
        """Count one converted donor's summary."""
        d = got["donor_id"]
        self.converted.append(d)
        self.bytes_parsed += got["bytes"]
        self.slow_tokens += got["slow_tokens"]
        if got["nonfinite"]:
            self.nonfinite[d] = got["nonfinite"]
        if got["unknown_structures"]:
            self.unknown_structures[d] = got["unknown_structures"]


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
    opts = ConvertOptions.from_args(dtype=dtype, probe_chunk=probe_chunk,
                                    sample_chunk=sample_chunk, memory_limit=memory_limit,
                                    jobs=jobs, allow_nonfinite=allow_nonfinite)
    log = log or (lambda s: None)
    store_url = os.fspath(store)
    sources = find_sources(src, donors)
    for ds in sources:
        log(ds.found.describe() if ds.found is not None else f"donor {ds.donor_id}: {ds.path}")
    with store_lock(store_url, wait=wait, log=log), \
            disk_errors(store_url, "the converted donors"):
        result = _convert_locked(store_url, sources, opts, force, log)
    result.seconds = time.perf_counter() - t0
    return result


def _convert_locked(store_url: str, sources: list[DonorSource], opts: ConvertOptions,
                    force: bool, log: Callable[[str], None]) -> ConvertResult:
    # 1. the store: same format, layout and dtype; what a crash left staged is cleared (we
    #    hold the writer lock, so no other writer is at work)
    info = _store_info(store_url, opts)
    clean_staging(store_url)

    # 2. the donors to convert; current ones are skipped
    result = ConvertResult(store_url)
    todo = []
    for ds in sources:
        if not force and donor_is_current(store_url, ds, opts):
            result.skipped.append(ds.donor_id)
        else:
            todo.append(ds)
    publish_root = RootPublisher(store_url, [d.donor_id for d in sources], opts)
    if not todo:
        # repair what an interrupted run may have left (a donor published but not listed,
        # metadata not consolidated); writes nothing when all is in order
        if any(d not in (info.get("donors") or []) for d in result.skipped) or \
                root_stale(store_url):
            publish_root()
        return result

    # the parsers' kernels load on a thread meanwhile (numba's start is mostly outside the GIL)
    threading.Thread(target=_warm_parsers, args=(opts.dtype,), name="parser-warm-up",
                     daemon=True).start()

    # 3. the tables every donor shares: the first donor's parsed, the others' compared by sha256
    probes, ontology = shared_tables(todo, dict(info.get("probes_source") or {}) if info else {})
    writer.open_root(store_url).require_group(L.DONORS_GROUP)
    publish_root.tables_info.update({
        "n_probes": len(probes.frame),
        "probes_source": {"file": probes.source, "sha256": probes.sha256},
        "ontology_source": {"file": ontology.source, "sha256": ontology.sha256},
    })

    # 4. the memory plan: donors at once and their stream buffers
    n_jobs, plans, inline = _plan(todo, opts, result, log)

    # 5. the probe and ontology groups are written while the donors stream; each donor is
    #    published (and listed) as soon as it is complete, never before the tables exist
    tables = _Background(ensure_tables, store_url, probes, ontology, force)

    def publish(staged: Staged, got: dict[str, Any]) -> None:
        tables.result()
        with writer.ROOT_LOCK:
            if staged.replaces():      # out of the listing while its directory is swapped
                publish_root(drop=got["donor_id"])
            staged.publish()
            publish_root(got)

    cancel = threading.Event()
    ontology_ids = {int(i) for i in ontology.frame["id"]}

    def one(ds: DonorSource) -> dict[str, Any]:
        got = convert_donor(store_url, ds, probes, ontology_ids, opts, cancel, plans, inline,
                            publish)
        log(f"donor {ds.donor_id}: {got['n_samples']} samples")
        return got

    first_error: BaseException | None = None
    with ThreadPoolExecutor(n_jobs, thread_name_prefix="convert") as pool:
        # largest first, so the last donors running at once are the short ones
        by_size = sorted(todo, key=source_size, reverse=True)
        submitted = {ds.donor_id: pool.submit(one, ds) for ds in by_size}
        for fut in (submitted[ds.donor_id] for ds in todo):
            try:
                result.add(fut.result())
            except Cancelled:
                continue
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                cancel.set()
                first_error = first_error or exc
    try:
        tables.result()
    except BaseException as exc:  # noqa: BLE001 - the first error wins
        first_error = first_error or exc
    if first_error is not None:
        raise first_error

    # 6. a skipped donor that an interrupted run left unlisted is listed now
    if result.skipped:
        publish_root()
    return result


def _warm_parsers(dtype: str) -> None:
    from .blockparse import warm_up

    warm_up(dtype)


def _store_info(store_url: str, opts: ConvertOptions) -> dict[str, Any]:
    """The store's root attributes, after checking that this conversion may add to it."""
    info = writer.root_info(writer.open_root(store_url))
    if info and info.get("format") != L.FORMAT_MICROARRAY:
        raise ConfigError(f"{store_url} holds a {info.get('format')!r} store, not AHBA microarray")
    check_layout(store_url, info)
    if info and info.get("dtype") not in (None, opts.dtype):
        raise ConfigError(f"{store_url} was converted with dtype {info['dtype']}; "
                          f"convert into a new store for {opts.dtype}")
    return info


def _plan(todo: list[DonorSource], opts: ConvertOptions, result: ConvertResult,
          log: Callable[[str], None]) -> tuple[int, tuple[Any, Any], bool]:
    """Donors at once, their stream plans, and whether the parse threads inflate themselves
    (every core already busy with a donor: no separate inflate thread)."""
    from .metadata import read_samples

    n_max = max(len(read_samples(ds.member("SampleAnnot.csv")).frame) for ds in todo)
    n_jobs, plans = plan_jobs(opts, n_max, len(todo))
    floor = BASE_MEMORY + donor_memory(PLANS[-1], opts, n_max)
    if opts.memory_limit and opts.memory_limit < floor:
        log(f"warning: memory limit {opts.memory_limit / 2**20:.0f} MiB is below the "
            f"~{floor / 2**20:.0f} MiB one donor needs; converting one at a time with the "
            "smallest buffers")
    log(f"converting {len(todo)} donor(s) with {n_jobs} job(s); skipping {result.skipped}")
    return n_jobs, plans, n_jobs >= (os.cpu_count() or 1)


class _Background:
    """``func(*args)`` on a thread; :meth:`result` waits for it and re-raises its error."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self._error: BaseException | None = None

        def run() -> None:
            try:
                func(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised by result()
                self._error = exc

        self._thread = threading.Thread(target=run, name="tables")
        self._thread.start()

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error
