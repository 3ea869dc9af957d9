"""The valid names of every method and mode a caller chooses by name, in one place.

The registries and checks of the library and the command line's choices both take these
tuples from here, so the two cannot drift apart. Pure Python and nothing else: the command
line reads this module to build its ``--help`` without importing numpy or pandas.

A registry filled by ``register(...)`` calls (probe selection, normalisation) keeps its own
order; ``tests/test_choices.py`` checks that its names equal the tuple here, in that order.
"""

from __future__ import annotations

__all__ = [
    "AGGREGATE_STATS",
    "AGG_METRICS",
    "CELL_STATS",
    "COLLAPSE_METHODS",
    "DONOR_MODES",
    "DONOR_PROBES",
    "JOB_STATS",
    "MATCH_RULES",
    "MIRROR_MODES",
    "MISSING",
    "NORMALIZER_NAMES",
    "NORM_METHODS",
    "PROBE_SELECTIONS",
    "REGION_AGG",
]

# -- the abagen-grade pipeline (atlas_engine.pipeline) ----------------------------------------

#: Probe selection methods, aliases last (``mean`` is ``average``): the names of
#: ``pipeline.probes.SELECTION_METHODS`` with its aliases.
PROBE_SELECTIONS: tuple[str, ...] = (
    "max_intensity", "max_variance", "pc_loading", "corr_intensity", "corr_variance",
    "diff_stability", "rnaseq", "average", "mean",
)
#: How probes are selected across donors: pooled, per donor, or the most common choice.
DONOR_PROBES: tuple[str, ...] = ("aggregate", "independent", "common")
#: Normalisation methods of ``pipeline.normalize.NORMALIZERS`` (canonical names, no aliases).
NORMALIZER_NAMES: tuple[str, ...] = (
    "rs", "srs", "sig", "scaled_sig", "scaled_sig_qnt", "mixed_sig", "zscore", "center",
    "minmax",
)
#: Every normalisation a caller may name: :data:`NORMALIZER_NAMES` and ``batch`` (needs donors).
NORM_METHODS: tuple[str, ...] = (*NORMALIZER_NAMES, "batch")
#: Hemisphere mirroring of samples (``lr_mirror``).
MIRROR_MODES: tuple[str, ...] = ("bidirectional", "leftright", "rightleft")
#: How regions without samples are filled (``missing``).
MISSING: tuple[str, ...] = ("centroids", "interpolate")
#: Average within donors first, or pool the samples (``region_agg``).
REGION_AGG: tuple[str, ...] = ("donors", "samples")
#: Statistic of the region aggregation (``agg_metric``).
AGG_METRICS: tuple[str, ...] = ("mean", "median")
#: Sample-to-region rule with ``atlas_info`` (``match_rule``): ``"abagen"`` (abagen 0.1.3's
#: code) or ``"majority"`` (voxel-count vote also after the hemisphere/class filter).
MATCH_RULES: tuple[str, ...] = ("abagen", "majority")

# -- aggregation of a store (atlas_engine.aggregate, atlas_engine.celltypes) ------------------

#: Statistics of an AHBA or BrainSpan aggregation (``stat``).
AGGREGATE_STATS: tuple[str, ...] = ("mean", "median", "sum", "count", "std", "var", "min",
                                    "max")
#: The statistics ``atlas-engine run`` / ``demo`` offer: :data:`AGGREGATE_STATS` but ``count``,
#: which is the same for every gene of a region (the job's heatmap z-scores each gene).
JOB_STATS: tuple[str, ...] = ("mean", "median", "sum", "std", "var", "min", "max")
#: How a gene's probes are collapsed into one column (``collapse``, ``gene:<method>``).
COLLAPSE_METHODS: tuple[str, ...] = ("mean", "max_intensity", "max_variance")
#: How donors are combined (``combine``).
DONOR_MODES: tuple[str, ...] = ("combined", "pooled", "each")
#: Statistics of a Cell Types aggregation (``stats``; ``all`` names every one).
CELL_STATS: tuple[str, ...] = ("sum", "mean", "var", "nnz", "frac", "cpm", "logcpm",
                               "trimmed_mean", "median")
