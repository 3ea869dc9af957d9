"""The memory plan of a conversion: buffers per matrix stream, donors converted at once."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .params import ConvertOptions


@dataclass(frozen=True)
class StreamPlan:
    """Buffer sizes of one matrix stream: inflated piece size, pieces queued ahead of the
    parser, and block buffers in flight (one being parsed, the others queued or being written)."""

    piece: int = 2 << 20
    depth: int = 4
    blocks: int = 2

    def bytes(self, block_rows: int, ncols: int, itemsize: int) -> int:
        """Peak working memory of one stream: queued and carried pieces, block buffers, and
        the encoding copies of the block being written (chunk copies plus compressed)."""
        block = block_rows * ncols * itemsize
        return (self.depth + 2) * self.piece + self.blocks * block + block + block // 2


#: resident memory before any stream starts: interpreter, numpy, pandas, zarr, numba
#: kernels and the tables (measured 235-285 MB)
BASE_MEMORY = 280 * 2**20
#: per donor beyond its stream buffers: zarr metadata writes, sample tables, allocator slack
#: (measured: a 946-sample donor peaks ~110 MB above its planned stream buffers)
DONOR_OVERHEAD = 100 * 2**20
#: working-memory target when no ``memory_limit`` is given
DEFAULT_MEMORY = 1 << 30
#: stream buffer plans, most generous first
PLANS = (StreamPlan(2 << 20, 4, 2), StreamPlan(1 << 20, 2, 2), StreamPlan(1 << 20, 1, 1))


def donor_memory(plan: StreamPlan, opts: ConvertOptions, n_samples: int) -> int:
    """Planned peak memory of one donor: both streams (expression, PACall) and overhead."""
    itemsize = np.dtype(opts.dtype).itemsize
    rows, cols = opts.probe_chunk, max(n_samples, 1)
    return plan.bytes(rows, cols, itemsize) + plan.bytes(rows, cols, 1) + DONOR_OVERHEAD


def plan_jobs(opts: ConvertOptions, n_samples_max: int, n_donors: int
              ) -> tuple[int, tuple[StreamPlan, StreamPlan]]:
    """Donors converted at once and the buffer plans of their two streams (expression, PACall).

    Two donors at once by default on two or more cores: the inflate of a member is one
    sequential stream, so a second donor lets both cores inflate (measured on 2 cores, six
    full-size donors: 11.1-13.3 s against 12.4-13.1 s one at a time, ~50 MB more peak RSS).
    Jobs and buffers are then cut down until ``BASE_MEMORY + jobs × donor_memory`` fits the
    memory limit (1 GiB when none is given); one donor with the leanest plan is the floor.
    """
    budget = opts.memory_limit or DEFAULT_MEMORY
    want = max(1, min(opts.jobs or min(2, os.cpu_count() or 1), n_donors))
    for jobs in range(want, 0, -1):
        for plan in PLANS:
            if BASE_MEMORY + jobs * donor_memory(plan, opts, n_samples_max) <= budget:
                return jobs, (plan, plan)
    return 1, (PLANS[-1], PLANS[-1])
