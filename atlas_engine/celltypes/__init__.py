"""Cell Types Database transcriptomics: data sets, conversion to an AnnData Zarr store, and
per-cell-type aggregation through the engine's one chunk -> combine -> finalize path.

* :mod:`.datasets` - the named data sets (layouts, URLs, file names; pure data)
* :mod:`.metadata` - cell metadata tables to ``obs`` (categoricals with colours and order)
* :mod:`.convert` - streaming conversion of count matrices (either orientation) to the store:
  the portal layout here, the 2018 zips in :mod:`.convert_zip`, what both share in
  :mod:`.assembly`
* :mod:`.store` - reading the store in CSR row blocks (numpy or Dask)
* :mod:`.aggregate` - grouped statistics of the counts (mean, var, CPM, trimmed mean, ...)
* :mod:`.markers` - marker signatures scored across AHBA regions
"""
