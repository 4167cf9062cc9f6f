""":class:`~relay_actors.client.RelayClient`'s Ray side on the driver (``runtime="ray"``).

From ``connect()`` to ``disconnect()`` the client holds the app's
:class:`~relay_actors.ray_runtime.RayRuntime` here: started (or re-adopted) once,
waited for by requests made before it is up (as the SDK queues requests made
before ``connect()``), failing them at once after ``disconnect()``. Its shards'
sessions, as last read, give the client's ``connected``, ``contexts``,
``relay_protocol`` and ``stats()``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .call_host import CallHost
from .config import ClientOptions, Settings, updated_contexts
from .errors import ArgumentError, RelayError
from .ray_runtime import RayOptions, RayRuntime
from .tasks import BackgroundTasks

if TYPE_CHECKING:
    from .ray_runtime.driver_requests import DriverRequests

__all__ = ["RayDriver", "actor_side_client", "client_proxy_reduction"]


class RayDriver:
    """The app a Ray driver's client runs (see the module docstring).

    Args:
        tasks: the client's background tasks (the reads of the shards' sessions run there).
        request_timeout: how long a request made before the app is up waits for it.
    """

    def __init__(self, tasks: BackgroundTasks, request_timeout: float) -> None:
        self._tasks = tasks
        self._request_timeout = request_timeout
        #: The app while connected (``connect()`` done, ``disconnect()`` not yet).
        self.app: RayRuntime | None = None
        #: Set while the app is up: requests made before it wait for it.
        self._up = asyncio.Event()
        self._closed = False

    async def start(
        self, settings: Settings, options: RayOptions, host: CallHost, client_options: ClientOptions
    ) -> None:
        """Start (or re-adopt) the router, the CallActors and the connection actors, with
        ``host``'s handlers, unless already up; a failed start stops what it started and raises."""
        if self.app is not None:
            return
        handlers = {"on_call": host.on_call, "on_message": host.on_message}
        self.app = RayRuntime(settings, options, handlers, client_options.for_actors())
        try:
            await self.app.start()
        except BaseException:
            app, self.app = self.app, None
            await app.stop()
            raise
        await self.app.requests.refresh_sessions()
        self._tasks.spawn(self.app.requests.watch_sessions(), "reads of the shards' sessions")
        self._closed = False
        self._up.set()

    async def stop(self, drain_timeout: float, host: CallHost) -> bool:
        """``disconnect()``: let go of the app and stop it if this driver started it (after
        draining its calls for up to ``drain_timeout`` s); requests fail at once from now.
        False if there was no app."""
        app, self.app = self.app, None
        if app is None:
            return False
        self._up.clear()
        self._closed = True
        # The driver's view goes first: its dialled calls and sent messages end here
        # with ``closed`` (the calls themselves live on in their CallActors while the
        # app drains), not with ``connection_lost`` once the actors are gone.
        await self._tasks.cancel_all()
        host.lose_session("closed")
        await app.stop(drain_timeout)
        return True

    def check_handlers_open(self, which: str) -> None:
        """On Ray the handlers are shipped to the CallActors at connect(): a later one
        would never run, so it is refused rather than ignored."""
        if self.app is not None:
            raise ArgumentError(
                f"{which}() after connect() on Ray: the handlers went to the CallActors when the app "
                "started. Register handlers before connect() (or disconnect(), register, connect())"
            )

    def running(self) -> RayRuntime:
        """The app; ``closed`` if not connected."""
        if self.app is None:
            raise RelayError("closed", "not connected: call connect() first")
        return self.app

    async def ready(self) -> RayRuntime:
        """The app, once up: a request made before connect() waits for it (as the SDK
        queues one) for up to ``request_timeout`` s; after disconnect() it fails at once."""
        if not self._up.is_set():
            if self._closed and self.app is None:
                raise RelayError("closed", "the client was disconnected: call connect() again first")
            try:
                await asyncio.wait_for(self._up.wait(), self._request_timeout)
            except asyncio.TimeoutError:
                raise RelayError(
                    "timeout",
                    f"not connected after {self._request_timeout:g} s: call await client.connect() "
                    "(or use async with client / client.run()) before sending requests",
                ) from None
        return self.running()


    async def ready_requests(self) -> DriverRequests:
        """The app's requests (:class:`DriverRequests`), once it is up (see :meth:`ready`)."""
        return (await self.ready()).requests
    async def until_stopped(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set, or until the app is stopped from elsewhere (then there is
        nothing left to serve)."""
        waits = [
            asyncio.create_task(stop.wait()),
            asyncio.create_task(self.running().stopped_elsewhere()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def subscribe(self, method: str, contexts: list[str]) -> None:
        """``signalwire.receive``/``unreceive`` ``contexts`` on every shard."""
        requests = (await self.ready()).requests
        await requests.receive(contexts, method)
        for session in requests.sessions:  # show it now, not at the next read
            if session is not None:
                session["contexts"] = updated_contexts(session.get("contexts") or [], method, contexts)

    def session(self) -> dict[str, Any] | None:
        """The first shard's session as last read; None before the first read."""
        if self.app is None or not self.app.requests.sessions:
            return None
        return self.app.requests.sessions[0]

    @property
    def connected(self) -> bool:
        """Every shard's socket was up and authenticated, as last read."""
        sessions = self.app.requests.sessions if self.app is not None else []
        return bool(sessions) and all(s is not None and s.get("connected") for s in sessions)

    def stats(self, counters: Mapping[str, int], tracked_messages: int) -> dict[str, Any]:
        """The driver's ``counters`` and messages it tracks, with the app's calls and dials
        summed over the shards as last read."""
        app = self.app
        sessions = [s for s in (app.requests.sessions if app is not None else []) if s is not None]
        read = app.requests.sessions_read if app is not None else 0.0
        return {
            **counters,
            "active_calls": sum(int(s.get("active_calls", 0)) for s in sessions),
            "pending_dials": sum(int(s.get("pending_dials", 0)) for s in sessions),
            "tracked_messages": tracked_messages,
            "connected": self.connected,
            "shards": len(app.connections) if app is not None else 0,
            "shards_reporting": len(sessions),
            "stats_age": round(time.monotonic() - read, 3) if read else None,
        }


def actor_side_client() -> Any:
    """Inside a CallActor, while it imports an app's module to unpickle a handler: the
    proxy to the app's connection actors that the module's ``RelayClient(...)`` becomes
    there; else None (a real, independent client)."""
    host_module = sys.modules.get("relay_actors.ray_runtime.call_actor")
    host = host_module.building_app_client() if host_module is not None else None
    return host_module.ActorSideClient(host) if host is not None else None  # type: ignore[union-attr]


def client_proxy_reduction(app: str | None) -> tuple[Any, ...]:
    """How a RelayClient of app ``app`` pickles: as the actor-side proxy (no credentials)."""
    from .ray_runtime.call_actor import client_proxy

    return (client_proxy, (app,))
