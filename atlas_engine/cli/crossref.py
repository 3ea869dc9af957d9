"""``atlas-engine crossref``: per-gene agreement of Allen regions with GTEx tissue medians."""

from __future__ import annotations

from pathlib import Path

import click

from .common import dask_options, execution


@click.command("crossref")
@click.argument("store", type=click.Path())
@click.argument("gct", type=click.Path(exists=True, dir_okay=False))
@click.option("--tissue-map", default=None, type=click.Path(exists=True, dir_okay=False),
              help="GTEx tissue → Allen structures CSV (default: the packaged "
                   "gtex_brain_tissues.csv; copy and edit it to change the mapping).")
@click.option("--min-age", default=20.0, show_default=True, type=float,
              help="BrainSpan stores: only donors at least this old (years).")
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Per-gene table (.csv/.parquet); also <stem>.unmatched.csv, "
                   "<stem>.tissues.csv and <stem>.summary.json.")
@click.option("--plot-gene", "plot_gene_name", default=None, help="Draw the scatter of this gene.")
@click.option("--plot", default=None, type=click.Path(),
              help="Figure path for --plot-gene (default <stem>.<gene>.png).")
@click.option("--quiet", "-q", is_flag=True)
@dask_options
def crossref_cmd(store: str, gct: str, tissue_map: str | None, min_age: float, out: str,
                 plot_gene_name: str | None, plot: str | None, quiet: bool,
                 workers: int | None, scheduler: str | None,
                 memory_limit: str | None) -> None:
    """Compare STORE (AHBA microarray or BrainSpan) with a GTEx median-TPM GCT file, gene by
    gene, over GTEx's brain tissues mapped to Allen structures: Spearman and Pearson of the
    Allen values (log2) with log2(TPM + 1), and the number of tissues.

    \b
    Examples:
      atlas-engine fetch --dest raw/ --what gtex
      atlas-engine crossref ahba.zarr raw/GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_median_tpm.gct.gz \\
          --out crossref.csv --plot-gene BDNF
    """
    from ..gtex.crossref import (
        ahba_tissues,
        brainspan_tissues,
        crossref,
        load_tissue_map,
        plot_gene,
    )
    from ..report.tables import side_path
    from ..store.brainspan import store_format
    from ..store.layout import FORMAT_BRAINSPAN

    tmap = load_tissue_map(tissue_map)
    # the store's aggregation runs on the cluster; the per-gene correlations (a few
    # thousand rows) run here
    with execution(scheduler, workers, memory_limit, quiet):
        if store_format(store) == FORMAT_BRAINSPAN:
            allen = brainspan_tissues(store, tmap, min_years=min_age)
            label = "BrainSpan adult mean log2(RPKM + 1)"
        else:
            allen = ahba_tissues(store, tmap)
            label = "AHBA region mean (log2)"
    res = crossref(allen, gct)
    written = res.write(out)
    if plot_gene_name:
        target = Path(plot) if plot else side_path(Path(out), plot_gene_name, ".png")
        written.append(plot_gene(res, plot_gene_name, target, allen_label=label))
    if not quiet:
        s = res.summary
        click.echo(f"{s['genes_matched']} of {s['genes_allen']} genes matched "
                   f"({', '.join(f'{v} by {k}' for k, v in s['matched_by'].items())}) over "
                   f"{len(s['tissues_used'])} tissues; median Spearman "
                   f"{s['spearman_median'] if s['spearman_median'] is None else round(s['spearman_median'], 3)}")
        if s["genes_unmatched"]:
            click.echo(f"{s['genes_unmatched']} genes unmatched (reasons in "
                       f"{side_path(Path(out), 'unmatched')})")
        for p in written:
            click.echo(f"wrote {p}")

