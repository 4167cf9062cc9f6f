"""Running a coroutine on the fastest event loop available.

uvloop (libuv) roughly halves the per-frame cost of asyncio's own loop in our
measurements (benchmarks/bench_clients.py), and a RELAY client spends most of
its time in the loop. Where we own the loop (``RelayClient.run()``, the demo),
we use it; elsewhere the caller's loop is used as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # e.g. Windows: plain asyncio
        return asyncio.run(main)
    return uvloop.run(main)
