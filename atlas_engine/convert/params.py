"""The validated parameters of a microarray conversion (one frozen value, checked once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import parse_size
from ..errors import ConfigError
from ..store import layout as L

#: what a nan/inf token becomes: an error (default) or NaN, counted in the provenance
NONFINITE = ("refuse", "nan")


@dataclass(frozen=True)
class ConvertOptions:
    """How donors are converted.

    Parameters
    ----------
    dtype : {"float32", "float64"}
        Stored expression values.
    probe_chunk, sample_chunk : int
        Chunk shape of the matrices (both ≥ 1).
    memory_limit : int, optional
        Working-memory target in bytes (the memory plan, :mod:`.memplan`); 1 GiB when None.
    jobs : int, optional
        Donors converted at once (default: two on two or more cores, within the memory plan).
    nonfinite : {"refuse", "nan"}
        A nan/inf token is an error, or stored as NaN and counted.
    """

    dtype: str = "float32"
    probe_chunk: int = L.PROBE_CHUNK
    sample_chunk: int = L.SAMPLE_CHUNK
    memory_limit: int | None = None
    jobs: int | None = None
    nonfinite: str = "refuse"

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"--dtype must be float32 or float64, not {self.dtype!r}")
        if self.probe_chunk < 1 or self.sample_chunk < 1:
            raise ConfigError("chunk sizes must be ≥ 1")
        if self.jobs is not None and self.jobs < 1:
            raise ConfigError(f"--jobs must be ≥ 1, not {self.jobs}")
        if self.memory_limit is not None and self.memory_limit < 1:
            raise ConfigError(f"--memory-limit must be positive, not {self.memory_limit}")
        if self.nonfinite not in NONFINITE:
            raise ConfigError(f"nonfinite must be one of {NONFINITE}, not {self.nonfinite!r}")

    @classmethod
    def from_args(cls, *, dtype: str = "float32", probe_chunk: int = L.PROBE_CHUNK,
                  sample_chunk: int = L.SAMPLE_CHUNK, memory_limit: int | str | None = None,
                  jobs: int | None = None, allow_nonfinite: bool = False) -> ConvertOptions:
        """The options from the keyword arguments of ``convert_microarray`` (sizes such as
        ``"512MB"`` parsed)."""
        return cls(dtype, probe_chunk, sample_chunk, parse_size(memory_limit), jobs,
                   "nan" if allow_nonfinite else "refuse")

    def record(self) -> dict[str, Any]:
        """What the store's provenance records (the options that change the stored bytes)."""
        return {"dtype": self.dtype, "probe_chunk": self.probe_chunk,
                "sample_chunk": self.sample_chunk, "nonfinite": self.nonfinite}
