"""BrainSpan commands: ``aggregate`` on a BrainSpan store (called by ``atlas-engine aggregate``)
and ``atlas-engine trajectory``."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..errors import ConfigError
from .common import dask_options, execution


def _write_table(frame, out: Path) -> Path:  # noqa: ANN001 - a pandas DataFrame
    from ..atomic import atomic_output

    suffix = out.suffix.lower()
    if suffix == ".parquet":
        return atomic_output(out, lambda p: frame.to_parquet(p, index=False))
    if suffix == ".csv":
        return atomic_output(out, lambda p: frame.to_csv(p, index=False))
    raise ConfigError(f"--out {out}: use .csv or .parquet")


def run_brainspan_aggregate(store: str, *, by: str, stat: str, genes: str | None, combine: str,
                            donors: str | None, transform: str, collapse: str, out: str,
                            quiet: bool, layout: str = "wide") -> None:
    """``atlas-engine aggregate`` on a BrainSpan store: a group × gene table (``--by`` period,
    age, structure, region, donor, gender or a combination)."""
    from ..aggregate.brainspan import aggregate_brainspan

    if collapse.strip().lower() not in ("", "auto", "none", "gene", "gene:mean"):
        raise ConfigError("--collapse does not apply to BrainSpan (its rows are genes already)")
    t0 = time.perf_counter()
    ids = [d.strip() for d in donors.split(",") if d.strip()] if donors else None
    res = aggregate_brainspan(store, by=by, stat=stat, genes=genes, combine=combine,
                              donors=ids, transform=transform)
    from ..report.tablewrite import write_table

    frame = res.to_frame()
    for c in res.groups.columns:   # descriptive float columns (age_years, …) label rows
        if c in frame.columns and frame[c].dtype.kind == "f":
            frame[c] = frame[c].astype(str)
    path = write_table(frame, Path(out), layout=layout, var_name="gene")
    if not quiet:
        click.echo(f"{len(res.groups)} groups ({res.params['by']}), {len(res.features)} genes, "
                   f"{len(res.donors)} donors, {stat} ({combine}"
                   f"{', log2(RPKM+1)' if transform == 'log2' else ''}) in "
                   f"{time.perf_counter() - t0:.1f} s")
        if res.missing_genes:
            click.echo(f"not in the store: {', '.join(res.missing_genes)}")
        click.echo(f"wrote {path}")


@click.command("trajectory")
@click.argument("store", type=click.Path())
@click.argument("genes", nargs=-1, required=True)
@click.option("--group-by", default="region", show_default=True,
              type=click.Choice(["region", "structure"]),
              help="One line per coarse structure group (region) or per BrainSpan structure.")
@click.option("--groups", default=None,
              help="Only these groups in the figure (comma-separated, e.g. neocortex,striatum).")
@click.option("--transform", default="log2", show_default=True,
              type=click.Choice(["none", "log2"]), help="log2: values are log2(RPKM + 1).")
@click.option("--log-age/--linear-age", default=True, show_default=True,
              help="x axis: post-conception days on a log scale, or postnatal years.")
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Tidy table (.csv or .parquet); the per-sample points go to "
                   "<stem>.samples.csv.")
@click.option("--plot", "plot", default=None, type=click.Path(),
              help="Also draw the figure (.png, .pdf or .svg).")
@click.option("--quiet", "-q", is_flag=True)
@dask_options
def trajectory_cmd(store: str, genes: tuple[str, ...], group_by: str, groups: str | None,
                   transform: str, log_age: bool, out: str, plot: str | None,
                   quiet: bool, workers: int | None, scheduler: str | None,
                   memory_limit: str | None) -> None:
    """Expression of GENES over development in a BrainSpan STORE, per structure group.

    GENES are symbols, Entrez ids or Ensembl ids (or @file). Each line point is the mean of
    donor means at one age; periods (Kang et al. 2011) are shaded and birth is marked.

    \b
    Examples:
      atlas-engine trajectory brainspan.zarr BDNF DISC1 NRG1 COMT --out traj.csv --plot traj.png
      atlas-engine trajectory brainspan.zarr ENSG00000176697 --group-by structure \\
          --groups DFC,HIP,STR --linear-age --out bdnf.csv --plot bdnf.pdf
    """
    from ..aggregate.trajectory import plot_trajectories, trajectory_table
    from ..report.tables import side_path

    with execution(scheduler, workers, memory_limit, quiet):
        table, points, missing = trajectory_table(store, list(genes), group_by=group_by,
                                                  transform=transform)
    path = _write_table(table, Path(out))
    pts = _write_table(points, side_path(Path(out), "samples"))
    written = [path, pts]
    if plot:
        chosen = [g.strip() for g in groups.split(",") if g.strip()] if groups else None
        if chosen:
            unknown = sorted(set(chosen) - set(table[group_by].astype(str)))
            if unknown:
                raise ConfigError(f"--groups: {', '.join(unknown)} not in the data (have: "
                                  f"{', '.join(sorted(set(table[group_by].astype(str))))})")
        written.append(plot_trajectories(
            table, points, plot, group_by=group_by, log_age=log_age, groups=chosen,
            ylabel="log2(RPKM + 1)" if transform == "log2" else "RPKM"))
    if not quiet:
        if missing:
            click.echo(f"not in the store: {', '.join(missing)}")
        for p in written:
            click.echo(f"wrote {p}")
