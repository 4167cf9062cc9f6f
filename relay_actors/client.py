"""``RelayClient``: the public client, with the official SDK's surface.

In-process mode (this module): one :class:`~relay_actors.connection.Connection`
feeds every event to the client's :class:`~relay_actors.call_host.CallHost`, which
routes it to :class:`~relay_actors.call.Call` and :class:`~relay_actors.message.Message`
objects in the same event loop and runs the handlers as tasks. On Ray the same
call host runs in every CallActor (and on the driver, for its dialled calls and
sent messages), with the connection in its own actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from . import eventloop, tracing
from .backoff import Backoff
from .call import Call, CallControl
from .call_host import CallHandler, CallHost, HostTransport, MessageHandler
from .client_local import LocalConnection
from .client_ray import RayDriver, actor_side_client, client_proxy_reduction
from .config import ClientOptions, Settings, check_runtime, context_list, resolve_settings, updated_contexts
from .connection import Connection
from .errors import ArgumentError, RelayError, unwrap_remote
from .handlers import check_error_policy, warn_if_no_contexts
from .message import Message
from .protocol import constants as c
from .protocol.events import RelayEvent
from .ray_runtime import DriverTransport, RayOptions, RayRuntime
from .tasks import BackgroundTasks

__all__ = ["RelayClient"]

log = logging.getLogger("relay_actors.client")


class RelayClient:
    """A RELAY client: inbound calls and messages, dialing, messaging, raw requests.

    Args:
        project: the project ID (else ``SIGNALWIRE_PROJECT_ID``).
        token: the API token (else ``SIGNALWIRE_API_TOKEN``).
        jwt_token: replaces project + token (else ``SIGNALWIRE_JWT_TOKEN``).
        host: the space, ``example.signalwire.com`` or ``host:port`` (else ``SIGNALWIRE_SPACE``).
        contexts: contexts to receive inbound calls and messages on.
        max_active_calls: tracked calls at most (else ``RELAY_MAX_ACTIVE_CALLS``, default 1000);
            offers beyond it are dropped with a warning, or passed with ``over_limit="pass"``.
            Constructor-only, as in the official client.
        scheme: ``"wss"`` (default, verified TLS) or ``"ws"`` (the local emulator only;
            else ``SIGNALWIRE_RELAY_SCHEME``). ``ws`` is refused for a host that is not
            loopback unless ``allow_insecure=True`` (else ``SIGNALWIRE_RELAY_ALLOW_INSECURE=1``).
        ca_file: extra CA bundle for ``wss`` (else ``SIGNALWIRE_RELAY_CA_FILE``).
        allow_insecure: allow ``ws`` to a host that is not loopback (the token would
            travel in clear; else ``SIGNALWIRE_RELAY_ALLOW_INSECURE=1``).
        over_limit: ``"drop"`` (default, as the official client) or ``"pass"``.
        handler_timeout: if set, an ``on_call`` handler running longer is cancelled
            and its call hung up.
        on_handler_error: what becomes of a call whose ``on_call`` handler raised:
            ``"hangup"`` (default: ended with reason ``error``, counted in
            ``calls_hung_up_handler_error``) or ``"keep"`` (left as it is).
        request_timeout: seconds to wait for a request's result (default 10).
        ping_interval: seconds between the client's pings (default 30).
        dial_timeout: seconds a dial may take before it is given up (default 120).
        backoff: reconnect delays (default 1 s doubling to 30 s, jittered).
        runtime: ``"local"`` (default: in this process) or ``"ray"`` (handlers in
            CallActors on a Ray cluster).
        ray_options: the Ray runtime's settings (``RayOptions``), with ``runtime="ray"``.
    """

    def __init__(
        self,
        project: str | None = None,
        token: str | None = None,
        jwt_token: str | None = None,
        host: str | None = None,
        contexts: Sequence[str] | None = None,
        max_active_calls: int | None = None,
        *,
        scheme: str | None = None,
        ca_file: str | None = None,
        allow_insecure: bool | None = None,
        over_limit: str = "drop",
        handler_timeout: float | None = None,
        on_handler_error: str = "hangup",
        request_timeout: float = c.REQUEST_TIMEOUT,
        ping_interval: float = c.CLIENT_PING_INTERVAL,
        dial_timeout: float = c.DIAL_TIMEOUT,
        backoff: Backoff | None = None,
        runtime: str = "local",
        ray_options: RayOptions | None = None,
    ) -> None:
        self._runtime = check_runtime(runtime)
        self._settings: Settings = resolve_settings(
            project,
            token,
            jwt_token,
            host,
            contexts,
            max_active_calls,
            scheme=scheme,
            ca_file=ca_file,
            allow_insecure=allow_insecure,
        )
        self._options = ClientOptions(
            over_limit,
            handler_timeout,
            check_error_policy(on_handler_error),
            request_timeout,
            ping_interval,
            dial_timeout,
            backoff,
        )
        self.tasks = BackgroundTasks()
        self._ray_options = ray_options or RayOptions()
        #: The Ray app from connect() to disconnect(), with ``runtime="ray"``.
        self._ray_driver = RayDriver(self.tasks, request_timeout)
        #: Calls, dials, messages and handler runs: requests go through the connection
        #: in-process, through the app's actors from a Ray driver.
        self._host = CallHost(
            self._transport(),
            capacity=self._settings.max_active_calls,
            app=self._ray_options.app or "",
            tasks=self.tasks,
            **self._options.host_options(),
        )
        #: Counters: offers, offers_dropped, offers_passed, handler_errors, ...
        self.counters: Counter[str] = self._host.counters
        #: The connection while in-process (``runtime="local"``).
        self._local = LocalConnection(self._settings, self._host, self._options)

    def __new__(cls, *args: Any, **kwargs: Any) -> RelayClient:
        # Inside a CallActor, the app's module may be imported to unpickle a handler:
        # the RelayClient it builds there is a proxy to the app's connection actors.
        # A RelayClient a handler constructs itself is a real, independent client.
        proxy = actor_side_client()
        return proxy if proxy is not None else super().__new__(cls)

    def __reduce__(self) -> tuple[Any, ...]:
        # A handler shipped to a CallActor carries its module's client: there it
        # becomes the actor-side proxy. Credentials never travel this way.
        return client_proxy_reduction(self._ray_options.app)

    @property
    def _ray(self) -> RayRuntime | None:
        """The Ray app while connected (``runtime="ray"``), else None."""
        return self._ray_driver.app

    @property
    def _conn(self) -> Connection | None:
        """The in-process connection once made (until disconnect()), else None."""
        return self._local.conn

    # --- settings -----------------------------------------------------------------

    @property
    def project(self) -> str:
        """The project ID (read-only)."""
        return self._settings.credentials.project

    @property
    def token(self) -> str:
        """The API token (``""`` with a JWT), readable as in the official SDK so an app can
        hand it on (e.g. to a REST client). Never shown in ``repr``, logs or errors."""
        return self._settings.credentials.token

    @property
    def jwt_token(self) -> str:
        """The JWT (``""`` with project + token); like :attr:`token`, never shown."""
        return self._settings.credentials.jwt_token

    @property
    def host(self) -> str:
        """The space's host (``host[:port]``, read-only)."""
        return self._settings.host

    @property
    def contexts(self) -> list[str]:
        """Contexts currently received (constructor's plus ``receive``d ones). On Ray:
        the first connection shard's, as last read (every 2 s, and at once after this
        client's ``receive``/``unreceive``)."""
        session = self._ray_driver.session() if self._runtime == "ray" else None
        if session is not None:
            return list(session.get("contexts") or [])
        return self._local.contexts()

    @property
    def relay_protocol(self) -> str:
        """The protocol string of the current session (``""`` before the first connect).
        On Ray: the first connection shard's (``relay:<app>:connection:0``), as last read
        (every 2 s); each shard has a session of its own (``ray_stats()`` shows them)."""
        if self._runtime == "ray":
            return str((self._ray_driver.session() or {}).get("protocol") or "")
        return self._conn.protocol if self._conn is not None else ""

    @property
    def runtime(self) -> str:
        """``"local"`` (in-process) or ``"ray"``."""
        return self._runtime

    @property
    def ray_options(self) -> RayOptions:
        """The Ray runtime's options (``RayOptions``), or ``None`` in-process."""
        return self._ray_options

    def configure_ray(self, options: RayOptions) -> None:
        """Run this client, with every setting it has, on Ray with ``options`` (before
        :meth:`connect`): what ``relay-actors run --ray`` does."""
        if self._ray is not None or self._conn is not None:
            raise ArgumentError("configure_ray() must come before connect()")
        self._runtime = "ray"
        self._ray_options = options
        self._host.transport = self._transport()
        self._host.app = options.app or ""

    def _transport(self) -> HostTransport:
        """How the call host's requests reach the wire in this client's runtime."""
        if self._runtime == "ray":
            return DriverTransport(self._ray_driver.ready_requests, self.tasks)
        return _LocalTransport(self)

    @property
    def connected(self) -> bool:
        """The socket is up and authenticated. On Ray: every connection shard's was, as
        last read (every 2 s)."""
        if self._runtime == "ray":
            return self._ray_driver.connected
        return self._conn is not None and self._conn.connected

    def __repr__(self) -> str:
        return f"<RelayClient host={self.host!r} contexts={self.contexts!r} connected={self.connected}>"

    # --- handlers -----------------------------------------------------------------

    def on_call(self, handler: CallHandler) -> CallHandler:
        """Register the inbound call handler (``async def handler(call)``); usable as a decorator."""
        if not callable(handler):
            raise ArgumentError("on_call needs an async function taking a Call")
        self._ray_driver.check_handlers_open("on_call")
        self._host.on_call = handler
        return handler

    def on_message(self, handler: MessageHandler) -> MessageHandler:
        """Register the inbound message handler (``async def handler(message)``)."""
        if not callable(handler):
            raise ArgumentError("on_message needs an async function taking a Message")
        self._ray_driver.check_handlers_open("on_message")
        self._host.on_message = handler
        return handler

    # --- lifecycle ----------------------------------------------------------------

    def _connection(self) -> Connection:
        return self._local.connection()

    async def connect(self) -> None:
        """Connect and authenticate (raising on failure); afterwards the connection
        reconnects and resumes by itself until :meth:`disconnect`.

        On Ray: start (or re-adopt) the router, the CallActors and the connection
        actors; they stay connected until :meth:`disconnect`."""
        self._warn_if_no_contexts()
        tracing.setup(app=self._host.app, role="driver" if self._runtime == "ray" else "client")
        if self._runtime == "ray":
            await self._ray_driver.start(self._settings, self._ray_options, self._host, self._options)
            return
        self._local.claim()
        try:
            await self._connection().connect()
        except BaseException:
            self._local.release()
            raise

    def _warn_if_no_contexts(self) -> None:
        warn_if_no_contexts(log, self._settings.contexts, self._host.on_call, self._host.on_message)

    async def disconnect(self, drain_timeout: float = 0.0) -> None:
        """Close the connection. Pending and queued requests and dials fail with
        ``RelayError("closed")``; running handlers are cancelled; calls end locally.
        With ``drain_timeout``: :meth:`drain` first.

        On Ray: stop the app if this client started it; a client that joined a running
        app (``RayOptions(join=True)``) leaves it running (stop it with
        ``relay-actors stop APP`` or :func:`relay_actors.ray_runtime.stop_app`)."""
        if await self._ray_driver.stop(drain_timeout, self._host):
            return
        self._local.release()
        if drain_timeout > 0 and self._conn is not None:
            await self.drain(drain_timeout)
        await self._local.close()
        self._host.lose_session("closed")
        await self.tasks.cancel_all()

    async def drain(self, timeout: float) -> int:
        """Stop taking new calls (unsubscribe from every context: the service offers them
        to other consumers) and wait up to ``timeout`` s for active calls to end.
        Returns the calls still active. On Ray: the whole app's calls."""
        if self._ray is not None:
            return await self._ray.drain(timeout)
        contexts = self.contexts
        if contexts and self.connected:
            with contextlib.suppress(RelayError):
                await self.unreceive(contexts)
        return await self._local.wait_for_calls(timeout)

    async def __aenter__(self) -> RelayClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    def run(self) -> None:
        """Connect and serve until SIGINT or SIGTERM (blocking), reconnecting as needed.

        When it cannot serve (credentials rejected 3 times before the first successful
        connect, a host that does not resolve, a TLS mismatch, ...), it prints one line
        saying what to fix to stderr and exits with status 1 (``SystemExit``), without a
        traceback; :meth:`serve` raises the :class:`RelayError` instead."""
        try:
            with contextlib.suppress(KeyboardInterrupt):
                eventloop.run(self.serve())
        except RelayError as exc:
            cause = unwrap_remote(exc)
            log.debug("the error in full", exc_info=cause)
            print(f"relay-actors: {getattr(cause, 'message', cause)}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        handed_over = self._ray.handed_over if self._ray is not None else None
        if handed_over:  # an upgrade took this app over: the one line that says so
            print(f"relay-actors: {handed_over}", flush=True)

    async def serve(
        self,
        stop: asyncio.Event | None = None,
        *,
        drain_timeout: float = 0.0,
        on_ready: Callable[[], Any] | None = None,
    ) -> None:
        """The coroutine behind :meth:`run`: serve until ``stop`` is set or a signal arrives,
        then :meth:`drain` for up to ``drain_timeout`` s and disconnect. ``on_ready()`` (a
        function or coroutine function) is called once connected (on Ray: once the app is up)."""
        if self._runtime != "ray":
            self._local.claim()
        stop = stop or asyncio.Event()
        signals = eventloop.StopSignals(stop)
        signals.install()
        runner: asyncio.Task[None] | None = None
        try:
            if self._runtime == "ray":
                await self.connect()
                # ray.init() replaced our SIGTERM handler with sys.exit (a stack dump
                # mid-loop): take it back, so SIGTERM drains and stops cleanly.
                signals.install()
                if on_ready is not None:
                    await eventloop.maybe_await(on_ready())
                await self._ray_driver.until_stopped(stop)
            else:
                self._warn_if_no_contexts()
                runner = await self._local.run_until(stop, on_ready)
        finally:
            signals.remove()
            await self.disconnect(drain_timeout if stop.is_set() else 0.0)
        if runner is not None and runner.done() and not runner.cancelled() and runner.exception() is not None:
            raise runner.exception()  # type: ignore[misc]

    # --- requests -----------------------------------------------------------------

    async def execute(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a raw JSON-RPC request (e.g. ``"calling.answer"``) and return its result.

        Code-checked (any 2xx passes); queued while disconnected."""
        if not isinstance(method, str) or not method:
            raise ArgumentError("method must be a non-empty string such as 'calling.answer'")
        if params is not None and not isinstance(params, dict):
            raise ArgumentError("params must be a dict")
        if self._runtime == "ray":
            return await (await self._ray_driver.ready_requests()).execute(method, params or {})
        return await self._connection().execute(method, params or {})

    async def receive(self, contexts: Sequence[str]) -> None:
        """Subscribe to more contexts (remembered across reconnects, even fresh ones)."""
        ctx = context_list(contexts)
        if not ctx:
            return
        await self._subscribe(c.METHOD_RECEIVE, ctx)

    async def unreceive(self, contexts: Sequence[str]) -> None:
        """Unsubscribe from contexts."""
        ctx = context_list(contexts)
        if not ctx:
            return
        await self._subscribe(c.METHOD_UNRECEIVE, ctx)

    async def _subscribe(self, method: str, ctx: list[str]) -> None:
        if self._runtime == "ray":
            await self._ray_driver.subscribe(method, ctx)
            return
        await self.execute(method, {"contexts": ctx})
        contexts = self._connection().session.contexts
        contexts[:] = updated_contexts(contexts, method, ctx)

    async def dial(
        self,
        devices: Any,
        *,
        tag: str | None = None,
        max_duration: int | None = None,
        dial_timeout: float | None = None,
        region: str | None = None,
        max_price_per_minute: float | None = None,
        handler: CallHandler | None = None,
    ) -> Call:
        """Dial out; returns the answered Call.

        ``devices``: a list (tried one after another) of lists (rung in parallel)
        of device objects; a single device or a flat list is accepted too.

        On Ray, the call lives in a CallActor: ``handler(call)`` runs there, and the
        driver gets a :class:`~relay_actors.ray_runtime.RemoteCall`: a full Call whose
        events the CallActor streams to it, plus ``execute(verb, params)``.

        Raises:
            RelayError: ``dial_failed`` (nobody answered), ``dial_timeout``, or the server's error.
        """
        if self._runtime == "ray":
            options = {
                "tag": tag,
                "dial_timeout": dial_timeout,
                "max_duration": max_duration,
                "region": region,
                "max_price_per_minute": max_price_per_minute,
            }
            return await (await self._ray_driver.ready_requests()).dial(devices, handler, options, self._host)
        if handler is not None:
            raise ArgumentError("dial(handler=...) is for the Ray runtime; in-process, use the returned Call")
        return await self._host.dial(
            devices,
            tag=tag,
            dial_timeout=dial_timeout,
            max_duration=max_duration,
            region=region,
            max_price_per_minute=max_price_per_minute,
        )

    async def send_message(
        self,
        *,
        to_number: str,
        from_number: str,
        context: str | None = None,
        body: str | None = None,
        media: list[str] | None = None,
        tags: list[str] | None = None,
        region: str | None = None,
        on_completed: Callable[[RelayEvent], Any] | None = None,
    ) -> Message:
        """Send an SMS (``body``) or MMS (``media`` URLs); returns a tracked Message.

        State events that beat the send result are applied, not lost. On Ray the message
        is sent (and tracked) by a CallActor; its state events follow here as they come."""
        return await self._host.send_message(
            to_number=to_number,
            from_number=from_number,
            context=context,
            body=body,
            media=media,
            tags=tags,
            region=region,
            on_completed=on_completed,
        )

    async def ray_stats(self) -> dict[str, Any]:
        """On Ray: the router's, every connection actor's and every CallActor's stats."""
        return await self._ray_driver.running().requests.stats()

    def stats(self) -> dict[str, Any]:
        """Counters for dashboards and tests. On Ray: this driver's counters and messages,
        and the app's calls and dials summed over the shards as last read (every 2 s;
        ``stats_age`` s ago); ``ray_stats()`` asks every actor now."""
        if self._runtime == "ray":
            return self._ray_driver.stats(self.counters, len(self._host.messages))
        return {**self._host.stats(), **(self._conn.stats() if self._conn is not None else {})}


class _LocalTransport:
    """The in-process client's lane (and the call host's transport): requests go
    through the client's own connection."""

    __slots__ = ("client", "execute", "tasks")

    def __init__(self, client: RelayClient) -> None:
        self.client = client
        self.tasks = client.tasks
        self.execute = client.execute  # bound once: the per-command path stays one call

    def lane(self) -> CallControl:
        return self

    def default_context(self) -> str | None:
        return self.client.relay_protocol or "default"

    def dial_abandoned(self, lane: CallControl, tag: str) -> None:
        """Nothing to tell: this host is fed every event and ends late legs itself."""

    def message_sent(self, host: CallHost, message: Message, result: dict[str, Any]) -> None:
        """Nothing to do: its state events come with the others."""

    def release_call(self, call_id: str) -> None:
        """A call passed to another consumer (``Call.pass_``): forget it."""
        self.client._host.release_call(call_id)
