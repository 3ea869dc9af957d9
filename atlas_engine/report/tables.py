"""Writing aggregation results: tables (CSV/Parquet), cubes (Zarr/NetCDF) and side tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError

TABLE_SUFFIXES = (".csv", ".parquet")
CUBE_SUFFIXES = (".zarr", ".nc")


def side_path(out: Path, what: str, suffix: str = ".csv") -> Path:
    """``regions.csv`` → ``regions.counts.csv`` (what = ``counts``)."""
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.{what}{suffix}")


def _variable_length_strings(ds: Any) -> Any:
    """Fixed-width numpy strings have no Zarr v3 specification (zarr warns): write string
    coordinates as zarr's variable-length UTF-8 strings instead."""
    fixed = {name: (var.dims, var.values.astype(object), var.attrs)
             for name, var in ds.coords.items() if var.dtype.kind == "U"}
    if not fixed:
        return ds
    ds = ds.drop_indexes([n for n in fixed if n in ds.xindexes and n not in ds.dims])
    return ds.assign_coords(fixed)


def write_result(result: Any, out: str | Path, *, drop_empty: bool = False,
                 layout: str = "wide") -> list[Path]:
    """Write an :class:`~atlas_engine.aggregate.api.AggregateResult` by ``out``'s suffix, plus
    ``<stem>.counts.csv`` (samples per group and donor), ``<stem>.groups.csv`` (every group
    with its sample and donor counts, empty ones included) and, after a gene collapse,
    ``<stem>.genes.csv`` (chosen probe per gene and why).

    Parameters
    ----------
    result
        The aggregation result.
    out
        ``.csv`` / ``.parquet`` (a table) or ``.zarr`` / ``.nc`` (a cube).
    drop_empty
        Leave out groups without samples (they are still listed in ``.groups.csv``).
    layout
        Tables only: ``"wide"`` (a row per group, a column per gene or probe) or ``"long"``
        (a row per group and gene or probe).

    Returns
    -------
    list of Path
        The files written.
    """
    from ..atomic import atomic_output
    from .tablewrite import write_table

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in TABLE_SUFFIXES + CUBE_SUFFIXES:
        raise ConfigError(f"--out {out}: unknown format {suffix!r} "
                          f"(use {', '.join(TABLE_SUFFIXES + CUBE_SUFFIXES)})")
    written: list[Path] = []
    if suffix in TABLE_SUFFIXES:
        frame = result.to_frame()
        if drop_empty:
            empty = set(result.groups.loc[result.groups.n_samples == 0, "structure_id"])
            frame = frame[~frame["structure_id"].isin(empty)]
        feature = "gene" if result.params.get("collapse") else "probe"
        written.append(write_table(frame, out, layout=layout, var_name=feature))
    else:
        ds = result.to_dataset()
        if drop_empty:
            ds = ds.isel(group=(result.groups.n_samples > 0).to_numpy())
        if suffix == ".zarr":
            ds = _variable_length_strings(ds)
            written.append(atomic_output(out, lambda p: ds.to_zarr(p, mode="w",
                                                                   consolidated=False)))
        else:
            written.append(atomic_output(out, lambda p: ds.to_netcdf(p, engine="h5netcdf")))
    counts = result.n_samples
    written.append(atomic_output(side_path(out, "counts"), lambda p: counts.to_csv(p)))
    groups = result.groups
    written.append(atomic_output(side_path(out, "groups"), lambda p: groups.to_csv(p, index=False)))
    if result.params.get("collapse"):
        feats = result.features
        written.append(atomic_output(side_path(out, "genes"), lambda p: feats.to_csv(p)))
    return written
