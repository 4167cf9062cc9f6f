""":class:`~relay_actors.client.RelayClient`'s in-process side (``runtime="local"``).

The client's own :class:`~relay_actors.connection.Connection` feeds every event to
the client's call host; the call host's requests go back through it. While
connected, the client counts against ``RELAY_MAX_CONNECTIONS`` (as the SDK counts
its clients), and a fresh session (a server's restart order, or a refused resume)
tells the call host that the previous session's calls and dials are lost.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

from . import eventloop
from .call_host import CallHost
from .config import ClientOptions, Settings, max_connections
from .connection import Connection
from .errors import ConnectionLimitError
from .protocol.session import Connected

__all__ = ["LocalConnection"]

log = logging.getLogger("relay_actors.client")

#: In-process clients between connect() and disconnect(), for ``RELAY_MAX_CONNECTIONS``.
_CONNECTED: weakref.WeakSet[LocalConnection] = weakref.WeakSet()


class LocalConnection:
    """The connection of one in-process client (see the module docstring); the
    :class:`Connection` itself is made at its first use and kept until :meth:`close`."""

    def __init__(self, settings: Settings, host: CallHost, options: ClientOptions) -> None:
        self._settings = settings
        self._host = host
        self._options = options
        self.conn: Connection | None = None
        self._session_protocol = ""
        #: Set on the first successful connect: ``serve(on_ready=...)`` waits on it.
        self.connected_once = asyncio.Event()

    def connection(self) -> Connection:
        if self.conn is None:
            self.conn = Connection(
                self._settings,
                on_event=self._host.feed,
                on_connected=self._on_connected,
                request_timeout=self._options.request_timeout,
                ping_interval=self._options.ping_interval,
                backoff=self._options.backoff,
            )
        return self.conn

    def contexts(self) -> list[str]:
        """The contexts received: the session's once connected, else the settings'."""
        if self.conn is not None:
            return list(self.conn.session.contexts)
        return list(self._settings.contexts)

    def claim(self) -> None:
        """Count this client against ``RELAY_MAX_CONNECTIONS`` (unset: no limit), as the SDK does."""
        limit = max_connections()
        others = len(_CONNECTED) - (self in _CONNECTED)
        if limit is not None and others >= limit:
            raise ConnectionLimitError(
                f"RelayClient connection limit reached ({limit}): {others} client(s) of this process "
                "are connected. Call disconnect() on one first, or raise RELAY_MAX_CONNECTIONS."
            )
        _CONNECTED.add(self)

    def release(self) -> None:
        """Stop counting this client against ``RELAY_MAX_CONNECTIONS``."""
        _CONNECTED.discard(self)

    async def close(self) -> None:
        """Close the connection, if any (the next use makes a new one)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.close()

    async def wait_for_calls(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the active calls to end; the calls still active."""
        now = asyncio.get_running_loop().time
        end = now() + timeout
        # Calls end inside the event router, which has no hook: poll, with a deadline.
        while self._host.calls and now() < end:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        return len(self._host.calls)

    async def run_until(self, stop: asyncio.Event, on_ready: Callable[[], Any] | None) -> asyncio.Task[None]:
        """Run the connection (reconnecting) until ``stop`` is set or it gives up, and call
        ``on_ready()`` (a function or coroutine function) once first connected. Returns the
        connection's run: done with the error it gave up with, if it did."""
        runner = asyncio.create_task(self.connection().run())
        stopper = asyncio.create_task(stop.wait())
        ready = asyncio.create_task(self._when_ready(on_ready)) if on_ready is not None else None
        try:
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if ready is not None:
                ready.cancel()
        return runner

    async def _when_ready(self, on_ready: Callable[[], Any]) -> None:
        await self.connected_once.wait()
        await eventloop.maybe_await(on_ready())

    def _on_connected(self, connected: Connected) -> None:
        self.connected_once.set()
        previous, self._session_protocol = self._session_protocol, connected.protocol
        if previous and not connected.restored:
            # A fresh session (server restart order, or a refused resume): the old
            # session's calls and dials cannot be reached any more.
            log.warning("RELAY session was not resumed; calls of the previous session are lost")
            self._host.lose_session("session_lost", previous)
