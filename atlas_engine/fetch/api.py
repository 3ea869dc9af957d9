"""``HumanBrainAtlas``: the Allen Human Brain Atlas API as pandas DataFrames.

:class:`AsyncHumanBrainAtlas` is the async core; :class:`HumanBrainAtlas` wraps each method
with :func:`~atlas_engine.fetch.sync.run_sync`::

    atlas = HumanBrainAtlas(cache_dir="~/.cache/atlas-engine/rma")

Without ``cache_dir`` answers are cached in ``$ATLAS_ENGINE_DATA/rma-cache`` (default
``~/atlas-engine-data/rma-cache``; the path is printed on stderr the first time);
``cache=False`` caches nothing.
    expr, samples, probes = atlas.get_microarray_expression(["BDNF", "COMT"], donors=[15496])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..errors import ApiError, ConfigError
from ..sources.donors import DONORS, HBA_STRUCTURE_GRAPH, resolve_donors
from .http import RetryPolicy
from .rma import BATCH, RmaClient
from .sync import run_sync

_ANNOUNCED: set[Path] = set()


def _default_cache_dir() -> Path:
    """``$ATLAS_ENGINE_DATA/rma-cache`` (default ``~/atlas-engine-data/rma-cache``); the first
    time a process uses it, one line on stderr says where it is and how to change it."""
    import os
    import sys

    path = Path(Config.from_env().data_dir).expanduser() / "rma-cache"
    if path not in _ANNOUNCED:
        _ANNOUNCED.add(path)
        how = ("$ATLAS_ENGINE_DATA" if os.environ.get("ATLAS_ENGINE_DATA") else
               "set $ATLAS_ENGINE_DATA to move it")
        print(f"atlas-engine: caching Allen API answers in {path} ({how}; cache_dir= or "
              "cache=False to change)", file=sys.stderr)
    return path


def _frame(rows: list[dict[str, Any]], sort: str | None = "id") -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows)
    if sort and sort in df.columns and len(df):
        df = df.sort_values(sort, kind="stable").reset_index(drop=True)
    return df


def _sample_table(samples: list[dict[str, Any]]) -> pd.DataFrame:
    """Flatten the nested ``donor``/``sample``/``structure``/``top_level_structure`` objects
    into ``donor_id``, ``sample_well``, ``structure_acronym``, ... columns."""
    table = pd.json_normalize(samples, sep="_")
    mri = next((c for c in table.columns if c == "sample_mri"), None)
    if mri is not None:
        coords = table[mri].apply(lambda v: list(v) if isinstance(v, (list, tuple)) else [None] * 3)
        for i, axis in enumerate("xyz"):
            table[f"mri_voxel_{axis}"] = coords.apply(lambda v, i=i: v[i] if len(v) > i else None)
        table = table.drop(columns=[mri])
    return table


class AsyncHumanBrainAtlas:
    """Async access to donors, genes, probes, structures and microarray expression."""

    def __init__(self, base_url: str | None = None, *, cache_dir: str | Path | None = None,
                 cache: bool = True, policy: RetryPolicy | None = None,
                 page_size: int = 2000) -> None:
        self.base_url = base_url or Config.from_env().base_url
        self.cache = cache
        self.cache_dir = (Path(cache_dir).expanduser() if cache_dir else
                          _default_cache_dir() if cache else None)
        self.client = RmaClient(self.base_url, cache_dir=self.cache_dir if cache else None,
                                policy=policy, page_size=page_size)

    async def __aenter__(self) -> AsyncHumanBrainAtlas:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client's HTTP session."""
        await self.client.close()

    async def get_donors(self) -> pd.DataFrame:
        """One row per microarray donor (``id``, ``name``, ...).

        Returns
        -------
        pandas.DataFrame
            The ``Donor`` records, sorted by ``id``.

        Raises
        ------
        FetchError
            The Allen API cannot be reached or keeps failing after the retries, or answers
            with an error (:class:`~atlas_engine.errors.ApiError`,
            :class:`~atlas_engine.errors.HttpStatusError`).
        """
        return _frame(await self.client.donors())

    async def get_genes(self, symbols: Sequence[str] | None = None) -> pd.DataFrame:
        """Genes by symbol (all genes of the microarray product when ``symbols`` is None).

        Parameters
        ----------
        symbols : sequence of str or str, optional
            Gene symbols (one symbol may be given as a string); None: every gene.

        Returns
        -------
        pandas.DataFrame
            The ``Gene`` records (``id``, ``acronym``, ...), sorted by ``id``.

        Raises
        ------
        ConfigError
            A symbol the API does not know (every such symbol is named).
        FetchError
            The Allen API cannot be reached or keeps failing after the retries, or answers
            with an error (:class:`~atlas_engine.errors.ApiError`,
            :class:`~atlas_engine.errors.HttpStatusError`).
        """
        if isinstance(symbols, str):
            symbols = [symbols]
        genes = _frame(await self.client.genes(symbols))
        if symbols is not None:
            known = set(genes["acronym"]) if "acronym" in genes else set()
            missing = [s for s in symbols if s not in known]
            if missing:
                raise ConfigError(f"unknown gene symbol(s): {', '.join(missing)}")
        return genes

    async def get_probes(self, symbols: Sequence[str]) -> pd.DataFrame:
        """Microarray probes of the given genes, with a ``gene_symbol`` column.

        Parameters
        ----------
        symbols : sequence of str or str
            Gene symbols (one symbol may be given as a string).

        Returns
        -------
        pandas.DataFrame
            The ``Probe`` records of the genes' DNA probes, sorted by ``id``, with
            ``gene_symbol`` added.

        Raises
        ------
        ConfigError
            A symbol the API does not know.
        FetchError
            The Allen API cannot be reached or keeps failing after the retries, or answers
            with an error (:class:`~atlas_engine.errors.ApiError`,
            :class:`~atlas_engine.errors.HttpStatusError`).
        """
        if isinstance(symbols, str):
            symbols = [symbols]
        genes = await self.get_genes(symbols)
        probes = _frame(await self.client.probes(symbols))
        if len(probes) and "gene_id" in probes:
            symbol_of = dict(zip(genes["id"], genes["acronym"], strict=True))
            probes["gene_symbol"] = probes["gene_id"].map(symbol_of)
        return probes

    async def get_structures(self, graph_id: int = HBA_STRUCTURE_GRAPH) -> pd.DataFrame:
        """Every structure of the ontology graph, ordered by ``graph_order``.

        Parameters
        ----------
        graph_id : int, default 10
            The structure graph (1 adult mouse, 10 human, 16/17 developing human/mouse).

        Returns
        -------
        pandas.DataFrame
            The ``Structure`` records.

        Raises
        ------
        FetchError
            The Allen API cannot be reached or keeps failing after the retries, or answers
            with an error (:class:`~atlas_engine.errors.ApiError`,
            :class:`~atlas_engine.errors.HttpStatusError`).
        """
        return _frame(await self.client.structures(graph_id), sort="graph_order")

    async def get_microarray_expression(
        self, symbols: Sequence[str], donors: Iterable[int | str] | str | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Expression of every probe of ``symbols`` in every sample of ``donors``.

        Queried one donor at a time, the probes in batches.

        Parameters
        ----------
        symbols : sequence of str
            Gene symbols.
        donors : iterable of int or str, str or None, default None
            Donor ids or names, as a list or a comma-separated string (``"9861,H0351.2002"``);
            None: all six donors.

        Returns
        -------
        (expression, samples, probes) : tuple of pandas.DataFrame
            ``expression`` is float64 probes × samples (index ``probe_id``, columns 0..n-1
            matching the rows of ``samples``); ``samples`` has ``donor_id``, ``donor_name``,
            ``structure_id``, ... per sample; ``probes`` is as from :meth:`get_probes`.

        Raises
        ------
        ConfigError
            An unknown gene symbol or donor.
        ApiError
            No microarray probe for ``symbols``, or sample lists that differ between probe
            batches of one donor.
        FetchError
            The Allen API cannot be reached or keeps failing after the retries, or answers
            with an error (:class:`~atlas_engine.errors.ApiError`,
            :class:`~atlas_engine.errors.HttpStatusError`).
        """
        probes = await self.get_probes(symbols)
        if probes.empty:
            raise ApiError(f"no microarray probes for {', '.join(symbols)}")
        donor_ids = [d.id for d in (resolve_donors(donors) if donors is not None else DONORS)]
        probe_ids = [int(p) for p in probes["id"]]
        blocks: list[np.ndarray] = []
        tables: list[pd.DataFrame] = []
        for donor in donor_ids:
            rows: dict[int, list[float]] = {}
            samples: list[dict[str, Any]] | None = None
            for i in range(0, len(probe_ids), BATCH):
                msg = await self.client.human_microarray_expression(
                    probe_ids[i:i + BATCH], donors=[donor])
                keys = [_sample_key(s) for s in msg["samples"]]
                if samples is None:
                    samples, first_keys = msg["samples"], keys
                elif keys != first_keys:
                    raise ApiError(f"donor {donor}: the sample list differs between probe batches")
                for p in msg["probes"]:
                    rows[int(p["id"])] = p["expression_level"]
            samples = samples or []
            block = np.full((len(probe_ids), len(samples)), np.nan)
            for r, pid in enumerate(probe_ids):
                if pid in rows:
                    block[r] = rows[pid]
            blocks.append(block)
            tables.append(_sample_table(samples))
        matrix = np.concatenate(blocks, axis=1) if blocks else np.empty((len(probe_ids), 0))
        sample_table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        expression = pd.DataFrame(matrix, index=pd.Index(probe_ids, name="probe_id"))
        expression.columns.name = "sample"
        return expression, sample_table, probes


def _sample_key(sample: dict[str, Any]) -> tuple[Any, Any]:
    donor = sample.get("donor", {}) or {}
    inner = sample.get("sample", {}) or {}
    return donor.get("id"), inner.get("well")


class HumanBrainAtlas:
    """Synchronous face of :class:`AsyncHumanBrainAtlas` (same arguments and methods)."""

    def __init__(self, base_url: str | None = None, *, cache_dir: str | Path | None = None,
                 cache: bool = True, policy: RetryPolicy | None = None,
                 page_size: int = 2000) -> None:
        self._args = dict(base_url=base_url, cache_dir=cache_dir, cache=cache, policy=policy,
                          page_size=page_size)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        async def go() -> Any:
            async with AsyncHumanBrainAtlas(**self._args) as atlas:  # type: ignore[arg-type]
                return await getattr(atlas, name)(*args, **kwargs)
        return run_sync(go())

    def get_donors(self) -> pd.DataFrame:
        return self._call("get_donors")

    def get_genes(self, symbols: Sequence[str] | None = None) -> pd.DataFrame:
        return self._call("get_genes", symbols)

    def get_probes(self, symbols: Sequence[str]) -> pd.DataFrame:
        return self._call("get_probes", symbols)

    def get_structures(self, graph_id: int = HBA_STRUCTURE_GRAPH) -> pd.DataFrame:
        return self._call("get_structures", graph_id)

    def get_microarray_expression(
        self, symbols: Sequence[str], donors: Iterable[int | str] | str | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return self._call("get_microarray_expression", symbols, donors)


# the blocking methods do what the coroutines do: one docstring for both
for _name in ("get_donors", "get_genes", "get_probes", "get_structures",
              "get_microarray_expression"):
    getattr(HumanBrainAtlas, _name).__doc__ = getattr(AsyncHumanBrainAtlas, _name).__doc__
del _name
