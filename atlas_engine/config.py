"""Engine-wide defaults, each overridable by an environment variable."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .errors import ConfigError

#: The real Allen API. Mirrors (``atlas-engine serve``) are chosen with ``--base-url``.
DEFAULT_BASE_URL = "https://human.brain-map.org"
BRAINSPAN_BASE_URL = "https://www.brainspan.org"
#: GTEx's bucket (files under /adult-gtex/bulk-gex/<version>/rna-seq/)
GTEX_BASE_URL = "https://storage.googleapis.com"

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "tib": 2**40,
}


def parse_size(text: str | int | None) -> int | None:
    """Parse ``"512MB"``, ``"2GiB"``, ``"1e9"`` or an int into a byte count (``None`` stays ``None``)."""
    if text is None or isinstance(text, int):
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        try:
            return int(float(text))
        except ValueError:
            raise ConfigError(f"cannot read {text!r} as a size (expected e.g. 512MB, 2GiB)") from None
    unit = (m.group(2) or "").lower()
    if unit not in _UNITS:
        raise ConfigError(f"unknown size unit in {text!r} (expected B, kB, MB, GB, KiB, MiB, GiB)")
    return int(float(m.group(1)) * _UNITS[unit])


@dataclass
class Config:
    """Runtime configuration; ``Config.from_env()`` reads ``ATLAS_ENGINE_*`` variables."""

    base_url: str = DEFAULT_BASE_URL
    brainspan_base_url: str = BRAINSPAN_BASE_URL
    gtex_base_url: str = GTEX_BASE_URL
    data_dir: str = field(default_factory=lambda: os.path.expanduser("~/atlas-engine-data"))
    memory_limit: int | None = None
    scheduler: str | None = None

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        cfg = cls()
        cfg.base_url = env.get("ATLAS_ENGINE_BASE_URL", cfg.base_url)
        cfg.brainspan_base_url = env.get("ATLAS_ENGINE_BRAINSPAN_URL", cfg.brainspan_base_url)
        cfg.gtex_base_url = env.get("ATLAS_ENGINE_GTEX_URL", cfg.gtex_base_url)
        cfg.data_dir = env.get("ATLAS_ENGINE_DATA", cfg.data_dir)
        cfg.memory_limit = parse_size(env.get("ATLAS_ENGINE_MEMORY_LIMIT"))
        cfg.scheduler = env.get("DASK_SCHEDULER_ADDRESS")
        return cfg
