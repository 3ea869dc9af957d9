"""``atlas-engine synth``: write Allen-format data (AHBA donor zips, structure graph, BrainSpan)."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("synth")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--probes", type=click.IntRange(min=1), default=58_692, show_default=True,
              help="Probes (matrix rows); the real files have 58,692.")
@click.option("--samples-fraction", type=click.FloatRange(min=0, max=1, min_open=True),
              default=1.0, show_default=True,
              help="Share of each donor's real sample count (946, 893, 363, 529, 470, 501).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed; the same seed gives byte-identical files.")
@click.option("--donors", default="all", show_default=True,
              help="Donors to write: 'all' or ids/names, e.g. 9861,10021.")
@click.option("--brainspan/--no-brainspan", default=True, show_default=True,
              help="Also write BrainSpan's genes_matrix_csv.zip.")
@click.option("--brainspan-genes", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Genes (rows) of the BrainSpan matrix; the real file has 52,376.")
@click.option("--brainspan-samples", type=click.IntRange(min=1), default=524, show_default=True,
              help="Samples (columns) of the BrainSpan matrix; the real file has 524.")
@click.option("--rnaseq/--no-rnaseq", default=True, show_default=True,
              help="Also write rnaseq_donor{id}.zip for the selected donors among 9861 and "
              "10021 (121 samples at full size; genes as the microarray probes').")
@click.option("--volumes/--no-volumes", default=False, show_default=True,
              help="Also write reference volumes: CCFv3-style annotation_{10,25,50,100}.nrrd, "
                   "the P56 MetaImage zip, the human annotation_full.nii.gz, donor T1/T2 and "
                   "structure_graph_1.json, in the layout `serve` publishes.")
@click.option("--volume-scale", type=click.IntRange(min=1), default=10, show_default=True,
              help="Divide the real volume shapes by this (1 = real size: 4.8 GB at 10 µm).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes writing donors in parallel (default: CPU count for big outputs).")
@click.option("--celltypes", default=None,
              help="Write only Cell Types data sets instead (comma-separated: human-m1, "
                   "human-mca, mouse-ctx-hpf-10x, mouse-ctx-hpf-smartseq, human-mtg, mouse-visp), "
                   "sized by --cells / --genes / --clusters.")
@click.option("--cells", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Cell Types: cells per data set.")
@click.option("--genes", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Cell Types: genes per data set.")
@click.option("--clusters", type=click.IntRange(min=2), default=12, show_default=True,
              help="Cell Types: clusters per data set.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars and no summary.")
def synth_cmd(dest: Path, probes: int, samples_fraction: float, seed: int, donors: str,
              brainspan: bool, brainspan_genes: int, brainspan_samples: int, rnaseq: bool,
              volumes: bool, volume_scale: int, workers: int | None, celltypes: str | None,
              cells: int, genes: int, clusters: int, quiet: bool) -> None:
    """Write generated data in the exact Allen file formats into DEST.

    Per donor normalized_microarray_donor{id}.zip (MicroarrayExpression, PACall, Probes,
    SampleAnnot, Ontology CSVs), structure_graph_10.json, unless --no-rnaseq the RNA-seq
    zips rnaseq_donor{9861,10021}.zip and, unless --no-brainspan, genes_matrix_csv.zip. The layout is what `atlas-engine fetch` downloads and
    `atlas-engine serve` / `convert` read.

    \b
    Examples:
      atlas-engine synth raw/                                  # full size, ~4 GB of CSV
      atlas-engine synth small/ --probes 2000 --samples-fraction 0.1
      atlas-engine synth two/ --donors 9861,10021 --no-brainspan --seed 7
      atlas-engine synth atlases/ --probes 500 --samples-fraction 0.1 --volumes
      atlas-engine synth ct/ --celltypes human-m1,human-mtg --cells 3000 --genes 1000
    """
    from ..testing.synth import write_all

    started = time.perf_counter()
    if celltypes:
        from ..testing.synth_celltypes import CellTypeWorldSpec, write_dataset

        for name in [n.strip() for n in celltypes.split(",") if n.strip()]:
            depth = 1.0 if "10x" in name or name == "human-m1" else 30.0
            _, files = write_dataset(dest, name, CellTypeWorldSpec(
                n_cells=cells, n_genes=genes, n_clusters=clusters, seed=seed, depth=depth))
            if not quiet:
                for f in files:
                    click.echo(str(f))
        return
    result = write_all(dest, probes=probes, samples_fraction=samples_fraction, seed=seed,
                       donors=donors, brainspan=brainspan, brainspan_genes=brainspan_genes,
                       brainspan_samples=brainspan_samples, rnaseq=rnaseq, workers=workers,
                       quiet=quiet)
    written_volumes = {}
    if volumes:
        from ..testing.synth_volumes import write_reference_volumes

        written_volumes = write_reference_volumes(dest, mouse_scale=volume_scale,
                                                  human_scale=max(1, volume_scale * 4 // 5),
                                                  seed=seed)
    if quiet:
        return
    paths = [*result.zips.values(), *result.rnaseq.values(), result.structure_graph]
    if result.brainspan is not None:
        paths.append(result.brainspan)
    paths += [p for k, p in written_volumes.items() if k != "structure_graph_10"]
    total = sum(p.stat().st_size for p in paths)
    for donor_id, path in result.zips.items():
        click.echo(f"{path}  ({result.n_probes} probes x {result.samples[donor_id]} samples, "
                   f"{len(result.mismatches[donor_id])} hemisphere mismatches)")
    for path in result.rnaseq.values():
        click.echo(f"{path}  (RNA-seq)")
    click.echo(str(result.structure_graph))
    if result.brainspan is not None:
        click.echo(str(result.brainspan))
    for path in written_volumes.values():
        if path != result.structure_graph:
            click.echo(str(path))
    click.echo(f"wrote {len(paths)} files, {total / 2**20:,.1f} MiB in "
               f"{time.perf_counter() - started:,.1f} s (seed {seed})")
