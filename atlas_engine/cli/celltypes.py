"""The Cell Types branch of ``atlas-engine aggregate`` (a store written from a cell-types set)."""

from __future__ import annotations

import time

import click


def run_cell_aggregate(store: str, by: str, stat: str, genes: str | None, out: str,
                       quiet: bool) -> None:
    """Aggregate a Cell Types store and write ``out`` (see :func:`write_cell_aggregate`)."""
    from ..celltypes.aggregate import aggregate_cells, write_cell_aggregate

    t0 = time.perf_counter()
    wanted = None
    if genes:
        text = open(genes[1:]).read() if genes.startswith("@") else genes
        wanted = [g for g in text.replace("\n", ",").split(",") if g.strip()]
    by_cols = "cluster" if by == "structure" else by
    result = aggregate_cells(store, by=by_cols, stats=stat, genes=wanted)
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
