"""atlas-engine: an out-of-core engine for Allen Brain Atlas gene-expression data."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "open_store"]


def __getattr__(name: str):  # lazy: importing the package must not import dask/zarr
    if name == "open_store":
        from .store.open import open_store

        return open_store
    raise AttributeError(f"module 'atlas_engine' has no attribute {name!r}")
