"""Streaming converters into Zarr v3 stores.

Calling the package, ``atlas_engine.convert(src, store, ...)``, runs
:func:`atlas_engine.convert.api.convert`.
"""

from .._callable import make_callable

make_callable(__name__, "atlas_engine.convert.api:convert")
