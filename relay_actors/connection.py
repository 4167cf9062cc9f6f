"""The connection engine: one RELAY WebSocket driven by the sans-IO :class:`ClientSession`.

It opens the socket (``wss://`` with certificate verification unless ``ws`` is
asked for), authenticates, acks every event before handing it on, answers
server pings, pings the server and force-closes a socket whose requests go
unanswered while the server says nothing (half-open), reconnects at once and
then with jittered exponential backoff, resumes the session by
``protocol``/``authorization_state``, queues requests while
disconnected (bounded) and flushes them after re-authentication. It knows
nothing of calls or of Ray: events go to the ``on_event`` callback.

Its request timers are stall-aware (:class:`~relay_actors.request_futures.RequestFutures`
over :class:`~relay_actors.protocol.liveness.Liveness`): when a handler blocks the loop,
a timer that comes due meanwhile is re-armed rather than trusted, so the loop reads
the replies that arrived (and writes the requests that were waiting) before anything
is condemned. When to try again, start a fresh session or give up is the sans-IO
:class:`~relay_actors.protocol.reconnect.ReconnectPolicy`'s decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State

from .backoff import Backoff
from .config import Settings
from .errors import AuthenticationError, RelayError
from .protocol import codec
from .protocol import constants as c
from .protocol.events import RelayEvent
from .protocol.liveness import Liveness
from .protocol.reconnect import ReconnectPolicy
from .protocol.session import (
    ClientSession,
    Connected,
    ConnectFailed,
    DisconnectRequested,
    EventReceived,
    Item,
    PingReceived,
    RequestFailed,
    ResponseReceived,
)
from .request_futures import RequestFutures

__all__ = ["Connection", "auth_failure", "first_contact_error"]

log = logging.getLogger("relay_actors.connection")

#: websockets' own records for our sockets; frame content never logged (it holds credentials).
_WIRE_LOG = codec.wire_logger("relay_actors.websockets")

# What a failed attempt to open a socket can raise; all are transient.
_TRANSPORT_ERRORS = (OSError, InvalidHandshake, ConnectionClosed, asyncio.TimeoutError)


def first_contact_error(exc: BaseException, settings: Settings) -> RelayError | None:
    """What a failed socket open says about the settings, with what to do; None if transient.

    A name that does not resolve, TLS spoken to a plain server (or plain HTTP to a
    TLS one) and an untrusted certificate are configuration mistakes: retrying
    cannot fix them, so before the first success :meth:`Connection.run` gives up.
    """
    host = settings.host
    if isinstance(exc, socket.gaierror):
        name = host.rpartition(":")[0] if host.count(":") == 1 else host
        return RelayError(
            "host_not_found",
            f"cannot resolve host {name!r} ({exc.strerror}): check SIGNALWIRE_SPACE (or host=...) — your "
            "space such as example.signalwire.com, or 127.0.0.1:PORT for the local emulator — and DNS",
        )
    if settings.scheme == "wss":
        if isinstance(exc, ssl.SSLCertVerificationError):
            return RelayError(
                "tls_untrusted",
                f"the TLS certificate of {host} is not trusted ({exc.verify_message}): for the TLS "
                "emulator set SIGNALWIRE_RELAY_CA_FILE (or ca_file=...) to the ca_file of its ready line",
            )
        if isinstance(exc, (ssl.SSLError, ConnectionResetError, ConnectionAbortedError)):
            reason = getattr(exc, "reason", None) or type(exc).__name__
            return RelayError(
                "tls_mismatch",
                f"TLS handshake with {host} failed ({reason}): the server does not speak TLS on that "
                "port. For the local emulator started without --tls set SIGNALWIRE_RELAY_SCHEME=ws "
                "(or scheme='ws')",
            )
    elif isinstance(exc, InvalidMessage):
        return RelayError(
            "tls_mismatch",
            f"{host} sent no HTTP answer to a plain ws:// handshake: it expects TLS. Unset "
            "SIGNALWIRE_RELAY_SCHEME (wss is the default; ws is only for the emulator started without --tls)",
        )
    return None


def auth_failure(exc: AuthenticationError, settings: Settings) -> AuthenticationError:
    """``exc`` (a rejected ``signalwire.connect``) with one line saying what to check."""
    return AuthenticationError(
        exc.code,
        f"{settings.host} rejected the credentials ({exc.message}): check {settings.credentials_from}; "
        "for the local emulator use the project and token of its ready line",
        exc.data,
    )


class _FrameWriter:
    """Group commit for outbound frames.

    Frames written during one event-loop iteration (the acks of every frame
    read in one go, the requests handlers made meanwhile) leave in a single
    transport write at the end of that iteration: one syscall and one TLS
    record for a burst, no delay at all when traffic is light. It also skips
    websockets' per-message async send path, which costs more than the write.
    """

    __slots__ = ("_liveness", "_loop", "_pending", "_scheduled", "_since", "_ws")

    def __init__(self, ws: ClientConnection, liveness: Liveness) -> None:
        self._ws = ws
        self._liveness = liveness
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []
        self._scheduled = False
        self._since = 0.0

    def write(self, frame: bytes) -> None:
        self._pending.append(frame)
        if not self._scheduled:
            now = self._loop.time()
            if self._liveness.handlers_block(now):
                # Handlers block this loop: held for the end of the iteration, this frame
                # (an answer, say) could wait behind the next handler's block. Written at once
                # until the loop runs smoothly again, as the official SDK always writes.
                self.flush()
                return
            self._scheduled = True
            self._since = now
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        if self._scheduled:
            # A flush long after its write means the loop was blocked meanwhile: the
            # requests in it reach the server only now (their timers must know).
            self._liveness.late(self._since, self._loop.time())
        self._scheduled = False
        frames, self._pending = self._pending, []
        ws = self._ws
        protocol = ws.protocol
        if protocol.state is not State.OPEN or ws.transport is None or ws.transport.is_closing():
            return  # the reader sees the close; requests fail through connection_lost
        try:
            for frame in frames:
                protocol.send_text(frame)
            chunks = protocol.data_to_send()
            if all(chunks):
                ws.transport.write(b"".join(chunks))
            else:  # a close is in there: let websockets handle it
                for chunk in chunks:
                    if chunk:
                        ws.transport.write(chunk)
        except Exception:
            log.exception("writing to the RELAY socket failed; closing it")
            ws.transport.abort()


#: Messages held for a socket whose reader is not attached yet (the server speaks only
#: after our ``signalwire.connect``); more than this fails the socket.
_MAX_EARLY_MESSAGES = 1024


class _RelaySocket(ClientConnection):
    """websockets' client connection, handing each complete data message to the
    engine as its frames are parsed (in ``data_received``) instead of queuing it
    for ``recv()``: no queue, no per-message future and task wake-up, and every
    message of one read is handled in the same loop iteration, so their acks
    leave in one write. Fragmented messages are joined here (their size is
    bounded by ``max_size`` in the protocol layer); pings, pongs and the close
    handshake stay websockets' business."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_message: Callable[[bytes], None] | None = None
        self._early: list[bytes] = []
        self._fragments: list[bytes] = []

    def attach(self, on_message: Callable[[bytes], None]) -> None:
        """Hand every message to ``on_message`` from now on (those that came first, at once)."""
        self._on_message = on_message
        early, self._early = self._early, []
        for data in early:
            self._dispatch(data)

    def process_event(self, event: Event) -> None:
        if self.response is None or not isinstance(event, Frame):
            super().process_event(event)  # the handshake response
            return
        opcode = event.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not event.fin:
                self._fragments = [bytes(event.data)]
                return
            data = event.data
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(event.data))
            if not event.fin:
                return
            data, self._fragments = b"".join(self._fragments), []
        else:
            super().process_event(event)  # ping, pong, close
            return
        self._dispatch(data if type(data) is bytes else bytes(data))

    def _dispatch(self, data: bytes) -> None:
        on_message = self._on_message
        if on_message is None:
            if len(self._early) >= _MAX_EARLY_MESSAGES:
                log.error("the RELAY server sent %d messages before the session started", len(self._early))
                self._fail()
                return
            self._early.append(data)
            return
        try:
            on_message(data)
        except Exception:
            log.exception("RELAY reader failed; reconnecting")
            self._fail()

    def _fail(self) -> None:
        self._on_message = self._drop
        if self.transport is not None:
            self.transport.abort()

    @staticmethod
    def _drop(data: bytes) -> None:
        """What comes after a failure: the socket is going away."""


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.scheme != "wss":
        return None
    ctx = ssl.create_default_context()
    if settings.ca_file:
        ctx.load_verify_locations(cafile=settings.ca_file)
    return ctx


class Connection:
    """One self-healing RELAY connection (see the module docstring).

    Args:
        settings: resolved client settings (credentials, host, contexts, TLS).
        on_event: called with every event and its ``ack_id``, in arrival order. The
            ack was already sent (``ack_id`` None) unless ``defer_acks``; then the
            caller acks with :meth:`ack` once the event is safely handed on.
            Must not block; exceptions are logged and swallowed.
        on_connected: called after every successful (re)authentication.
        on_restart: called when the server ordered ``disconnect {restart: true}``:
            the next session is fresh and calls of the old one are lost.
        request_timeout: per-request deadline, counted from when it was made in loop
            time that excludes the loop's own stalls (a blocking handler does not use it up).
        ping_interval: seconds between client pings (0 disables them).
        max_auth_rejections: consecutive rejections (and first-contact errors)
            tolerated before the first successful authentication; then :meth:`run` raises.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_event: Callable[[RelayEvent, str | None], None],
        on_connected: Callable[[Connected], None] | None = None,
        on_restart: Callable[[], None] | None = None,
        request_timeout: float = c.REQUEST_TIMEOUT,
        ping_interval: float = c.CLIENT_PING_INTERVAL,
        max_auth_rejections: int = c.MAX_AUTH_REJECTIONS,
        backoff: Backoff | None = None,
        max_queued: int = c.MAX_QUEUED_REQUESTS,
        defer_acks: bool = False,
    ) -> None:
        self.settings = settings
        self.session = ClientSession(
            settings.credentials,
            contexts=list(settings.contexts),
            max_queued=max_queued,
            defer_acks=defer_acks,
        )
        self.request_timeout = request_timeout
        self.ping_interval = ping_interval
        self.backoff = backoff or Backoff()
        #: When to try again, start a fresh session or give up (sans-IO).
        self.policy = ReconnectPolicy(self.backoff, max_auth_rejections)
        self._on_event = on_event
        self._on_connected = on_connected
        self._on_restart = on_restart
        self._ssl = _ssl_context(settings)
        self._ws: _RelaySocket | None = None
        self._writer: _FrameWriter | None = None
        #: The loop's awake clock and the server's silence on it (stall-aware timers).
        self.liveness = Liveness()
        self._requests = RequestFutures(self.session, self.liveness, self._timed_out)
        self._reader: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connected = asyncio.Event()
        self._last_connected: Connected | None = None
        self._done = asyncio.Event()
        self._closing = False
        self._loop_time: Callable[[], float] = time.monotonic  # the loop's clock, set when running
        self._fatal: BaseException | None = None
        self.reconnects = 0
        self.resumes = 0
        #: Wall-clock time the current session (protocol) began, as seen by this process.
        self.session_started = 0.0
        self.attempts = 0
        self._up_since = 0.0  # time.monotonic() of the last successful authentication

    # --- public -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def protocol(self) -> str:
        return self.session.protocol

    async def connect(self) -> Connected:
        """Open and authenticate once (raising on failure), then keep the connection
        alive in the background: reconnect and resume whenever it drops."""
        if self._closing:
            raise RelayError("closed", "the connection was closed; create a new client")
        if self._supervisor is not None:
            # Already connected once: the supervisor keeps (or brings back) the socket.
            # Opening a second one would take the session over and drop the first.
            try:
                await asyncio.wait_for(self._connected.wait(), self.request_timeout)
            except asyncio.TimeoutError:
                raise RelayError("timeout", "not reconnected within the request timeout") from None
            assert self._last_connected is not None
            return self._last_connected
        self.attempts += 1
        try:
            connected = await self._open()
        except AuthenticationError as exc:
            raise auth_failure(exc, self.settings) from None
        except _TRANSPORT_ERRORS as exc:
            problem = first_contact_error(exc, self.settings)
            if problem is None:
                raise
            raise problem from exc
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name="relay-supervisor")
        return connected

    async def start(self) -> Connected:
        """Connect through the reconnect loop — backoff, a fresh session when the resume
        is refused — and return once connected; stay connected in the background.

        Unlike :meth:`connect` (one attempt), a blip or a refused resume at this moment
        does not leave the connection down: what keeps a connection actor's shard up
        after its own restart. Raises what :meth:`run` raises (the rejection cap, a
        first-contact error) if the loop gives up first.
        """
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(initial=True), name="relay-supervisor")
        waiters = [asyncio.ensure_future(self._connected.wait()), asyncio.ensure_future(self._done.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._fatal is not None:
            raise self._fatal
        if self._last_connected is None:
            raise RelayError("closed", "the connection was closed before it came up")
        return self._last_connected

    async def run(self) -> None:
        """Connect (retrying with backoff) and stay connected until :meth:`close`.

        Raises the server's :class:`AuthenticationError` after ``max_auth_rejections``
        consecutive rejections before any success, and as many first-contact errors
        (:func:`first_contact_error`: unresolvable host, TLS mismatch, untrusted
        certificate) a :class:`RelayError` saying what to fix; other transport errors
        never count.
        """
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(initial=True), name="relay-supervisor")
        await self._done.wait()
        if self._fatal is not None:
            raise self._fatal

    async def execute(
        self, method: str, params: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """Send a request and return its result (code-checked; any 2xx passes).

        Queued while disconnected and flushed after re-authentication; the
        timeout runs from now either way.

        Raises:
            RelayError: the server's code (non-2xx or JSON-RPC error), or
                ``timeout``, ``connection_closed``, ``queue_full``, ``closed``.
        """
        result: dict[str, Any] = await self.request(method, params, timeout)
        return result

    def request(
        self, method: str, params: dict[str, Any], timeout: float | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """:meth:`execute` without a coroutine: a future of the result (for callers that
        keep many requests in flight and would pay for a task each).

        Raises:
            RelayError: ``closed`` or ``queue_full`` at once; the rest through the future.
        """
        if self._closing:
            raise RelayError("closed", f"cannot send {method}: the client is disconnected")
        req_id, frame = self.session.request(method, params)
        future = self._requests.start(req_id, method, timeout or self.request_timeout)
        if frame is not None:
            self._send(frame)
        return future

    def _timed_out(self, method: str, half_open: bool) -> None:
        if half_open and self.connected:
            # Unanswered, and the server silent for as long: the sign of a half-open socket.
            log.warning("request %s timed out, the server silent; closing the socket to reconnect", method)
            self._abort()
        elif self.connected:
            log.warning("request %s timed out (the server is still talking; the socket stays)", method)
        else:
            log.warning("request %s timed out while disconnected", method)

    def ack(self, ack_ids: list[str]) -> None:
        """Ack events received with deferred acks (a no-op while disconnected: the
        server then redelivers them after the resume, and they are deduplicated)."""
        writer = self._writer
        if writer is None:
            return
        ack = self.session.ack
        for event_id in ack_ids:
            writer.write(ack(event_id))

    async def close(self) -> None:
        """Close the socket and stop reconnecting. Pending and queued requests fail
        with ``closed``; no caller is left waiting."""
        if self._closing and self._done.is_set():
            return
        self._closing = True
        for task in (self._supervisor, self._pinger):
            if task is not None:
                task.cancel()
        ws, self._ws = self._ws, None
        if ws is not None:
            if self._writer is not None:
                self._writer.flush()
            self._writer = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self._connected.clear()
        self._requests.fail_all(RelayError("closed", "the client disconnected"))
        self.session.pending.clear()
        self.session.queued.clear()
        for task in list(self._tasks):
            task.cancel()
        self._done.set()

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "reconnects": self.reconnects,
            "resumes": self.resumes,
            "session_started": self.session_started,
            "attempts": self.attempts,
            "pending": len(self.session.pending),
            "queued": len(self.session.queued),
            "loop_stalls": self.liveness.stalls,
            "loop_stalled_s": round(self.liveness.stalled, 3),
            **self.session.stats,
        }

    # --- internals ----------------------------------------------------------------

    def _send(self, frame: bytes) -> None:
        writer = self._writer
        if writer is not None:
            writer.write(frame)
        # else the socket just went: the request fails through connection_lost

    def _abort(self) -> None:
        ws = self._ws
        if ws is not None and ws.transport is not None:
            ws.transport.abort()

    async def _open(self) -> Connected:
        """Open a socket and authenticate on it. Raises on any failure (socket closed)."""
        ws = await websockets.connect(
            self.settings.url,
            ssl=self._ssl,
            ping_interval=None,  # liveness is JSON-RPC level
            max_size=codec.MAX_FRAME_SIZE,
            open_timeout=self.request_timeout,
            close_timeout=2.0,
            compression=None,
            user_agent_header=f"{c.AGENT} websockets/{websockets.__version__}",
            logger=_WIRE_LOG,
            create_connection=_RelaySocket,
        )
        assert isinstance(ws, _RelaySocket)
        self._loop_time = asyncio.get_running_loop().time
        self._ws = ws
        self.liveness.heard_from_peer(asyncio.get_running_loop().time())
        self._writer = writer = _FrameWriter(ws, self.liveness)
        ws.attach(partial(self._on_message, writer))
        self._reader = asyncio.create_task(self._read(ws), name="relay-reader")
        req_id, frame = self.session.start_connect()
        future = self._requests.expect(req_id)
        try:
            self._send(frame)
            connected: Connected = await asyncio.wait_for(future, self.request_timeout)
        except asyncio.TimeoutError:
            self.session.forget(req_id)
            self._abort()
            raise RelayError("timeout", "Request timeout for signalwire.connect") from None
        except BaseException:
            self._abort()
            raise
        finally:
            self._requests.discard(req_id)
        self.policy.authenticated()
        if connected.restored:
            self.resumes += 1
        if not connected.restored or not self.session_started:
            self.session_started = time.time()
        self._last_connected = connected
        self._up_since = time.monotonic()
        self._connected.set()
        for queued in self.session.take_queued():
            self._send(queued)
        if self.ping_interval > 0:
            self._pinger = asyncio.create_task(self._ping_loop(ws), name="relay-pinger")
        log.info(
            "connected to %s (%s)", self.settings.host, "resumed" if connected.restored else "new session"
        )
        if self._on_connected is not None:
            try:
                self._on_connected(connected)
            except Exception:
                log.exception("on_connected callback failed")
        return connected

    async def _read(self, ws: _RelaySocket) -> None:
        """The socket's life: its messages reach :meth:`_on_message` as they are parsed."""
        try:
            await ws.wait_closed()
        finally:
            self._lost(ws)

    def _on_message(self, writer: _FrameWriter, data: bytes) -> None:
        self.liveness.heard_from_peer(self._loop_time())
        # Bytes, not str: orjson parses UTF-8 directly, no decode/copy.
        reply, items = self.session.receive(data)
        if reply is not None:
            # The ack (or pong) is queued before anything is dispatched.
            writer.write(reply)
        for item in items:
            self._handle(item)

    def _handle(self, item: Item) -> None:
        if isinstance(item, EventReceived):
            try:
                self._on_event(item.event, item.ack_id)
            except Exception:
                log.exception("event handler failed for %s", item.event.event_type)
            return
        if isinstance(item, ResponseReceived):
            self._requests.resolve(item.id, item.result)
        elif isinstance(item, RequestFailed):
            self._requests.fail(item.id, item.error)
        elif isinstance(item, Connected):
            self._requests.resolve(item.id, item)
        elif isinstance(item, ConnectFailed):
            err = item.error
            self._requests.fail(item.id, AuthenticationError(err.code, err.message, err.data))
        elif isinstance(item, PingReceived):
            pass
        elif isinstance(item, DisconnectRequested):
            log.info("server asked to disconnect (restart=%s); waiting for it to close", item.restart)
            if item.restart and self._on_restart is not None:
                try:
                    self._on_restart()
                except Exception:
                    log.exception("on_restart callback failed")

    def _lost(self, ws: ClientConnection) -> None:
        if ws is not self._ws:
            return
        self._ws = None
        self._writer = None
        self._connected.clear()
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        error = RelayError("connection_closed", "Connection closed")
        for req_id, _method in self.session.connection_lost():
            self._requests.fail(req_id, error)

    async def _ping_loop(self, ws: ClientConnection) -> None:
        while self._ws is ws:
            await asyncio.sleep(self.ping_interval)
            if self._ws is not ws:
                return
            try:
                await self.execute(c.METHOD_PING, {})
            except RelayError as exc:
                # A timeout already force-closed the socket; the supervisor reconnects.
                log.warning("client ping failed: %s", exc.message)
                return

    async def _supervise(self, initial: bool = False) -> None:
        """Keep a socket up until close(): wait for the current one to drop, then reconnect."""
        try:
            if initial:
                await self._reconnect(first=True)
            while not self._closing:
                reader = self._reader
                if reader is not None:
                    await asyncio.shield(reader)
                if self._closing:
                    break
                self.reconnects += 1
                self.policy.lost(time.monotonic() - self._up_since)
                log.warning("connection to %s lost; reconnecting", self.settings.host)
                await self._reconnect()
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # the auth cap, or a bug: surface it through run()
            self._fatal = exc
            self._closing = True
            self._spawn(self.close())
        finally:
            if self._closing:
                self._done.set()

    async def _reconnect(self, first: bool = False) -> None:
        """Attempt until connected (or until :attr:`policy` gives up: then raise what to fix)."""
        delay = self.policy.outage_delay(at_start=first)
        while not self._closing:
            if delay:
                log.info("reconnecting in %.2fs", delay)
                await asyncio.sleep(delay)
            self.attempts += 1
            try:
                await self._open()
                return
            except AuthenticationError as exc:
                step = self.policy.rejected(resuming=bool(self.session.protocol))
                if step.fresh_session:
                    log.warning("resume refused (%s); starting a fresh session", exc.message)
                    self.session.clear_resume_state()
                elif step.give_up:
                    log.error("authentication rejected %d times; giving up", self.policy.rejections)
                    raise auth_failure(exc, self.settings) from None
                else:
                    log.warning("authentication rejected (%s); retrying", exc.message)
            except RelayError as exc:
                log.warning("connect failed: %s", exc.message)
                step = self.policy.retry()
            except _TRANSPORT_ERRORS as exc:
                problem = None if self.policy.settings_proven else first_contact_error(exc, self.settings)
                step = self.policy.unreachable(misconfigured=problem is not None)
                if step.give_up and problem is not None:
                    log.error("cannot connect after %d attempts; giving up", self.policy.setup_failures)
                    raise problem from exc
                detail = problem.message if problem is not None else str(exc) or type(exc).__name__
                log.warning("cannot reach %s: %s", self.settings.host, detail)
            delay = step.delay

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
