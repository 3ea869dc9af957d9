"""The generating model behind ``atlas-engine synth``: probes, genes, samples and values.

Everything here is pure (arrays and tables in, arrays and tables out) and seeded; the file
writers live in :mod:`atlas_engine.testing.synth`.

Expression model (log2 scale, per probe ``p`` of gene ``g``, sample ``j`` on leaf ``s``, donor
``d``)::

    value = level[g] + offset[p] + amp[g] * (loading[g] · factors[s]) + shift[d]
            + donor_offset[d, p] + sample_shift[d, j] + sd[p] * noise

floored at :data:`FLOOR` (the repeated minimum seen in the real files). ``factors[s]`` sums
random vectors along the structure's ontology path, so structures of one lobe or nucleus group
resemble each other; ``amp`` is large for a minority of "variable" genes, so top-variable-gene
selection has something to find. PACall is 1 with probability ``logistic(slope * (value -
midpoint))``.

The probe and gene tables are built in :mod:`.synth_probes`, the structures and samples in
:mod:`.synth_samples`; this module holds the values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels.synthtext import (
    CEILING,
    FLOOR,
    FLOOR_MANTISSA,
    PA_MIDPOINT,
    PA_SLOPE,
    _combine_block,
    _to_mantissa,
)
from ..sources.donors import Donor
from .synth_probes import FIXTURE_PROBES, ProbeModel, build_probes, probe_ids
from .synth_samples import (
    BOTH_HEMISPHERES,
    N_FACTORS,
    DonorSamples,
    StructureModel,
    build_samples,
    build_structures,
)

__all__ = [
    "BLOCK_ROWS", "BOTH_HEMISPHERES", "CEILING", "FIXTURE_PROBES", "FLOOR", "FLOOR_MANTISSA",
    "N_FACTORS", "PA_MIDPOINT", "PA_SLOPE", "REPR_SHARE", "DonorSamples", "DonorValues",
    "ProbeModel", "StructureModel", "build_probes", "build_samples", "build_structures",
    "donor_values", "probe_ids", "scaled_count", "value_tokens",
]

# FLOOR, FLOOR_MANTISSA, CEILING, PA_MIDPOINT and PA_SLOPE are compiled into the value kernels
# (_combine_block, _to_mantissa), so they are defined with them in atlas_engine.kernels.synthtext.
#: Rows of the probe × sample matrix generated per block (fixed: part of the seeded output).
BLOCK_ROWS = 512
#: Share of matrix values written with Python's repr of an unrounded double (16-17 digits).
REPR_SHARE = 0.03

def scaled_count(count: int, fraction: float, minimum: int) -> int:
    """``max(minimum, round(count * fraction))`` (never more than ``count`` when fraction ≤ 1)."""
    return max(int(minimum), int(round(count * fraction)))


# ---------------------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------------------

@dataclass
class DonorValues:
    """Everything needed to generate one donor's matrix blocks (picklable)."""

    donor_id: int
    seed: int
    probe_ids: np.ndarray        # (P,)
    level: np.ndarray            # (P,)
    amp: np.ndarray              # (P,)
    loading: np.ndarray          # (P, K)
    sd: np.ndarray               # (P,)
    sample_factors: np.ndarray   # (S, K) factors of each sample's leaf
    shift: float

    @property
    def n_blocks(self) -> int:
        return -(-self.probe_ids.size // BLOCK_ROWS)

    def block(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of block ``b``: (probe ids, values (n, S) float64, PACall (n, S) bool).

        Values are floored at :data:`FLOOR` and capped at :data:`CEILING`.
        """
        lo = b * BLOCK_ROWS
        hi = min(lo + BLOCK_ROWS, self.probe_ids.size)
        n = hi - lo
        s = self.sample_factors.shape[0]
        rng = np.random.default_rng([self.seed, 4, self.donor_id, b])
        offset = self.level[lo:hi] + self.shift + rng.normal(0.0, 0.12, n)
        sample_shift = np.random.default_rng([self.seed, 5, self.donor_id]).normal(0, 0.1, s)
        noise = rng.standard_normal((n, s), dtype=np.float32)
        uniform = rng.random((n, s), dtype=np.float32)
        v = np.empty((n, s), dtype=np.float64)
        pa = np.empty((n, s), dtype=np.bool_)
        _combine_block(offset, self.amp[lo:hi], self.loading[lo:hi], self.sd[lo:hi],
                       self.sample_factors, sample_shift, noise, uniform, v, pa)
        return self.probe_ids[lo:hi], v, pa


def donor_values(donor: Donor, probes: ProbeModel, structures: StructureModel,
                 samples: DonorSamples, seed: int) -> DonorValues:
    shift = float(np.random.default_rng([seed, 6, donor.id]).normal(0.0, 0.15))
    return DonorValues(
        donor_id=donor.id, seed=seed,
        probe_ids=probes.table["probe_id"].to_numpy(np.int64),
        level=probes.level, amp=probes.amp, loading=probes.loading, sd=probes.sd,
        sample_factors=structures.factors[samples.leaf], shift=shift,
    )


def value_tokens(v: np.ndarray, rng: np.random.Generator, repr_share: float = REPR_SHARE
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Split a float block into repr-exact decimal mantissas and a few full-repr overrides.

    Returns ``(mantissa, frac_digits, override_pos, override_text)``: most values become
    15-significant-digit decimals (``mantissa / 10**frac_digits``; values at the floor become
    exactly :data:`FLOOR`); about a ``repr_share`` of them keep their unrounded double and are
    written as ``repr(float)`` (mostly 16-17 digits), at the flat positions ``override_pos``.
    """
    mant = np.empty(v.shape, dtype=np.int64)
    frac = np.empty(v.shape, dtype=np.int8)
    _to_mantissa(np.ascontiguousarray(v), mant, frac)
    k = int(rng.binomial(v.size, repr_share)) if repr_share > 0 else 0
    flat = v.ravel()
    pick = np.sort(rng.choice(v.size, size=k, replace=False)) if k else np.zeros(0, np.int64)
    pick = pick[flat[pick] > FLOOR]
    return mant, frac, pick, list(map(repr, flat[pick].tolist()))
