"""Each donor's chosen probes' rows (genes × all of its columns), raw or sample-normalised,
from the store cache or read by the Dask passes of :mod:`.passes` (and cached).

sample_norm works on each sample over the selected genes: independent of the atlas and of
which other samples are kept, so each donor's sample-normalised matrix is cached too, when
the raw rows hold no NaN (abagen skips genes that are NaN in every kept sample, which would
make it depend on the sample set). The raw rows have an entry of their own, read only when
the sample-normalised matrices are not cached and written only for ``sample_norm=None``
(they are re-read from the store for another sample_norm).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from ..aggregate import rowtasks
from ..store import layout as L
from . import passes
from .cache import StoreCache, StripedMatrix
from .donor_norm import sample_normalise
from .normalize import check_method
from .params import CACHE_VERSION
from .result import DonorSamples


class ChosenRows:
    """The chosen rows of every donor of one run, as the per-atlas step asks for them.

    Parameters
    ----------
    url : str
        The store.
    donors : list of DonorSamples
        The donors after sample QC.
    kept : DataFrame
        The probes the intensity filter kept (column ``row``: store row).
    selection : ProbeSelection
        The probe selection (``rows[k]``: donor k's chosen rows of ``kept``; ``codes``, the
        gene of each kept probe, for ``average``).
    method : str
        The canonical probe-selection method.
    sample_norm : str or None
        abagen's ``sample_norm``.
    cache : StoreCache
        The store's cache.
    key : str
        The cache key of the selection these rows belong to.
    selection_cached : bool
        Whether the selection came from the cache (then so may the rows).
    """

    def __init__(self, url: str, donors: list[DonorSamples], kept: pd.DataFrame,
                 selection: Any, method: str, sample_norm: str | None, cache: StoreCache,
                 key: str, selection_cached: bool) -> None:
        self.url, self.donors, self.kept, self.selection = url, donors, kept, selection
        self.method, self.sample_norm, self.cache, self.key = method, sample_norm, cache, key
        self.rows_key = cache.key("rows", {"selection": key, "version": CACHE_VERSION})
        self.rows_hit = cache.load(self.rows_key) if selection_cached else None
        self.rows_writer: Any = None
        self.norm_hit: Any = None
        self.norm_writer: Any = None
        if sample_norm is not None:
            norm_key = cache.key("samplenorm", {"selection": key, "version": CACHE_VERSION,
                                                "sample_norm": check_method(sample_norm)})
            self.norm_hit = cache.load(norm_key) if selection_cached else None
            self.norm_writer = cache.writer(norm_key) if self.norm_hit is None else None
        #: whether rows were read from the store / sample norms computed in this call
        self.read = False
        self.normalised_here = sample_norm is not None and self.norm_hit is None
        #: seconds normalising samples and writing them to the cache
        self.t_sample_norm = 0.0
        self.t_cache_write = 0.0
        self._striped: dict[int, StripedMatrix] | None = None

    def _rows(self, k: int) -> np.ndarray:
        return self.kept["row"].to_numpy()[self.selection.rows[k]]

    def raw(self, k: int) -> np.ndarray:
        """Genes × ALL of donor k's columns: from the cache, or read (and cached)."""
        if self.rows_hit is not None:
            return self.rows_hit[f"raw_{k}"]
        if not self.read:
            self.read = True
            # kept only when they are what the atlas-dependent part starts from (the
            # sample-normalised matrices are cached instead otherwise)
            self.rows_writer = (self.cache.writer(self.rows_key) if self.sample_norm is None
                                else None)
        arr = rowtasks.open_array(self.url, self.donors[k].donor, L.EXPRESSION)
        if self.method == "average":
            out = passes.gene_means(arr, self.kept["row"].to_numpy(), self.selection.codes,
                                    len(self.selection.genes))
        else:
            out = rowtasks.read_rows(arr, self._rows(k))
        if self.rows_writer is not None:
            self.rows_writer.add(f"raw_{k}", out)
        return out

    def _striped_sample_norm(self, k: int) -> StripedMatrix | None:
        """Donor k's chosen rows sample-normalised into the cache entry one stripe of columns
        (a chunk column of the store) at a time. On the first call every donor's stripes are
        read, normalised over the genes and written by Dask tasks (:func:`.passes.
        stripe_tasks`), so no genes × samples matrix is ever in memory. None (and the entry
        dropped) when a stripe holds NaN (see the module) or cannot be written."""
        if self._striped is None:
            self.read = True
            tmp = self.norm_writer.tmp
            tasks, names = [], []
            for i, ds in enumerate(self.donors):
                arr = rowtasks.open_array(self.url, ds.donor, L.EXPRESSION)
                # one task per chunk column j, in order, each writing sn_<i>_<j>.npy
                names += [f"sn_{i}_{j}.npy" for j in range(len(arr.column_chunks()))]
                tasks += passes.stripe_tasks(arr, self._rows(i), self.sample_norm,
                                             lambda j, i=i: str(tmp / f"sn_{i}_{j}.npy"))
            done = rowtasks.compute(tasks)
            self.t_sample_norm += sum(t for _, t, _, _ in done)
            self.t_cache_write += sum(t for _, _, t, _ in done)
            if any(status != "ok" for status, _, _, _ in done):
                self.norm_writer.abort()
                self.norm_writer = None
                self._striped = {}
            else:
                checks = dict(zip(names, (c for *_, c in done), strict=True))
                for name, c in checks.items():
                    self.norm_writer.record(name, c)
                self._striped = {i: StripedMatrix.open(tmp, f"sn_{i}", checks)
                                 for i in range(len(self.donors))}
        return self._striped.get(k)

    def base(self, k: int) -> tuple[Any, bool]:
        """Genes × all of donor k's columns, sample-normalised (True) or raw (False: the
        sample normalisation is left to the per-atlas step)."""
        if self.norm_hit is not None:
            return self.norm_hit.striped(f"sn_{k}"), True
        if self.norm_writer is not None and self.method != "average":
            striped = self._striped_sample_norm(k)
            if striped is not None:
                return striped, True
        raw = self.raw(k)
        if self.sample_norm is None:
            return raw, True
        if np.isnan(raw).any():
            raw = np.array(raw)  # off the cache file before the entry is dropped
            if self.norm_writer is not None:
                self.norm_writer.abort()
                self.norm_writer = None
            return raw, False
        t1 = time.perf_counter()
        sn = sample_normalise(raw, self.sample_norm)  # in place for srs: raw not used again
        del raw
        self.t_sample_norm += time.perf_counter() - t1
        if self.norm_writer is not None:
            t1 = time.perf_counter()
            self.norm_writer.add(f"sn_{k}", sn)
            self.t_cache_write += time.perf_counter() - t1
        return sn, True

    def commit(self) -> None:
        """Publish the cache entries written while every donor's rows were taken."""
        if self.norm_writer is not None:
            self.norm_writer.commit({"params": {"selection": self.key,
                                                "sample_norm": self.sample_norm}})
        if self.rows_writer is not None:
            self.rows_writer.commit({"params": {"selection": self.key}})
