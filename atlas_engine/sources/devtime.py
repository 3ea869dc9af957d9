"""BrainSpan developmental time: age strings, Kang et al. 2011 periods, a continuous age axis,
and coarse structure groups (pure functions, no I/O).

Ages are strings ``"<number> <unit>"`` with unit ``pcw`` (post-conception weeks), ``mos``
(postnatal months) or ``yrs`` (postnatal years), one space between (shared more_datasets.md §3).

Continuous axis (the rule used everywhere in atlas-engine): birth is at 38 post-conception weeks
(as in timefit's ``PCW``: ``(pcw - 38) * 7 / 365`` postnatal years), a month is a twelfth of a
year and a year 365 days, so

* ``age_years`` (postnatal years; negative before birth) = ``(pcw - 38) * 7 / 365``,
  ``months / 12`` or ``years``;
* ``age_pcd`` (post-conception days) = ``38 * 7 + age_years * 365`` (``pcw * 7`` before birth).

Periods (Kang et al. 2011; lower bound inclusive, upper exclusive): prenatal ages are compared in
pcw, postnatal ages in months (a year is 12 months), so no rounding enters the assignment. An age
of 38 pcw or more is at or after birth and falls in P8.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ConfigError

#: weeks from conception to birth on the continuous axis
BIRTH_PCW = 38
UNITS = ("pcw", "mos", "yrs")

#: The 31 distinct age strings of BrainSpan's RNA-seq samples, youngest first.
BRAINSPAN_AGES = (
    "8 pcw", "9 pcw", "12 pcw", "13 pcw", "16 pcw", "17 pcw", "19 pcw", "21 pcw", "24 pcw",
    "25 pcw", "26 pcw", "35 pcw", "37 pcw", "4 mos", "10 mos", "1 yrs", "2 yrs", "3 yrs",
    "4 yrs", "8 yrs", "11 yrs", "13 yrs", "15 yrs", "18 yrs", "19 yrs", "21 yrs", "23 yrs",
    "30 yrs", "36 yrs", "37 yrs", "40 yrs",
)


@dataclass(frozen=True)
class Period:
    """One Kang et al. 2011 period: ``[lo, hi)`` in ``unit`` (pcw before birth, months after)."""

    code: str
    name: str
    unit: str
    lo: float
    hi: float

    @property
    def number(self) -> int:
        return int(self.code[1:])


PERIODS: tuple[Period, ...] = (
    Period("P1", "Embryonic", "pcw", 4, 8),
    Period("P2", "Early fetal", "pcw", 8, 10),
    Period("P3", "Early fetal", "pcw", 10, 13),
    Period("P4", "Early mid-fetal", "pcw", 13, 16),
    Period("P5", "Early mid-fetal", "pcw", 16, 19),
    Period("P6", "Late mid-fetal", "pcw", 19, 24),
    Period("P7", "Late fetal", "pcw", 24, 38),
    Period("P8", "Neonatal and early infancy", "mos", 0, 6),
    Period("P9", "Late infancy", "mos", 6, 12),
    Period("P10", "Early childhood", "mos", 12, 72),
    Period("P11", "Middle and late childhood", "mos", 72, 144),
    Period("P12", "Adolescence", "mos", 144, 240),
    Period("P13", "Young adulthood", "mos", 240, 480),
    Period("P14", "Middle adulthood", "mos", 480, 720),
    Period("P15", "Late adulthood", "mos", 720, math.inf),
)
PERIOD_BY_CODE = {p.code: p for p in PERIODS}

#: Coarse groups of BrainSpan's 26 structure acronyms (prenatal precursors go with the adult
#: structure they become: the ganglionic eminences are their own group, URL and CB join CBC).
STRUCTURE_GROUPS: dict[str, tuple[str, ...]] = {
    "neocortex": ("Ocx", "PCx", "TCx", "M1C-S1C", "DFC", "VFC", "MFC", "OFC", "M1C", "S1C", "IPC",
                  "A1C", "STC", "ITC", "V1C"),
    "hippocampus": ("HIP",),
    "amygdala": ("AMY",),
    "striatum": ("STR",),
    "ganglionic eminence": ("MGE", "LGE", "CGE"),
    "thalamus": ("DTH", "MD"),
    "cerebellum": ("CBC", "CB", "URL"),
}
GROUP_OF_STRUCTURE = {acr: g for g, acrs in STRUCTURE_GROUPS.items() for acr in acrs}

_AGE_RE = re.compile(r"^(\d+(?:\.\d+)?) (pcw|mos|yrs)$")


def parse_age(age: str) -> tuple[float, str]:
    """``"8 pcw"`` → ``(8.0, "pcw")``; anything else raises :class:`ConfigError`."""
    m = _AGE_RE.match(str(age).strip())
    if not m:
        raise ConfigError(f"age {age!r} is not '<number> pcw|mos|yrs' (e.g. '8 pcw', '4 mos', "
                          "'40 yrs')")
    return float(m.group(1)), m.group(2)


def age_years(age: str) -> float:
    """Postnatal years on the continuous axis (negative before birth; see the module doc)."""
    value, unit = parse_age(age)
    if unit == "pcw":
        return (value - BIRTH_PCW) * 7 / 365
    return value / 12 if unit == "mos" else value


def age_pcd(age: str) -> float:
    """Post-conception days on the continuous axis (``pcw * 7`` before birth)."""
    value, unit = parse_age(age)
    if unit == "pcw":
        return value * 7
    return BIRTH_PCW * 7 + age_years(age) * 365


def period_of(age: str) -> Period:
    """The Kang period holding ``age`` (lower bound inclusive, upper exclusive)."""
    value, unit = parse_age(age)
    if unit == "pcw" and value < BIRTH_PCW:
        scale, where = value, "pcw"
    else:
        months = {"pcw": (value - BIRTH_PCW) * 7 / 365 * 12, "mos": value, "yrs": value * 12}
        scale, where = months[unit], "mos"
    for p in PERIODS:
        if p.unit == where and p.lo <= scale < p.hi:
            return p
    raise ConfigError(f"age {age!r} is before period P1 (which starts at 4 pcw)")


def age_table(ages: Iterable[str]) -> pd.DataFrame:
    """One row per distinct age: ``age``, ``age_years``, ``age_pcd``, ``period``,
    ``period_name``, ordered youngest first (``age`` is an ordered categorical)."""
    distinct = list(dict.fromkeys(str(a) for a in ages))
    rows = []
    for a in distinct:
        p = period_of(a)
        rows.append((a, age_years(a), age_pcd(a), p.code, p.name))
    t = pd.DataFrame(rows, columns=["age", "age_years", "age_pcd", "period", "period_name"])
    t = t.sort_values("age_pcd", kind="stable").reset_index(drop=True)
    t["age"] = pd.Categorical(t["age"], categories=t["age"].tolist(), ordered=True)
    return t


def annotate_samples(samples: pd.DataFrame) -> pd.DataFrame:
    """``columns_metadata`` rows plus ``age_years``, ``age_pcd``, ``period``, ``period_name``
    and ``region`` (the coarse structure group; ``other`` for an acronym in no group)."""
    out = samples.copy()
    ages = age_table(out["age"].astype(str))
    by_age = ages.set_index(ages["age"].astype(str))
    key = out["age"].astype(str)
    for c in ("age_years", "age_pcd", "period", "period_name"):
        out[c] = by_age.loc[key, c].to_numpy()
    out["region"] = [GROUP_OF_STRUCTURE.get(str(a), "other") for a in out["structure_acronym"]]
    return out


def period_order(codes: Sequence[str]) -> list[str]:
    """``codes`` sorted by period number (P2 before P10)."""
    return sorted(dict.fromkeys(codes), key=lambda c: PERIOD_BY_CODE[c].number)


def period_bounds_years(code: str) -> tuple[float, float]:
    """A period's ``[lo, hi)`` on the ``age_years`` axis (for shading plots)."""
    p = PERIOD_BY_CODE[code]
    if p.unit == "pcw":
        return (p.lo - BIRTH_PCW) * 7 / 365, (p.hi - BIRTH_PCW) * 7 / 365
    return p.lo / 12, (p.hi / 12 if np.isfinite(p.hi) else math.inf)
