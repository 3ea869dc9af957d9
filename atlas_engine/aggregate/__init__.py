"""Grouped statistics over a store: specs (chunk -> combine -> finalize), the engine, grouping.

Calling the package, ``atlas_engine.aggregate(store, by=..., ...)``, runs
:func:`atlas_engine.aggregate.api.aggregate`.
"""

from .._callable import make_callable

make_callable(__name__, "atlas_engine.aggregate.api:aggregate")
