"""abagen-grade processing steps as pure functions (arrays in, arrays out; no I/O, no Dask).

Modules: :mod:`.normalize` (sample/gene normalisation), :mod:`.probes` (intensity filter and
probe selection), :mod:`.stability` (gene differential stability), :mod:`.samples` (sample QC,
mirroring), :mod:`.matching` (volumetric atlas matching), :mod:`.regions` (aggregation across
donors), :mod:`.registry` (named dispatch tables).
"""
