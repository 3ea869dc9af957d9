"""The Cell Types branch of ``atlas-engine aggregate`` (a store written from a cell-types set)."""

from __future__ import annotations

import time

import click

from .common import dask_options, execution


def run_cell_aggregate(store: str, by: str, stat: str, genes: str | None, out: str,
                       quiet: bool, spill_dir: str | None = None) -> None:
    """Aggregate a Cell Types store and write ``out`` (see :func:`write_cell_aggregate`)."""
    from ..celltypes.aggregate import aggregate_cells, write_cell_aggregate

    t0 = time.perf_counter()
    wanted = None
    if genes:
        text = open(genes[1:]).read() if genes.startswith("@") else genes
        wanted = [g for g in text.replace("\n", ",").split(",") if g.strip()]
    by_cols = "cluster" if by == "structure" else by
    result = aggregate_cells(store, by=by_cols, stats=stat, genes=wanted, spill_dir=spill_dir)
    paths = write_cell_aggregate(result, out)
    if not quiet:
        g = result.groups
        click.echo(f"{len(g)} groups ({', '.join(result.params['by'])}), {len(result.genes)} "
                   f"genes, {', '.join(result.stats)} in {time.perf_counter() - t0:.1f} s")
        if result.unassigned_cells:
            click.echo(f"{result.unassigned_cells} cells have no {', '.join(result.params['by'])}"
                       " value and are in no group")
        if result.missing_genes:
            click.echo(f"not in the store: {', '.join(result.missing_genes)}")
        for p in paths:
            click.echo(f"wrote {p}")


@click.command("markers")
@click.argument("cell_store", type=click.Path(exists=True))
@click.argument("ahba_store", type=click.Path(exists=True))
@click.option("--by", default="cluster", show_default=True,
              help="obs column whose values are the cell types (cluster, subclass, class).")
@click.option("--types", default=None, help="Cell types to map (comma-separated); default all.")
@click.option("--n", "n_genes", default=20, show_default=True, type=click.IntRange(1),
              help="Marker genes per cell type.")
@click.option("--min-frac", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="A marker must be expressed in at least this fraction of the type's cells.")
@click.option("--regions", default="depth:5", show_default=True,
              help="AHBA grouping (as aggregate --by): depth:N, structure, broad, ...")
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Regions × cell types table (.csv); signatures go to <stem>.signatures.csv.")
@click.option("--heatmap", default=None, type=click.Path(), help="Also draw a heatmap (.png).")
@click.option("--quiet", "-q", is_flag=True)
@dask_options
def markers_cmd(cell_store: str, ahba_store: str, by: str, types: str | None, n_genes: int,
                min_frac: float, regions: str, out: str, heatmap: str | None,
                quiet: bool, workers: int | None, scheduler: str | None,
                memory_limit: str | None) -> None:
    """Score cell-type marker signatures (CELL_STORE) across AHBA regions (AHBA_STORE).

    A type's markers are the genes expressed in at least --min-frac of its cells with the
    largest margin of mean log2(CPM+1) over every other type; a region's score is the mean
    z-score (across regions) of those genes in the AHBA store, matched by symbol. See
    docs/celltypes.md.

    \b
    Example:
      atlas-engine markers m1.zarr ahba.zarr --by subclass --regions depth:4 \\
          --out subclass_regions.csv --heatmap subclass_regions.png
    """
    from ..celltypes.markers import map_cell_types, plot_scores, write_scores

    chosen = [t.strip() for t in types.split(",")] if types else None
    with execution(scheduler, workers, memory_limit, quiet):
        scored, _ = map_cell_types(cell_store, ahba_store, by=by, types=chosen, n=n_genes,
                                   min_frac=min_frac, regions=regions)
    paths = write_scores(scored, out)
    if heatmap:
        paths.append(plot_scores(scored.scores, heatmap))
    if not quiet:
        click.echo(f"{scored.scores.shape[0]} regions × {scored.scores.shape[1]} cell types")
        for t in scored.signatures:
            f, m = len(scored.found[t]), len(scored.missing[t])
            if m:
                click.echo(f"{t}: {f} of {f + m} marker genes in the AHBA store")
        for p in paths:
            click.echo(f"wrote {p}")
