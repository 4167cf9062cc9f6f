"""Garbage-collector settings of the actor processes the runtime owns.

Measured on a burst of 3,000 calls (``benchmarks/bench_clients.py``): with
CPython's defaults the cyclic collector took 19% of the connection actor's
loop thread and 27 to 30% of each CallActor's. A Ray worker starts with tens of
thousands of tracked objects (Ray's modules and ours) that every full collection
walks again, and a call in flight allocates many short-lived containers, so
young collections ran hundreds of times per second and promoted live calls
that full collections then walked too. With the start-up objects frozen and
a larger young generation the collector's share fell to 2 to 3%.

Garbage stays bounded: cycles are still collected, the young generation is
collected every :data:`THRESHOLDS`\\[0] net allocations, and CPython runs a
full collection whenever the objects promoted since the last one exceed a
quarter of the long-lived heap.
"""

from __future__ import annotations

import gc

__all__ = ["THRESHOLDS", "tune_gc"]

#: ``gc.set_threshold`` for our actors (CPython's default is 700, 10, 10).
THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Freeze what start-up allocated (never garbage, never walked again) and
    collect the young generation less often. Call once a process is set up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
