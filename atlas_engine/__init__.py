"""atlas-engine: an out-of-core engine for Allen Brain Atlas gene-expression data.

The whole job from Python::

    import atlas_engine as ae

    ae.fetch("raw/")                                   # the six donor zips, verified
    ae.convert("raw/", "ahba.zarr")                    # one Zarr v3 store
    store = ae.open_store("ahba.zarr")                 # donors, probes, samples, ontology
    res = ae.aggregate("ahba.zarr", by="depth:5", collapse="mean")
    dk = ae.get_expression_data("ahba.zarr", "desikan-killiany")   # abagen's pipeline

Every name is imported on first use, so ``import atlas_engine`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    # fetch, convert and aggregate are subpackages that can be called (see _callable.py)
    "fetch": (".fetch", ""),
    "afetch": (".fetch.ahba", "afetch_ahba"),
    "convert": (".convert", ""),
    "open_store": (".store.open", "open_store"),
    "verify_store": (".store.verify", "verify_store"),
    "aggregate": (".aggregate", ""),
    "collapse_probes": (".aggregate.collapse", "collapse_probes"),
    "open_cube": (".aggregate.result", "open_cube"),
    "get_expression_data": (".pipeline.expression", "get_expression_data"),
    "RmaClient": (".fetch.rma", "RmaClient"),
    "HumanBrainAtlas": (".fetch.api", "HumanBrainAtlas"),
    # reference atlases and brain maps
    "ontology_from_structure_graph": (".store.graph", "ontology_from_structure_graph"),
    "open_volume": (".volumes", "open_volume"),
    "voxel_counts": (".volumes.counts", "voxel_counts"),
    "structure_mask": (".volumes.counts", "structure_mask"),
    "write_maps": (".maps.write", "write_maps"),
    "plot_map": (".maps.plot", "plot_map"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:  # lazy: importing the package must not import dask/zarr
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'atlas_engine' has no attribute {name!r}") from None
    value = importlib.import_module(module, __name__)
    if attr:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
