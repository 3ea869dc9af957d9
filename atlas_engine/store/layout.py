"""Names and constants of the Zarr v3 store layout (described in docs/store-layout.md)."""

from __future__ import annotations

#: root attribute holding the store description
ROOT_ATTR = "atlas_engine"
FORMAT_MICROARRAY = "ahba-microarray"
FORMAT_BRAINSPAN = "brainspan-rnaseq-genes"
#: store layout version: 2 added a CRC-32C to every chunk (zarr v3 ``crc32c`` codec) and writes
#: every chunk; stores of an older layout are refused by readers ("re-convert")
LAYOUT_VERSION = 2

PROBES_GROUP = "probes"
ONTOLOGY_GROUP = "ontology"
DONORS_GROUP = "donors"
#: AHBA RNA-seq donors (``rnaseq/{id}``: tpm, counts, gene and sample tables)
RNASEQ_GROUP = "rnaseq"
#: the (gene, sample) arrays of an RNA-seq donor group
RNASEQ_ARRAYS = ("tpm", "counts")
#: BrainSpan stores: gene rows and sample columns
GENES_GROUP = "genes"
SAMPLES_GROUP = "samples"
#: staging area for donors being written (local stores); never listed by readers
STAGING_DIR = ".staging"
#: the lock file of a local store: held (``flock``) by the one process converting into it
LOCK_FILE = ".lock"

PROBE_DIM = "probe"
SAMPLE_DIM = "sample"
STRUCTURE_DIM = "structure"
GENE_DIM = "gene"

EXPRESSION = "expression"
PACALL = "pacall"

PROBE_COLUMNS = ("probe_id", "probe_name", "gene_id", "gene_symbol", "gene_name", "entrez_id",
                 "chromosome")
SAMPLE_COLUMNS = ("structure_id", "slab_num", "well_id", "slab_type", "structure_acronym",
                  "structure_name", "polygon_id", "mri_voxel_x", "mri_voxel_y", "mri_voxel_z",
                  "mni_x", "mni_y", "mni_z")
SAMPLE_INT_COLUMNS = ("structure_id", "slab_num", "well_id", "polygon_id", "mri_voxel_x",
                      "mri_voxel_y", "mri_voxel_z")
SAMPLE_FLOAT_COLUMNS = ("mni_x", "mni_y", "mni_z")

#: missing integer marker (entrez_id, parent_structure_id)
MISSING_INT = -1

#: default chunk shape of expression / pacall: (probes, samples); chosen by benchmark
PROBE_CHUNK = 4096
SAMPLE_CHUNK = 256


def donor_path(donor_id: int) -> str:
    """Group path of one donor inside the store."""
    return f"{DONORS_GROUP}/{int(donor_id)}"
