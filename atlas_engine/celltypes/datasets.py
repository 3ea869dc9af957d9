"""The named Cell Types Database data sets (pure data; see shared more_datasets.md §1).

Two layouts:

* ``zip2018`` - one zip per data set (a well-known file) holding ``{prefix}_exon-matrix.csv`` and
  ``{prefix}_intron-matrix.csv`` (genes × cells, R ``write.csv`` quoting, Entrez-id rows),
  ``{prefix}_genes-rows.csv``, ``{prefix}_samples-columns.csv`` and ``{prefix}_readme.txt``;
* ``portal`` - plain files in the download bucket under ``{bucket_prefix}/``: ``matrix.csv``
  (cells × genes, ``sample_name`` first), ``metadata.csv`` (``_label/_order/_color`` triples),
  and for some sets ``trimmed_means.csv`` / ``medians.csv`` (genes × clusters).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

#: The download bucket of the portal CSVs.
BUCKET_URL = "https://idk-etl-prod-download-bucket.s3.amazonaws.com"
#: Where the 2018 zips are served (well-known files).
CELLTYPES_API_URL = "http://celltypes.brain-map.org"


@dataclass(frozen=True)
class CellTypeDataset:
    """One data set: its layout and the files that make it up.

    Attributes
    ----------
    name : str
        The ``--what celltypes:<name>`` value.
    layout : {"zip2018", "portal"}
    species : {"human", "mouse"}
    title : str
    wkf_id : int, optional
        ``zip2018``: the well-known file id of the zip.
    zip_name : str, optional
        ``zip2018``: the zip's file name.
    prefix : str, optional
        ``zip2018``: the member name prefix (``human_MTG_2018-06-14``).
    bucket_prefix : str, optional
        ``portal``: the folder in the bucket (``aibs_human_m1_10x``).
    files : tuple of str
        ``portal``: the files fetched by default.
    """

    name: str
    layout: str
    species: str
    title: str
    wkf_id: int | None = None
    zip_name: str | None = None
    prefix: str | None = None
    bucket_prefix: str | None = None
    files: tuple[str, ...] = ()

    def member(self, part: str) -> str:
        """``zip2018`` member name, e.g. ``member("exon-matrix")``."""
        return f"{self.prefix}_{part}.csv" if part != "readme" else f"{self.prefix}_readme.txt"


DATASETS: dict[str, CellTypeDataset] = {d.name: d for d in (
    CellTypeDataset("human-mtg", "zip2018", "human", "Human MTG SMART-seq (2018)",
                    wkf_id=694416044, zip_name="human_MTG_gene_expression_matrices_2018-06-14.zip",
                    prefix="human_MTG_2018-06-14"),
    CellTypeDataset("mouse-visp", "zip2018", "mouse", "Mouse VISp SMART-seq (2018)",
                    wkf_id=694413985,
                    zip_name="mouse_VISp_gene_expression_matrices_2018-06-14.zip",
                    prefix="mouse_VISp_2018-06-14"),
    CellTypeDataset("human-m1", "portal", "human", "Human M1 10x (2020)",
                    bucket_prefix="aibs_human_m1_10x",
                    files=("matrix.csv", "metadata.csv", "trimmed_means.csv", "medians.csv")),
    CellTypeDataset("human-mca", "portal", "human",
                    "Human multiple cortical areas SMART-seq (2019)",
                    bucket_prefix="aibs_human_ctx_smart-seq",
                    files=("matrix.csv", "metadata.csv", "trimmed_means.csv")),
    CellTypeDataset("mouse-ctx-hpf-10x", "portal", "mouse",
                    "Mouse whole cortex and hippocampus 10x (2020)",
                    bucket_prefix="aibs_mouse_ctx-hpf_10x", files=("matrix.csv", "metadata.csv")),
    CellTypeDataset("mouse-ctx-hpf-smartseq", "portal", "mouse",
                    "Mouse whole cortex and hippocampus SMART-seq (2019)",
                    bucket_prefix="aibs_mouse_ctx-hpf_smart-seq",
                    files=("matrix.csv", "metadata.csv")),
)}


def get_dataset(name: str) -> CellTypeDataset:
    """The data set called ``name`` (a :class:`~atlas_engine.errors.ConfigError` otherwise)."""
    key = name.strip().lower()
    if key not in DATASETS:
        raise ConfigError(f"unknown cell-types data set {name!r} (known: {', '.join(DATASETS)})")
    return DATASETS[key]


def bucket_url(base_url: str, dataset: CellTypeDataset, filename: str) -> str:
    """``{base}/{bucket_prefix}/{filename}`` of a portal file."""
    if dataset.bucket_prefix is None:
        raise ConfigError(f"{dataset.name} is not a portal data set")
    return f"{base_url.rstrip('/')}/{dataset.bucket_prefix}/{filename}"
