"""GTEx: median-TPM GCT files (reading, fetching) and the cross-reference with Allen data."""
