"""abagen-grade processing steps as pure functions (arrays in, arrays out; no I/O, no Dask).

Modules: :mod:`.normalize` (sample/gene normalisation), :mod:`.intensity` (intensity filter),
:mod:`.probe_scores` (per-probe selection scores), :mod:`.probes` (probe selection),
:mod:`.reannotate` (probe reannotation), :mod:`.stability` (gene differential stability), :mod:`.samples` (sample QC,
mirroring), :mod:`.matching` (volumetric atlas matching), :mod:`.regions` (aggregation across
donors), :mod:`.registry` (named dispatch tables).

On a converted store: :mod:`.expression` (``get_expression_data``, abagen's pipeline in
bounded memory, a short orchestrator over its steps: :mod:`.params`, :mod:`.atlas_input`,
:mod:`.sample_qc`, :mod:`.scoring`, :mod:`.chosen`, :mod:`.match_samples`,
:mod:`.region_pass`, :mod:`.donor_norm`, :mod:`.result`), :mod:`.passes` (every pass over the
store's arrays as Dask tasks: threads or a cluster's workers), :mod:`.cache`
(atlas-independent products cached in the store), :mod:`.explain` (probe/gene/sample tables,
methods text, provenance); numba kernels in :mod:`atlas_engine.kernels` (`blockgroups`, `ranks` for differential
stability, `srs` for the scaled robust sigmoid).
"""
