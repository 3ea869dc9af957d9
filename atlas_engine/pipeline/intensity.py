"""The intensity-based probe filter (abagen's ``filter_probes``, §4.5): :class:`IntensityFilter`
and :func:`intensity_filter`, on per-donor PACall arrays in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

# --------------------------------------------------------------------------------------------
# intensity-based filter (§4.5)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntensityFilter:
    """Result of :func:`intensity_filter`.

    ``fraction`` is the share of samples above background per probe: (P,) pooled over donors, or
    (P, D) per donor when ``per_donor=True`` (then a probe is kept only if every donor passes).
    """

    keep: np.ndarray
    fraction: np.ndarray
    signal: np.ndarray
    n_samples: np.ndarray
    threshold: float

    def reasons(self) -> list[str]:
        """Why each probe was kept or dropped, one sentence per probe. Probes share few
        distinct (kept, share) pairs, so each pair's sentence is formatted once."""
        frac = self.fraction if self.fraction.ndim == 1 else self.fraction.min(axis=1)
        word = "above background in" if self.fraction.ndim == 1 else "lowest donor share"
        if not len(frac):
            return []
        keep = np.asarray(self.keep, dtype=bool)
        shares, which = np.unique(np.asarray(frac, dtype=np.float64), return_inverse=True)
        pairs, where = np.unique(which.reshape(-1) * 2 + keep, return_inverse=True)
        text = np.array([
            f"{'kept' if p % 2 else 'dropped'} by intensity filter: {word} "
            f"{shares[p // 2]:.3f} {'>=' if p % 2 else '<'} {self.threshold:g}"
            for p in pairs.tolist()], dtype=object)
        return text[where.reshape(-1)].tolist()


def intensity_filter(
    pacall: Sequence[np.ndarray], threshold: float = 0.5, per_donor: bool = False
) -> IntensityFilter:
    """Keep probes above background in at least ``threshold`` of the samples.

    Parameters
    ----------
    pacall : sequence of (P, S_d) bool arrays
        Per donor the PACall flags of the samples left after sample QC (mirrored duplicates
        included as extra columns).
    threshold : float
        Clipped to [0, 1]; a probe is kept when ``signal / n >= threshold``.
    per_donor : bool
        False (abagen): pool every donor's samples. True: the fraction is computed per donor
        and a probe must pass in every donor.
    """
    if not pacall:
        raise ConfigError("intensity filter needs at least one donor")
    t = float(np.clip(threshold, 0.0, 1.0))
    signal = np.column_stack([np.asarray(p).sum(axis=1, dtype=np.int64) for p in pacall])
    n = np.asarray([np.asarray(p).shape[1] for p in pacall], dtype=np.int64)
    if per_donor:
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = signal / n
        keep = np.all(frac >= t, axis=1)
        return IntensityFilter(keep, frac, signal, n, t)
    tot_signal = signal.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = tot_signal / n.sum()
    return IntensityFilter(frac >= t, frac, tot_signal, np.asarray(n.sum()), t)
