"""Adaptive batching between actors: group commit, no timers.

One Ray actor call costs about a millisecond and an actor absorbs only a few
thousand separate calls per second, but a hundred thousand items per second
when they ride a hundred to a call. :class:`Batcher` sends what it is given
when nothing is in flight — at the end of the current event-loop iteration,
so items produced together (the frames of one socket read, say) leave
together at no cost in latency — and coalesces everything that arrives while
a send is in flight into the next one. Under light load every item leaves
within microseconds (no fixed flush timer taxing latency); under heavy load
batches grow by themselves until one send per round trip carries them all.
For traffic nobody waits on (bookkeeping reports), ``linger`` trades a bounded
delay for fewer, larger sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["Batcher"]

log = logging.getLogger("relay_actors.ray_runtime.batching")

T = TypeVar("T")


class Batcher(Generic[T]):
    """Sends items through ``send(batch)`` with at most ``max_in_flight`` sends at once.

    Args:
        send: coroutine function taking a list of items; an exception is passed
            to ``on_error`` with the batch (the items are not retried here).
        max_batch: most items in one send.
        max_in_flight: concurrent sends; 1 keeps order (the default).
        on_error: called with ``(exception, batch)`` when a send fails.
    """

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[Any]],
        *,
        max_batch: int = 2000,
        max_in_flight: int = 1,
        on_error: Callable[[BaseException, list[T]], None] | None = None,
        name: str = "batcher",
        linger: float = 0.0,
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._on_error = on_error
        self._name = name
        self._pending: list[T] = []
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._linger = linger
        self._kick_scheduled = False
        self.closed = False
        #: Counters for metrics: sends, items, largest batch.
        self.sends = 0
        self.items = 0
        self.largest = 0

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, item: T) -> None:
        """Queue one item; it leaves now if no send is in flight."""
        if self.closed:
            raise RuntimeError(f"{self._name} is closed")
        self._pending.append(item)
        if not self._kick_scheduled and self._in_flight < self._max_in_flight:
            self._schedule()

    def extend(self, items: list[T]) -> None:
        if self.closed:
            raise RuntimeError(f"{self._name} is closed")
        self._pending.extend(items)
        if self._pending and not self._kick_scheduled and self._in_flight < self._max_in_flight:
            self._schedule()

    def _schedule(self) -> None:
        self._kick_scheduled = True
        self._idle.clear()
        loop = asyncio.get_running_loop()
        if self._linger > 0:
            loop.call_later(self._linger, self._kick)
        else:
            loop.call_soon(self._kick)

    def _kick(self) -> None:
        self._kick_scheduled = False
        if self._pending and not self.closed and self._in_flight < self._max_in_flight:
            self._start()
        elif self._in_flight == 0 and not self._pending:
            self._idle.set()

    def _start(self) -> None:
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        self._in_flight += 1
        self._idle.clear()
        self.sends += 1
        self.items += len(batch)
        self.largest = max(self.largest, len(batch))
        task = asyncio.ensure_future(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[T]) -> None:
        try:
            await self._send(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self._on_error is not None:
                try:
                    self._on_error(exc, batch)
                except Exception:
                    log.exception("%s: error handler failed", self._name)
            else:
                log.error("%s: send of %d items failed: %r", self._name, len(batch), exc)
        finally:
            self._in_flight -= 1
            if self._pending and not self.closed:
                if self._linger > 0:
                    if not self._kick_scheduled:
                        self._schedule()
                else:
                    self._start()
            elif self._in_flight == 0 and not self._kick_scheduled:
                self._idle.set()

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far has been sent."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self, drain: bool = True, timeout: float = 5.0) -> list[T]:
        """Stop accepting items; optionally drain. Returns items never sent."""
        if drain and not self.closed:
            try:
                await self.drain(timeout)
            except asyncio.TimeoutError:
                log.warning("%s: %d items still queued at close", self._name, len(self._pending))
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        left, self._pending = self._pending, []
        return left

    def stats(self) -> dict[str, int]:
        return {
            "sends": self.sends,
            "items": self.items,
            "largest": self.largest,
            "queued": len(self._pending),
        }
