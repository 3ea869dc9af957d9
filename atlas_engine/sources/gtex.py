"""GTEx median-TPM GCT files: names, URLs and tissue columns (pure data, no I/O).

Shared more_datasets.md §4: ``#1.2``, a dimensions line ``<rows>\\t<data columns>``, a header
``Name\\tDescription\\t<tissue>…`` and one row per gene (``Name`` a versioned Ensembl id,
``Description`` the symbol), gzip-compressed.
"""

from __future__ import annotations

from ..errors import ConfigError

#: bucket host; files live under ``/adult-gtex/bulk-gex/<version>/rna-seq/`` (current bucket)
GTEX_BASE_URL = "https://storage.googleapis.com"
GTEX_FILES = {
    "v8": "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_median_tpm.gct.gz",
    "v10": "GTEx_Analysis_v10_RNASeQCv2.4.2_gene_median_tpm.gct.gz",
}

#: the 54 v8 tissue columns, alphabetical as in the file
TISSUES = (
    "Adipose - Subcutaneous", "Adipose - Visceral (Omentum)", "Adrenal Gland", "Artery - Aorta",
    "Artery - Coronary", "Artery - Tibial", "Bladder", "Brain - Amygdala",
    "Brain - Anterior cingulate cortex (BA24)", "Brain - Caudate (basal ganglia)",
    "Brain - Cerebellar Hemisphere", "Brain - Cerebellum", "Brain - Cortex",
    "Brain - Frontal Cortex (BA9)", "Brain - Hippocampus", "Brain - Hypothalamus",
    "Brain - Nucleus accumbens (basal ganglia)", "Brain - Putamen (basal ganglia)",
    "Brain - Spinal cord (cervical c-1)", "Brain - Substantia nigra", "Breast - Mammary Tissue",
    "Cells - Cultured fibroblasts", "Cells - EBV-transformed lymphocytes", "Cervix - Ectocervix",
    "Cervix - Endocervix", "Colon - Sigmoid", "Colon - Transverse",
    "Esophagus - Gastroesophageal Junction", "Esophagus - Mucosa", "Esophagus - Muscularis",
    "Fallopian Tube", "Heart - Atrial Appendage", "Heart - Left Ventricle", "Kidney - Cortex",
    "Kidney - Medulla", "Liver", "Lung", "Minor Salivary Gland", "Muscle - Skeletal",
    "Nerve - Tibial", "Ovary", "Pancreas", "Pituitary", "Prostate",
    "Skin - Not Sun Exposed (Suprapubic)", "Skin - Sun Exposed (Lower leg)",
    "Small Intestine - Terminal Ileum", "Spleen", "Stomach", "Testis", "Thyroid", "Uterus",
    "Vagina", "Whole Blood",
)
BRAIN_TISSUES = tuple(t for t in TISSUES if t.startswith("Brain - "))


def gtex_url(version: str, base_url: str | None = None) -> str:
    """``{base}/adult-gtex/bulk-gex/{version}/rna-seq/{file}`` (base: the GTEx bucket)."""
    if version not in GTEX_FILES:
        raise ConfigError(f"unknown GTEx version {version!r} (known: {', '.join(GTEX_FILES)})")
    base = (base_url or GTEX_BASE_URL).rstrip("/")
    return f"{base}/adult-gtex/bulk-gex/{version}/rna-seq/{GTEX_FILES[version]}"
