"""Running a coroutine on the fastest event loop available.

uvloop (libuv) roughly halves the per-frame cost of asyncio's own loop in our
measurements (benchmarks/bench_clients.py), and a RELAY client spends most of
its time in the loop. Where we own the loop (``RelayClient.run()``, the demo),
we use it; elsewhere the caller's loop is used as it is. While it serves,
SIGINT and SIGTERM ask it to stop (:class:`StopSignals`).
"""

from __future__ import annotations

import asyncio
import inspect
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["StopSignals", "maybe_await", "run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # e.g. Windows: plain asyncio
        return asyncio.run(main)
    return uvloop.run(main)


async def maybe_await(value: Any) -> Any:
    """``value``, awaited if it is awaitable (what a function or coroutine function returned)."""
    return await value if inspect.isawaitable(value) else value


class StopSignals:
    """SIGINT and SIGTERM set ``stop`` while installed, on the running loop. Only the
    main thread takes signals: elsewhere nothing is installed, and the caller stops
    the loop through ``stop``."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._loop = asyncio.get_running_loop()
        self._installed: list[int] = []

    def install(self) -> None:
        """Take SIGINT and SIGTERM (again, after something else took them)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._loop.add_signal_handler(sig, self._stop.set)
                self._installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread: the caller stops us through ``stop``

    def remove(self) -> None:
        """Give SIGINT and SIGTERM back to their default handling."""
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)
        self._installed.clear()
