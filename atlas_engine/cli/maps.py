"""``atlas-engine maps`` (region results as brain images) and ``atlas-engine voxels``
(voxel counts and volumes per structure of an annotation volume)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from .common import dask_options, execution


def load_ontology(source: str) -> Any:
    """An Ontology from a store (``.zarr``), a structure graph ``.json`` or an ontology CSV."""
    import pandas as pd

    from ..store.graph import ontology_from_structure_graph
    from ..store.ontology import Ontology

    p = Path(source)
    if p.suffix == ".json":
        return ontology_from_structure_graph(p)
    if p.suffix == ".csv":
        return Ontology(pd.read_csv(p))
    from ..store.open import open_store

    return open_store(source).ontology


@click.command("maps")
@click.argument("store")
@click.argument("result", type=click.Path(exists=True))
@click.option("--atlas", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Annotation volume the regions live in: .nii/.nii.gz, .nrrd or the "
                   "MetaImage .zip.")
@click.option("--genes", default=None,
              help="Comma-separated columns of RESULT to map (default: all).")
@click.option("--out", "-o", required=True, type=click.Path(),
              help="A .nii/.nii.gz file (one gene, or a 4-D stack of several), a .nrrd (one "
                   "gene) or a directory (one image per gene).")
@click.option("--regions", type=click.Choice(["auto", "structures", "labels"]), default="auto",
              show_default=True,
              help="structures: RESULT's regions are ontology structure ids (voxels take the "
                   "value of their deepest listed ancestor); labels: they are atlas labels; "
                   "auto: structures when RESULT has a structure_id column.")
@click.option("--background", type=click.Choice(["0", "nan"]), default="0", show_default=True,
              help="Value of voxels outside every region.")
@click.option("--format", "fmt", type=click.Choice(["nifti", "nrrd"]), default=None,
              help="Image format in a directory --out (default: NIfTI for NIfTI atlases, NRRD "
                   "for NRRD/MetaImage ones).")
@click.option("--plot", type=click.Choice(["montage", "ortho", "none"]), default="montage",
              show_default=True, help="Also draw GENE.png next to the images.")
def maps_cmd(store: str, result: str, atlas: str, genes: str | None, out: str, regions: str,
             background: str, fmt: str | None, plot: str) -> None:
    """Write region × gene RESULT onto an atlas as images, and draw them.

    STORE gives the ontology: an AHBA store (.zarr), a structure graph .json or an ontology
    .csv (unused with --regions labels, pass '-'). RESULT is a region table as `aggregate`
    or `run` write it (.csv/.parquet with structure_id or label first) or the pipeline's
    streamed .zarr.

    maps takes no --workers/--scheduler: it computes nothing a cluster could share (each
    image is one stream of slabs looked up from RESULT and written in order, on this
    machine); run the aggregation that makes RESULT on the cluster instead.

    \b
    Examples:
      atlas-engine maps ahba.zarr regions.csv --atlas annotation_full.nii.gz \\
          --genes GRIN1,PVALB --out maps/
      atlas-engine maps structure_graph_1.json table.csv --atlas annotation_25.nrrd \\
          --out maps/ --background nan --plot ortho
      atlas-engine maps - dk_regions.csv --atlas dk.nii.gz --regions labels --out dk.nii.gz
    """
    from ..maps import plot_maps, read_region_table, write_maps
    from ..volumes import open_volume

    table = read_region_table(result)
    if regions == "auto":
        regions = "structures" if table.attrs.get("region_column") == "structure_id" \
            else "labels"
    ontology = None
    if regions == "structures":
        if store == "-":
            raise ConfigError("--regions structures needs STORE (a store, structure graph "
                              "or ontology CSV)")
        ontology = load_ontology(store)
    from ..tuning import process_tuning

    chosen = [g.strip() for g in genes.split(",") if g.strip()] if genes else None
    vol = open_volume(atlas)
    with process_tuning():
        files = write_maps(table, vol, out, genes=chosen, ontology=ontology,
                           background=float("nan") if background == "nan" else 0.0, fmt=fmt)
    for f in files:
        click.echo(str(f))
    if plot != "none":
        outp = Path(out)
        pic_dir = outp if not outp.suffix else outp.parent
        pics = plot_maps(table, vol, chosen or list(table.columns), pic_dir,
                         ontology=ontology, kind=plot)
        for p in pics:
            click.echo(str(p))


@click.command("voxels")
@click.argument("annotation", type=click.Path(exists=True, dir_okay=False))
@click.argument("ontology")
@click.option("--depth", type=int, default=None,
              help="Only structures at this ontology depth (0 = root).")
@click.option("--out", "-o", default=None, type=click.Path(),
              help="CSV to write (default: print the table).")
@click.option("--mask", default=None,
              help="Also write the mask of this structure (id, acronym or name) and its "
                   "descendants to --mask-out.")
@click.option("--mask-out", default=None, type=click.Path(),
              help="Mask file: .nrrd or .nii/.nii.gz (uint8 on the annotation's grid).")
@dask_options
def voxels_cmd(annotation: str, ontology: str, depth: int | None, out: str | None,
               mask: str | None, mask_out: str | None, workers: int | None,
               scheduler: str | None, memory_limit: str | None) -> None:
    """Voxel counts and volumes per structure of an ANNOTATION volume (.nrrd, MetaImage .zip,
    .nii.gz); ONTOLOGY is a structure graph .json, an ontology .csv or a store.

    `voxels` counts each structure's own voxels (voxels_self) and, rolled up the ontology,
    its descendants' too (voxels, volume_mm3).

    With --workers/--scheduler the counting runs on the cluster, one task per slab, when the
    voxels are stored uncompressed (.nii, raw .nrrd, MetaImage .raw: the workers read the file
    in place, so it must be at the same path on them); a compressed volume is counted on this
    machine, with a note. The --mask image is always written here.

    \b
    Example:
      atlas-engine voxels annotation_25.nrrd structure_graph_1.json --depth 3 --out vox.csv
      atlas-engine voxels annotation_25.nrrd structure_graph_1.json --out vox.csv \
          --mask CTX --mask-out ctx_mask.nrrd
    """
    from ..tuning import process_tuning
    from ..volumes import open_volume
    from ..volumes.counts import voxel_counts

    if (mask is None) != (mask_out is None):
        raise ConfigError("--mask and --mask-out go together")
    vol = open_volume(annotation)
    onto = load_ontology(ontology)
    with execution(scheduler, workers, memory_limit) as client, process_tuning():
        if client is not None and vol.raw_at is None:
            click.echo(f"note: {annotation} is compressed: counted on this machine (the "
                       "workers read uncompressed volumes in place)", err=True)
        table = voxel_counts(vol, onto, depth=depth)
        if mask is not None:
            from ..volumes.counts import write_structure_mask

            Path(mask_out).parent.mkdir(parents=True, exist_ok=True)
            click.echo(f"mask of {mask} -> {write_structure_mask(vol, onto, mask, mask_out)}")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out)
        click.echo(f"{len(table)} structures -> {out}")
    else:
        click.echo(table.to_string())
