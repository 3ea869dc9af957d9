"""Aggregation throughput from a converted store against numpy, pandas and flox, one run.

Usage::

    python benchmarks/bench_aggregate.py STORE        # same as `atlas-engine bench STORE`

See :mod:`atlas_engine.bench.aggregate` for the variants.
"""

from atlas_engine.bench.aggregate import main

if __name__ == "__main__":
    main()
