"""The futures of one connection's requests in flight, each with a stall-aware timeout.

A request's timer counts awake time (:class:`~relay_actors.protocol.liveness.Liveness`):
one that comes due while the loop was blocked is re-armed rather than trusted, so the
loop reads the replies that arrived (and writes the requests that were waiting)
before anything is condemned. A request that times out is forgotten by the session
and failed with ``timeout``; the connection hears of it first, with the verdict on the
server's silence (a half-open socket is the connection's to close).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from .errors import RelayError
from .protocol.liveness import Liveness
from .protocol.session import ClientSession

__all__ = ["RequestFutures"]


class RequestFutures:
    """Request id -> the future of its result (see the module docstring).

    Args:
        session: the sans-IO session the requests were made on (timed-out and cancelled
            ones are forgotten there).
        liveness: the loop's awake clock and the server's silence.
        on_timeout: called with the method and whether the server was silent as long
            (``half_open``) when a request times out, before its future fails.
    """

    __slots__ = ("_futures", "_liveness", "_on_timeout", "_session", "_timers")

    def __init__(
        self, session: ClientSession, liveness: Liveness, on_timeout: Callable[[str, bool], None]
    ) -> None:
        self._session = session
        self._liveness = liveness
        self._on_timeout = on_timeout
        self._futures: dict[str, asyncio.Future[Any]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def start(self, req_id: str, method: str, timeout: float) -> asyncio.Future[dict[str, Any]]:
        """The future of request ``req_id``, failed with ``timeout`` after ``timeout`` s of
        awake time; it is forgotten once done."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._futures[req_id] = future
        now = loop.time()
        due = now + timeout
        started = self._liveness.awake(now)
        self._timers[req_id] = loop.call_at(due, self._expired, req_id, method, future, started, timeout, due)
        future.add_done_callback(partial(self._done, req_id))
        return future

    def expect(self, req_id: str) -> asyncio.Future[Any]:
        """The future of ``req_id`` with no timer: the caller times it and :meth:`discard`\\ s it."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._futures[req_id] = future
        return future

    def discard(self, req_id: str) -> None:
        self._futures.pop(req_id, None)

    def resolve(self, req_id: str, result: Any) -> None:
        """Settle ``req_id`` with ``result`` (a no-op for an unknown or settled one)."""
        future = self._futures.get(req_id)
        if future is not None and not future.done():
            future.set_result(result)

    def fail(self, req_id: str, error: BaseException) -> None:
        """Fail ``req_id`` with ``error`` (a no-op for an unknown or settled one)."""
        future = self._futures.get(req_id)
        if future is not None and not future.done():
            future.set_exception(error)

    def fail_all(self, error: BaseException) -> None:
        """Fail every request still waiting with ``error``, and forget them all."""
        for future in self._futures.values():
            if not future.done():
                future.set_exception(error)
        self._futures.clear()

    def _done(self, req_id: str, future: asyncio.Future[Any]) -> None:
        timer = self._timers.pop(req_id, None)
        if timer is not None:
            timer.cancel()
        self._futures.pop(req_id, None)
        if future.cancelled():
            self._session.forget(req_id)

    def _expired(
        self,
        req_id: str,
        method: str,
        future: asyncio.Future[dict[str, Any]],
        started: float,
        timeout: float,
        scheduled: float,
        graced: bool = False,
    ) -> None:
        if future.done():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        expiry = self._liveness.expired(started, timeout, scheduled, now, graced)
        if expiry.rearm > 0:
            # Our loop stalled (or was seen stalling): the reply may be waiting unread, or
            # the request may have left only now. Look again once the loop has caught up.
            when = now + expiry.rearm
            self._timers[req_id] = loop.call_at(
                when, self._expired, req_id, method, future, started, timeout, when, graced or expiry.grace
            )
            return
        self._timers.pop(req_id, None)
        self._session.forget(req_id)
        self._on_timeout(method, expiry.half_open)
        future.set_exception(RelayError("timeout", f"Request timeout for {method}"))
