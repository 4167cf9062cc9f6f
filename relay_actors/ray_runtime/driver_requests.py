"""The driver's requests to a running app, on Ray: what ``RelayClient(runtime="ray")``
asks of the app's actors once it is up.

Requests and ``receive``/``unreceive`` go to the connection actors (round robin; every
shard receives the same contexts); a dial and a message go through a CallActor, where
the call lives (its events streamed to the driver's :class:`RemoteCall` by long polls)
or the message is tracked. The shards' sessions are read every 2 s (actors have no push
to the driver). Every Ray call here has a deadline: an actor restarting or stalled fails
the request, it never hangs the driver. Starting and stopping the app is
:mod:`~relay_actors.ray_runtime.driver`'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..call import Call, CallControl
from ..call_host import CallHost
from ..errors import RelayError
from ..message import Message
from ..protocol.calls import CallCore
from ..protocol.events import parse_event
from ..tasks import BackgroundTasks
from .actor_messages import STREAM_LOST
from .app_control import CALL_TIMEOUT, call_with_timeout

__all__ = ["AppHandles", "DriverRequests", "DriverTransport", "RemoteCall"]


class AppHandles(Protocol):
    """The app's actors as the driver holds them (``RayRuntime``)."""

    connections: list[Any]
    router: Any


class _CallLane:
    """The lane of a driver-side call (its :class:`~relay_actors.call.CallControl`): its
    commands go through its CallActor (and the shard that owns the call), its handlers
    run in the driver's task set."""

    __slots__ = ("actor", "deadline", "tasks")

    def __init__(self, actor: Any, deadline: float, tasks: BackgroundTasks) -> None:
        self.actor = actor
        self.deadline = deadline
        self.tasks = tasks

    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        call_id = str(params.get("call_id") or "")
        return await call_with_timeout(self.actor.call_execute.remote(call_id, method, params), self.deadline)


class RemoteCall(Call):
    """A call dialled from the driver on Ray. It lives in a CallActor (where the dial's
    ``handler`` runs); this is a full :class:`~relay_actors.call.Call` on the driver,
    whose events the CallActor streams here (long polls) and whose commands go through
    it: ``play_tts(...)`` returns an action whose ``wait()`` works, ``wait_for_ended()``,
    ``on(...)`` too. ``actor`` is the CallActor's index; ``execute(verb, params)`` sends
    a raw ``calling.<verb>`` for it."""

    def __init__(self, actor: Any, info: dict[str, Any], deadline: float, tasks: BackgroundTasks) -> None:
        super().__init__(_CallLane(actor, deadline, tasks), CallCore.from_params(info, "outbound"))
        self.actor = int(info.get("actor", -1))
        self._actor = actor

    async def execute(self, verb: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send ``calling.<verb>`` for this call."""
        payload = {"call_id": self.call_id, "node_id": self.node_id, **(params or {})}
        return await self._control.execute(f"calling.{verb}", payload)

    async def follow(self, host: CallHost, poll: float = 20.0) -> None:
        """Feed the call's events to ``host`` (the driver's) as its CallActor streams them,
        until it ends; the call is lost (``connection_lost``) if the actor stops answering,
        ``closed`` if this is cancelled (the client disconnected)."""
        start = 0
        call_id = self.call_id
        try:
            while not self._core.ended:
                try:
                    ref = self._actor.call_events.remote(call_id, start, poll)
                    got = await call_with_timeout(ref, poll + CALL_TIMEOUT)
                except Exception:  # the actor died or hangs: nobody will report this call
                    got = None
                if got is None:
                    host.call_lost(call_id, "connection_lost")
                    return
                start, events = got
                for event_type, params, timestamp in events:
                    if event_type == STREAM_LOST:
                        host.call_lost(call_id, str(params.get("reason") or "lost"))
                        return
                    host.call_event(call_id, parse_event(event_type, params, timestamp))
        finally:
            host.call_lost(call_id, "closed")  # (nothing if it ended)


class DriverTransport:
    """How the Ray driver's call host reaches the wire (its lane, too): requests go to
    the app's connection actors, once the app is up (``ready()``: a request made before
    ``connect()`` waits for it); a message goes through a CallActor, which tracks it
    (its state events are routed there) and from which the driver fetches them."""

    __slots__ = ("ready", "tasks")

    def __init__(self, ready: Callable[[], Awaitable[DriverRequests]], tasks: BackgroundTasks) -> None:
        self.ready = ready
        self.tasks = tasks

    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        requests = await self.ready()
        if method == "messaging.send":
            return await requests.send_message(params)
        return await requests.execute(method, params)

    def lane(self) -> CallControl:
        return self

    def default_context(self) -> str | None:
        return None  # the connection actor fills in its protocol

    def dial_abandoned(self, lane: CallControl, tag: str) -> None:
        """The driver's dials are made by CallActors, which report their own."""

    def message_sent(self, host: CallHost, message: Message, result: dict[str, Any]) -> None:
        """Show the state the CallActor had, then fetch the state events from it."""
        message.state = str(result.get("state") or message.state)
        message.reason = str(result.get("reason") or message.reason)

        async def follow() -> None:
            requests = await self.ready()
            await requests.follow_message(result["actor"], message.message_id, host)

        self.tasks.spawn(follow(), f"states of message {message.message_id}")



class DriverRequests:
    """The driver's requests to the app whose actors ``app`` holds (see the module
    docstring); ``request_timeout`` and ``dial_timeout`` are the client's settings (the
    actors have them too)."""

    def __init__(self, app: AppHandles, request_timeout: float, dial_timeout: float) -> None:
        self.app = app
        self.request_timeout = request_timeout
        self.dial_timeout = dial_timeout
        #: Every shard's :meth:`ConnectionActor.session_info` as last read (``None``: no answer).
        self.sessions: list[dict[str, Any] | None] = []
        #: ``time.monotonic()`` of that read (0: never).
        self.sessions_read = 0.0
        self._rr = 0

    @property
    def connections(self) -> list[Any]:
        return self.app.connections

    @property
    def router(self) -> Any:
        return self.app.router


    def _conn(self) -> Any:
        if not self.connections:
            raise RelayError("closed", "the Ray runtime is not running")
        self._rr = (self._rr + 1) % len(self.connections)
        return self.connections[self._rr]

    def _request_deadline(self) -> float:
        """A driver request's deadline: the shard's own request timeout, and some slack."""
        return self.request_timeout + 5.0

    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return await call_with_timeout(self._conn().execute.remote(method, params), self._request_deadline())

    async def receive(self, contexts: list[str], method: str) -> None:
        # Every shard receives the same contexts: the service spreads offers over them.
        await asyncio.gather(
            *(
                call_with_timeout(
                    conn.execute.remote(method, {"contexts": contexts}), self._request_deadline()
                )
                for conn in self.connections
            )
        )

    async def _call_actor(self) -> Any:
        try:
            pool = await call_with_timeout(self.router.pool_info.remote(True), CALL_TIMEOUT)
        except asyncio.TimeoutError:
            why = f"the app's router did not answer within {CALL_TIMEOUT:g} s (restarting?): try again"
            raise RelayError("timeout", why) from None
        if not pool:
            raise RelayError("closed", "no CallActor is running")
        self._rr = (self._rr + 1) % len(pool)
        return pool[self._rr][1]

    async def dial(self, devices: Any, handler: Any, options: dict[str, Any], host: CallHost) -> RemoteCall:
        """Dial from a CallActor (which runs ``handler``); the answered call is hosted by
        ``host`` (the driver's), which its events are fed to as they come."""
        from ray import cloudpickle

        actor = await self._call_actor()
        blob = cloudpickle.dumps(handler) if handler is not None else None
        # The CallActor answers once the dial is answered or has failed (its own timeout).
        deadline = float(options.get("dial_timeout") or self.dial_timeout) + self._request_deadline()
        info = await call_with_timeout(actor.dial_remote.remote(devices, blob, options), deadline)
        call = RemoteCall(actor, info, self._request_deadline() + 5.0, host.tasks)
        host.add_call(call)
        host.tasks.spawn(call.follow(host), f"events of dialled call {call.call_id}")
        return call

    async def send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        """Send through a CallActor (which tracks the message); returns the send's
        result, whose ``actor`` is that CallActor, to :meth:`follow_message` from."""
        actor = await self._call_actor()
        result = await call_with_timeout(
            actor.send_message_remote.remote(params), self._request_deadline() + 5.0
        )
        return {**result, "actor": actor}

    async def follow_message(self, actor: Any, message_id: str, host: CallHost, poll: float = 20.0) -> None:
        """Feed the state events of ``message_id`` (sent through ``actor``) to ``host`` as
        they come: long polls of ``poll`` s each, until its terminal state. Fails the
        message (``connection_lost``) if the actor cannot be asked any more, ``closed`` if
        this is cancelled (the client disconnected)."""
        try:
            await self._follow_message(actor, message_id, host, poll)
        finally:
            closed = RelayError("closed", f"message {message_id}: the client disconnected")
            host.message_failed(message_id, closed)

    async def _follow_message(self, actor: Any, message_id: str, host: CallHost, poll: float) -> None:
        start = 0
        while message_id in host.messages:
            try:
                got = await call_with_timeout(
                    actor.message_events.remote(message_id, start, poll), poll + CALL_TIMEOUT
                )
            except Exception as exc:  # the actor died or hangs: nobody will report this message
                got, why = None, f"its CallActor stopped answering ({type(exc).__name__})"
            else:
                why = "its CallActor restarted"  # if it forgot the message (None)
            if got is None:
                host.message_failed(message_id, RelayError("connection_lost", f"message {message_id}: {why}"))
                return
            start, events = got
            for event_type, params, timestamp, *_ in events:  # (the actor's state: recomputed here)
                host.message_state(parse_event(event_type, params, timestamp))

    async def refresh_sessions(self, timeout: float = 5.0) -> list[dict[str, Any] | None]:
        """Read every shard's session (protocol, connected, contexts, load); a shard that
        does not answer within ``timeout`` reads as ``None``."""
        answers = await asyncio.gather(
            *(call_with_timeout(conn.session_info.remote(), timeout) for conn in self.connections),
            return_exceptions=True,
        )
        self.sessions = [None if isinstance(a, BaseException) else a for a in answers]
        self.sessions_read = time.monotonic()
        return self.sessions

    async def watch_sessions(self, interval: float = 2.0) -> None:
        """Keep :attr:`sessions` fresh (the driver's ``relay_protocol``, ``connected``,
        ``contexts``, ``stats()``): actors have no push to the driver, so it reads."""
        while self.connections:
            await asyncio.sleep(interval)
            await self.refresh_sessions()

    async def stats(self, timeout: float = 5.0) -> dict[str, Any]:
        """Every actor's stats; an actor that does not answer within ``timeout`` (its loop
        is blocked, it is restarting) is left out rather than holding up the rest."""

        def ask(handle: Any, method: str = "stats") -> Any:
            return asyncio.wait_for(getattr(handle, method).remote(), timeout)

        router = await ask(self.router) if self.router is not None else {}
        shards = await asyncio.gather(*(ask(c) for c in self.connections), return_exceptions=True)
        pool = await ask(self.router, "pool_info") if self.router is not None else []
        actors = await asyncio.gather(*(ask(h) for _, h, _ in pool), return_exceptions=True)
        return {
            "router": router,
            "connections": [s for s in shards if not isinstance(s, BaseException)],
            "call_actors": [a for a in actors if not isinstance(a, BaseException)],
        }
