"""The parameters of :func:`~.expression.get_expression_data`, validated once.

:class:`PipelineParams` is frozen: built (and checked) at the start of a run, it is what
every step reads. :meth:`PipelineParams.record` is the ``params`` dict a result carries (the
provenance and the explanation tables read it; its keys are the ones a run always recorded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..choices import MISSING
from ..errors import ConfigError
from .matching import MATCH_RULES
from .normalize import check_method
from .probes import DONOR_PROBES, POOLED_ONLY, SELECTION_METHODS
from .regions import AGG_METRICS, REGION_AGG
from .registry import check_choice
from .samples import MIRROR_MODES

#: pipeline revision, part of every cache key (bump when cached products change meaning)
CACHE_VERSION = 2


@dataclass(frozen=True)
class PipelineParams:
    """abagen's ``get_expression_data`` options (same names and defaults) plus atlas-engine's
    ``dtype`` and ``match_rule``; invalid values raise :class:`~atlas_engine.errors.
    ConfigError` when built."""

    ibf_threshold: float = 0.5
    probe_selection: str = "diff_stability"
    donor_probes: str = "aggregate"
    sim_threshold: float | None = None
    lr_mirror: str | None = None
    missing: str | None = None
    tolerance: float = 2
    sample_norm: str | None = "srs"
    gene_norm: str | None = "srs"
    norm_matched: bool = True
    norm_structures: bool = False
    region_agg: str = "donors"
    agg_metric: str = "mean"
    corrected_mni: bool = True
    reannotated: bool = True
    return_donors: bool = False
    return_counts: bool = False
    dtype: str = "float64"
    match_rule: str = "abagen"

    def __post_init__(self) -> None:
        # plain Python types, whatever the caller passed (numpy scalars, ints for bools)
        object.__setattr__(self, "ibf_threshold", float(self.ibf_threshold))
        for name in ("norm_matched", "norm_structures", "corrected_mni", "reannotated",
                     "return_donors", "return_counts"):
            object.__setattr__(self, name, bool(getattr(self, name)))
        self._check()

    def _check(self) -> None:
        SELECTION_METHODS.canonical(self.probe_selection)
        check_choice("donor_probes", self.donor_probes, DONOR_PROBES)
        if self.lr_mirror is not None:
            check_choice("lr_mirror", self.lr_mirror, MIRROR_MODES)
        check_choice("match_rule", self.match_rule, MATCH_RULES)
        if self.missing is not None and self.missing not in MISSING:
            raise ConfigError(f"missing={self.missing!r} is not supported; valid: None, "
                              + ", ".join(repr(m) for m in MISSING))
        for k in ("sample_norm", "gene_norm"):
            value = getattr(self, k)
            if value is not None and check_method(value) == "batch":
                # abagen 0.1.3 normalises one donor at a time, so its batch correction sees
                # one batch and raises; the cross-donor correction is batch_correct()
                raise ConfigError(
                    f"{k}='batch' cannot apply here: samples are normalised one donor at a "
                    "time (as abagen does, which raises 'Cannot perform batch correction with "
                    "one batch'); correct donor effects across donors with "
                    "atlas_engine.pipeline.normalize.batch_correct on return_donors=True "
                    "output")
        check_choice("region_agg", self.region_agg, REGION_AGG)
        check_choice("agg_metric", self.agg_metric, AGG_METRICS)
        if self.region_agg == "samples" and self.return_donors:
            raise ConfigError("region_agg='samples' cannot be combined with return_donors")
        if self.dtype not in ("float64", "float32"):
            raise ConfigError(f"dtype must be float64 or float32, got {self.dtype!r}")

    @property
    def method(self) -> str:
        """The canonical probe-selection method name."""
        return SELECTION_METHODS.canonical(self.probe_selection)

    @property
    def selection_mode(self) -> str:
        """``"aggregate"`` or ``"independent"``: how probes are chosen across donors."""
        return "aggregate" if self.method in POOLED_ONLY else self.donor_probes

    def record(self) -> dict[str, Any]:
        """The parameters as a result records them (``match_rule`` only when it departs
        from abagen's)."""
        out = {k: getattr(self, k) for k in (
            "ibf_threshold", "probe_selection", "donor_probes", "sim_threshold", "lr_mirror",
            "missing", "tolerance", "sample_norm", "gene_norm", "norm_matched",
            "norm_structures", "region_agg", "agg_metric", "corrected_mni", "reannotated",
            "return_donors", "return_counts", "dtype")}
        if self.match_rule != "abagen":
            out["match_rule"] = self.match_rule
        return out

    def cache_params(self, donors: list[int]) -> dict[str, Any]:
        """What the atlas-independent products (IBF, selection, chosen rows) depend on: the
        key of their cache entries."""
        out = {k: getattr(self, k) for k in ("probe_selection", "donor_probes",
                                             "sim_threshold", "lr_mirror", "corrected_mni",
                                             "reannotated", "ibf_threshold")}
        out.update(donors=donors, method=self.method, version=CACHE_VERSION)
        return out
