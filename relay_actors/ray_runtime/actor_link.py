"""The actor link's asyncio shell: sockets around the sans-IO :mod:`link_protocol`.

A Ray actor call costs about half a millisecond of CPU at each end, and a call
needs a dozen messages between the connection actor and its CallActor, so the
per-call traffic runs over one stream per (connection actor, CallActor) pair
while Ray keeps placing, restarting, finding and health-checking the actors.
Everything the stream means (handshake, sequence numbers, acknowledgements,
window, liveness) is in :mod:`relay_actors.ray_runtime.link_protocol`; this module only
moves bytes and keeps time:

* :class:`LinkServer` (in a CallActor) listens on a Unix-domain socket readable
  by its owner only (for connection actors on the same node: no network
  exposure at all) and on the node's address with TLS (a per-app certificate
  the clients pin), never on a wildcard address. It caps handshakes in
  progress (the oldest is dropped for a new one), gives each a deadline, and
  counts every refusal.
* :class:`LinkClient` (in a connection actor, one per CallActor) reconnects by
  itself, resends what was not acknowledged, and reports the peer's health —
  ``slow`` when it stops acknowledging, ``lost`` only after a long deadline or
  when the peer came back as a new incarnation (Ray restarted it).
* Writes are grouped: what one event-loop iteration queues leaves as one write.
* Acknowledgements ride on DATA going the other way; a bare ACK is written only
  when none did within the protocol's ``ack_delay`` (one timer per peer, cancelled
  as soon as DATA carried it): at ordinary load nearly every frame would otherwise
  wake the peer once more for nothing but an ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import stat
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from .link_protocol import (
    DEFAULT_LIMITS,
    Authenticated,
    Delivered,
    Health,
    HealthStatus,
    LinkConnection,
    LinkError,
    LinkLimits,
    LinkSession,
    PeerRestarted,
    Role,
    new_incarnation,
)

__all__ = ["LinkClient", "LinkHub", "LinkServer", "new_secret"]

log = logging.getLogger("relay_actors.ray_runtime.actor_link")

#: Seconds a peer has to complete the handshake.
HANDSHAKE_TIMEOUT = 5.0
#: Handshakes in progress at most per listener; a new one drops the oldest.
MAX_HANDSHAKES = 64
CONNECT_TIMEOUT = 5.0
#: Seconds items wait for company before a write, by default: none, the lowest
#: latency (``RayOptions.link_linger`` trades some for CPU; see ``_Peers``).
DEFAULT_LINGER = 0.0
#: The longest linger accepted: beyond it the wait is felt in every command.
MAX_LINGER = 0.05
#: Items waiting for one peer that make a write worth it at once, linger or not.
LINGER_ENOUGH = 32


def new_secret() -> str:
    return os.urandom(32).hex()


class _Wire(asyncio.Protocol):
    """One socket: feeds the :class:`LinkConnection` and writes what it says."""

    def __init__(self, owner: _Peers, conn: LinkConnection, tls: ssl.SSLContext | None = None) -> None:
        self.owner = owner
        self.conn = conn
        #: Server side: upgrade to TLS after accepting (so the handshake cap and deadline
        #: cover the TLS handshake too, not only ours).
        self.tls = tls
        self._tls_task: asyncio.Future[None] | None = None
        #: Writes made before the TLS transport is handed back (the TLS layer may pass
        #: us the peer's first frame before ``start_tls`` returns).
        self._held: list[bytes] | None = [] if tls is not None else None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        #: The session once authenticated; None if the socket closed first.
        self.authenticated: asyncio.Future[LinkSession | None] = asyncio.get_running_loop().create_future()
        self.peer_id = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A write transport (uvloop's do not subclass asyncio.Transport, hence no isinstance).
        self.transport = transport  # type: ignore[assignment]
        if self.conn.role is Role.CLIENT:
            self.conn.initiate()
            self.write(self.conn.data_to_send())
        self.owner._wire_opened(self)
        if self.tls is not None:
            self.transport.pause_reading()  # type: ignore[union-attr]  # the TLS layer reads first
            self._tls_task = asyncio.ensure_future(self._start_tls(self.tls))

    async def _start_tls(self, ctx: ssl.SSLContext) -> None:
        raw = self.transport
        assert raw is not None
        try:
            upgraded = await asyncio.get_running_loop().start_tls(
                raw, self, ctx, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
            )
        except (OSError, ssl.SSLError, ConnectionError, asyncio.TimeoutError) as exc:
            if not self.closed:  # (not dropped by us: evicted or timed out)
                self.owner._wire_refused(self, LinkError(f"TLS handshake failed: {type(exc).__name__}"))
            self.abort()
            return
        if upgraded is None or self.closed:
            raw.abort()
            return
        self.transport = upgraded
        held, self._held = self._held or [], None
        if held:
            upgraded.write(b"".join(held))

    def data_received(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            events = self.conn.receive_data(data, loop.time())
        except LinkError as exc:
            self.owner._wire_refused(self, exc)
            self.abort()
            return
        out = self.conn.data_to_send()
        if out:
            self.write(out)
        for event in events:
            # The owner's callbacks are its business: a bug there is logged and counted,
            # never allowed to break the link (the stream is already past these frames).
            try:
                if isinstance(event, Delivered):
                    self.owner._delivered(self.peer_id, event)
                elif isinstance(event, Authenticated):
                    self.peer_id = event.session.peer_id
                    self.owner._bound(self, event)
                    if not self.authenticated.done():
                        self.authenticated.set_result(event.session)
                elif isinstance(event, PeerRestarted):
                    self.owner._restarted(event.previous)
            except Exception:
                self.owner.counters["link_callback_errors"] += 1
                log.exception("link %d: a handler of its frames failed", self.peer_id)
        # An acknowledgement may have opened the window for items that were waiting.
        session = self.conn.session
        if session is not None and session.pending:
            self.owner._mark(session.peer_id)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.authenticated.done():
            self.authenticated.set_result(None)
        self.owner._wire_lost(self)

    def write(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _Peers:
    """What both ends share: sessions by peer, one bound socket each, grouped writes,
    heartbeats. Subclasses decide how sockets come to be."""

    role: Role

    def __init__(
        self,
        key: bytes,
        my_id: int,
        on_items: Callable[[int, list[Any]], None],
        *,
        on_released: Callable[[int, list[Any]], None] | None = None,
        on_restarted: Callable[[LinkSession], None] | None = None,
        limits: LinkLimits = DEFAULT_LIMITS,
        linger: float = 0.0,
    ) -> None:
        self._key = key
        #: The shortest time between two writes of items (0: at the end of each loop
        #: iteration). A process woken once per frame pays most of its CPU for the
        #: wake-up itself at moderate load; a few ms gathers several calls' items into
        #: one write and one wake-up of the peer. Only items that follow a write within
        #: it wait: after a quiet spell an item leaves at once (no cost in latency when idle).
        self.linger = linger
        self._last_write = -1e9
        self.my_id = my_id
        self.incarnation = new_incarnation()
        self.limits = limits
        self._on_items = on_items
        self._on_released = on_released
        self._on_restarted = on_restarted
        self.sessions: dict[int, LinkSession] = {}
        self.wires: dict[int, _Wire] = {}
        self._dirty: set[int] = set()
        self._flush_scheduled = False
        self._flush_timer: asyncio.TimerHandle | None = None
        #: Per peer: when an owed acknowledgement goes as a bare ACK (see _flush).
        self._ack_timers: dict[int, asyncio.TimerHandle] = {}
        self._last_refusal_log = -1e9
        self.counters: Counter[str] = Counter()

    # -- sessions --

    def session(self, peer_id: int) -> LinkSession:
        session = self.sessions.get(peer_id)
        if session is None:
            # The peer's incarnation is learnt at the first handshake.
            session = self.sessions[peer_id] = LinkSession(peer_id, b"", self.limits)
        return session

    def _lookup(self, peer_id: int, incarnation: bytes) -> tuple[LinkSession, LinkSession | None]:
        session = self.session(peer_id)
        if session.peer_incarnation in (b"", incarnation):
            session.peer_incarnation = incarnation
            return session, None
        fresh = self.sessions[peer_id] = LinkSession(peer_id, incarnation, self.limits)
        return fresh, session

    def _connection(self, incarnation: bytes, **kw: Any) -> LinkConnection:
        return LinkConnection(self.role, self._key, self.my_id, incarnation, self._lookup, **kw)

    # -- sending --

    def send(self, peer_id: int, item: Any, meta: Any = None) -> None:
        """Queue ``item`` for ``peer_id``; it leaves after :attr:`linger` seconds (at the
        end of this loop iteration when 0), or after the next reconnect. Raises
        :class:`LinkOverflow` when the peer's queue is full."""
        session = self.session(peer_id)
        session.queue(item, meta)
        self._mark(peer_id, full=session.pending >= LINGER_ENOUGH)

    def _mark(self, peer_id: int, full: bool = False) -> None:
        """Flush ``peer_id`` soon: after the linger, or at the end of this iteration when
        there is none or ``full`` (enough items wait: at a burst, waiting would only
        leave the CPU idle)."""
        self._dirty.add(peer_id)
        timer = self._flush_timer
        if full and timer is not None:
            timer.cancel()
            self._flush_timer = None
            self._flush_scheduled = False
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = asyncio.get_running_loop()
            wait = self._last_write + self.linger - loop.time() if self.linger > 0 and not full else 0.0
            if wait > 0:
                self._flush_timer = loop.call_later(wait, self._flush)
            else:
                loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._flush_timer = None
        dirty, self._dirty = self._dirty, set()
        loop = asyncio.get_running_loop()
        now = loop.time()
        for peer_id in dirty:
            wire = self.wires.get(peer_id)
            session = self.sessions.get(peer_id)
            if wire is None or session is None or wire.closed:
                continue  # kept until the link is back
            frames = session.pack(now, ack=False)
            if frames:
                wire.write(b"".join(frames))
                self._last_write = now
            self._time_ack(loop, peer_id, session)

    def _time_ack(self, loop: asyncio.AbstractEventLoop, peer_id: int, session: LinkSession) -> None:
        """Keep ``peer_id``'s ACK timer in step with what its session owes."""
        deadline = session.ack_deadline
        timer = self._ack_timers.get(peer_id)
        if deadline is None:
            if timer is not None:
                timer.cancel()
                del self._ack_timers[peer_id]
        elif timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            when = max(deadline, loop.time())  # (-inf: at once)
            self._ack_timers[peer_id] = loop.call_at(when, self._ack_overdue, peer_id)

    def _ack_overdue(self, peer_id: int) -> None:
        """No DATA carried the acknowledgement in time: a bare ACK goes."""
        self._ack_timers.pop(peer_id, None)
        wire = self.wires.get(peer_id)
        session = self.sessions.get(peer_id)
        if wire is None or session is None or wire.closed:
            return  # the handshake of the next socket says where we are
        frames = session.pack(asyncio.get_running_loop().time())
        if frames:
            wire.write(b"".join(frames))

    # -- events from the wires --

    def _wire_opened(self, wire: _Wire) -> None:
        pass

    def _wire_refused(self, wire: _Wire, exc: LinkError) -> None:
        # Counted always; logged at most once a minute (a flood must not flood the log).
        self.counters["link_refused"] += 1
        now = asyncio.get_running_loop().time()
        if now - self._last_refusal_log >= 60.0:
            self._last_refusal_log = now
            log.warning("refused a link (%d so far): %s", self.counters["link_refused"], exc)

    def _bound(self, wire: _Wire, event: Authenticated) -> None:
        peer_id = event.session.peer_id
        old = self.wires.get(peer_id)
        self.wires[peer_id] = wire
        if old is not None and old is not wire:
            old.abort()
        self.counters["links_authenticated"] += 1
        if event.released and self._on_released is not None:
            self._on_released(peer_id, event.released)
        self._mark(peer_id)  # what waited while the link was down

    def _delivered(self, peer_id: int, event: Delivered) -> None:
        if event.released and self._on_released is not None:
            self._on_released(peer_id, event.released)
        if event.items:
            self._on_items(peer_id, event.items)
        session = self.sessions.get(peer_id)
        if session is not None and session.ack_due:
            self._mark(peer_id)

    def _restarted(self, previous: LinkSession) -> None:
        self.counters["peer_restarts"] += 1
        if self._on_restarted is not None:
            self._on_restarted(previous)

    def _wire_lost(self, wire: _Wire) -> None:
        if self.wires.get(wire.peer_id) is wire:
            del self.wires[wire.peer_id]

    # -- time --

    def tick(self, now: float, lag: float) -> None:
        """Heartbeats on idle links; a link silent past ``dead_after`` is closed (and,
        from the client side, reconnected)."""
        for peer_id, wire in list(self.wires.items()):
            session = self.sessions.get(peer_id)
            if session is None:
                continue
            if session.silent_too_long(now):
                self.counters["links_silent_closed"] += 1
                log.warning("link to %d silent for %.1f s: closing it", peer_id, now - session.last_heard)
                wire.abort()
                self._wire_lost(wire)
            elif session.heartbeat_due(now):
                wire.write(session.heartbeat(now, lag))

    def link_stats(self) -> dict[str, Any]:
        totals: Counter[str] = Counter(self.counters)
        for session in self.sessions.values():
            for key, value in session.stats().items():
                totals[f"link_{key}"] += value
        return dict(totals)

    def close(self) -> None:
        for timer in self._ack_timers.values():
            timer.cancel()
        self._ack_timers.clear()
        for wire in list(self.wires.values()):
            wire.abort()
        self.wires.clear()


class LinkServer(_Peers):
    """The CallActor's end: accepts links from the app's connection actors.

    Args:
        key: the app's link secret.
        my_id: this CallActor's index.
        on_items: ``(shard, items)`` for every delivered batch.
        on_restarted: a connection actor came back as a new incarnation (its
            previous session is passed: what it had not acknowledged is void).
        tls: the server context (per-app certificate), or None for no TCP listener.
    """

    role = Role.SERVER

    def __init__(self, key: bytes, my_id: int, on_items: Callable[[int, list[Any]], None], **kw: Any) -> None:
        self._tls: ssl.SSLContext | None = kw.pop("tls", None)
        super().__init__(key, my_id, on_items, **kw)
        self._servers: list[asyncio.AbstractServer] = []
        self._handshaking: dict[_Wire, asyncio.TimerHandle] = {}
        self.unix_path = ""
        self._unix_dir = ""
        self.host = ""
        self.port = 0

    async def start(self, host: str | None, unix_dir: str | None = None) -> dict[str, Any]:
        """Listen on a private Unix socket (in ``unix_dir``, else a private temp dir) and,
        if ``host`` is given, on ``host`` with TLS. Returns the endpoint description."""
        loop = asyncio.get_running_loop()
        self._unix_dir = _private_dir(unix_dir)
        self.unix_path = os.path.join(self._unix_dir, f"l{os.getpid()}-{self.incarnation.hex()[:8]}.sock")
        old_umask = os.umask(0o177)  # the socket file is created 0600: owner only
        try:
            server = await loop.create_unix_server(self._factory, self.unix_path, backlog=1024)
        finally:
            os.umask(old_umask)
        os.chmod(self.unix_path, stat.S_IRUSR | stat.S_IWUSR)
        self._servers.append(server)
        if host:
            if host in ("0.0.0.0", "::", ""):
                raise ValueError("the link never listens on a wildcard address")
            tcp = await loop.create_server(self._tls_factory, host, 0, backlog=1024)
            self._servers.append(tcp)
            self.host = host
            self.port = tcp.sockets[0].getsockname()[1]
        return {"unix": self.unix_path, "host": self.host, "port": self.port}

    def _factory(self) -> _Wire:
        return _Wire(self, self._connection(self.incarnation))

    def _tls_factory(self) -> _Wire:
        if self._tls is None:
            raise LinkError("a TCP link listener needs TLS")
        return _Wire(self, self._connection(self.incarnation), tls=self._tls)

    def _wire_opened(self, wire: _Wire) -> None:
        self.counters["link_accepted"] += 1
        if len(self._handshaking) >= MAX_HANDSHAKES:
            # Drop the oldest handshake, not the newcomer: a flood of idle sockets
            # cannot keep an honest peer (who completes in a millisecond) out.
            oldest = next(iter(self._handshaking))
            self._handshaking.pop(oldest).cancel()
            self.counters["handshakes_evicted"] += 1
            oldest.abort()
        loop = asyncio.get_running_loop()
        self._handshaking[wire] = loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_timeout, wire)

    def _handshake_timeout(self, wire: _Wire) -> None:
        if self._handshaking.pop(wire, None) is not None:
            self.counters["handshakes_timed_out"] += 1
            wire.abort()

    def _end_handshake(self, wire: _Wire) -> None:
        timer = self._handshaking.pop(wire, None)
        if timer is not None:
            timer.cancel()

    def _bound(self, wire: _Wire, event: Authenticated) -> None:
        self._end_handshake(wire)
        super()._bound(wire, event)

    def _wire_refused(self, wire: _Wire, exc: LinkError) -> None:
        self._end_handshake(wire)
        super()._wire_refused(wire, exc)

    def _wire_lost(self, wire: _Wire) -> None:
        self._end_handshake(wire)
        super()._wire_lost(wire)

    @property
    def handshakes_in_progress(self) -> int:
        return len(self._handshaking)

    async def aclose(self) -> None:
        self.close()
        for wire in list(self._handshaking):
            self._end_handshake(wire)
            wire.abort()
        for server in self._servers:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        with contextlib.suppress(OSError):
            os.unlink(self.unix_path)


class LinkClient(_Peers):
    """The connection actor's end: one link per CallActor, kept up by itself.

    Args:
        key: the app's link secret.
        my_id: this shard's number.
        on_items: ``(call_actor_index, items)`` for every delivered batch.
        on_released: ``(call_actor_index, metas)`` when the peer acknowledged frames.
        on_restarted: the CallActor came back as a new incarnation; its previous
            session (what it never acknowledged) is passed.
        on_health: ``(call_actor_index, Health)`` on every change of a link's status.
        on_linked: ``(call_actor_index)`` each time a link to it is authenticated.
        endpoint: ``async (index) -> (endpoint dict, same_node)`` (a Ray call).
        tls: the client context that pins the app's certificate.
    """

    role = Role.CLIENT

    def __init__(
        self,
        key: bytes,
        my_id: int,
        on_items: Callable[[int, list[Any]], None],
        *,
        endpoint: Callable[[int], Awaitable[tuple[dict[str, Any], bool]]],
        on_health: Callable[[int, Health], None] | None = None,
        on_linked: Callable[[int], None] | None = None,
        tls: ssl.SSLContext | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(key, my_id, on_items, **kw)
        self._endpoint = endpoint
        self._on_health = on_health
        self._on_linked = on_linked
        self._tls = tls
        self._keepers: dict[int, asyncio.Task[None]] = {}
        self._down: dict[int, asyncio.Event] = {}
        self._up: dict[int, asyncio.Event] = {}
        self.health: dict[int, Health] = {}
        #: Our incarnation as each CallActor sees it: a new one after :meth:`reset`, so
        #: the CallActor starts a fresh session too.
        self._epochs: dict[int, bytes] = {}
        self._closed = False

    def ensure(self, peer_id: int) -> None:
        """Keep a link to CallActor ``peer_id`` up from now on."""
        self.session(peer_id)
        if peer_id not in self._keepers and not self._closed:
            self._down[peer_id] = asyncio.Event()
            self._down[peer_id].set()
            self._up.setdefault(peer_id, asyncio.Event())
            task = asyncio.ensure_future(self._keep(peer_id))
            self._keepers[peer_id] = task

    def forget(self, peer_id: int) -> LinkSession | None:
        """Stop linking to ``peer_id``; returns its session (what it never acknowledged)."""
        task = self._keepers.pop(peer_id, None)
        if task is not None:
            task.cancel()
        wire = self.wires.pop(peer_id, None)
        if wire is not None:
            wire.abort()
        self.health.pop(peer_id, None)
        return self.sessions.pop(peer_id, None)

    def reset(self, peer_id: int) -> LinkSession:
        """Start afresh with ``peer_id`` after the lost-actor policy ran on it: the old
        session (returned) is void, both ends start new ones, the link comes back."""
        old = self.sessions.pop(peer_id, None) or LinkSession(peer_id, b"", self.limits)
        self._epochs[peer_id] = new_incarnation()
        self.session(peer_id)
        wire = self.wires.pop(peer_id, None)
        if wire is not None:
            wire.abort()
            down = self._down.get(peer_id)
            if down is not None:
                down.set()
        # Forget the void session's health: the next tick reports the fresh one's, so a
        # "slow" the owner set for the dead peer is cleared (else it would take no new work).
        self.health.pop(peer_id, None)
        return old

    async def wait_linked(self, peer_ids: list[int], timeout: float) -> list[int]:
        """Wait up to ``timeout`` for links to ``peer_ids``; returns those still down (the
        caller carries on with a partial pool: they come up by themselves)."""
        events = [self._up.setdefault(p, asyncio.Event()) for p in peer_ids]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout)
        return [p for p in peer_ids if not self.connected(p)]

    def connected(self, peer_id: int) -> bool:
        wire = self.wires.get(peer_id)
        return wire is not None and not wire.closed

    async def _keep(self, peer_id: int) -> None:
        delay = 0.05
        down = self._down[peer_id]
        while not self._closed:
            await down.wait()
            try:
                await self._connect(peer_id)
                down.clear()
                delay = 0.05
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters["link_connect_failures"] += 1
                log.info("shard %d: link to CallActor %d not up yet (%s)", self.my_id, peer_id, _why(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _connect(self, peer_id: int) -> None:
        loop = asyncio.get_running_loop()
        info, same_node = await asyncio.wait_for(self._endpoint(peer_id), 2 * CONNECT_TIMEOUT)
        epoch = self._epochs.setdefault(peer_id, new_incarnation())
        wire = _Wire(self, self._connection(epoch, expect_peer=peer_id))
        unix = info.get("unix")
        if same_node and unix:
            connect = loop.create_unix_connection(lambda: wire, unix)
        elif info.get("port"):
            if self._tls is None:
                raise LinkError("the CallActor is on another node and no TLS context was given")
            connect = loop.create_connection(
                lambda: wire, info["host"], info["port"], ssl=self._tls, server_hostname="relay-actors-link"
            )
        else:
            raise LinkError(f"no way to reach CallActor {peer_id}: {info}")
        await asyncio.wait_for(connect, CONNECT_TIMEOUT)
        try:
            session = await asyncio.wait_for(asyncio.shield(wire.authenticated), HANDSHAKE_TIMEOUT)
        except BaseException:
            wire.abort()
            raise
        if session is None:
            raise LinkError("the CallActor closed the link during the handshake")

    def _bound(self, wire: _Wire, event: Authenticated) -> None:
        super()._bound(wire, event)
        self._up.setdefault(wire.peer_id, asyncio.Event()).set()
        if self._on_linked is not None:
            self._on_linked(wire.peer_id)

    def _wire_lost(self, wire: _Wire) -> None:
        super()._wire_lost(wire)
        if wire.peer_id >= 0 and wire.peer_id not in self.wires:
            up = self._up.get(wire.peer_id)
            if up is not None:
                up.clear()
            down = self._down.get(wire.peer_id)
            if down is not None:
                down.set()

    def tick(self, now: float, lag: float) -> None:
        super().tick(now, lag)
        for peer_id in list(self._keepers):
            session = self.sessions.get(peer_id)
            if session is None:
                continue
            health = session.health(now, self.connected(peer_id))
            previous = self.health.get(peer_id)
            if previous is None or previous.status is not health.status:
                self.health[peer_id] = health
                if self._on_health is not None:
                    self._on_health(peer_id, health)

    def status(self, peer_id: int) -> HealthStatus:
        health = self.health.get(peer_id)
        return health.status if health is not None else HealthStatus.OK

    async def aclose(self) -> None:
        self._closed = True
        tasks = list(self._keepers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._keepers.clear()
        self.close()


class LinkHub:
    """The process's clock for its links: heartbeats, liveness and event-loop lag,
    on one timer (a blocked loop shows here as lag, and to peers as silence)."""

    def __init__(self, *peers: _Peers, interval: float = 0.25) -> None:
        self.peers = list(peers)
        self.interval = interval
        self.lag = 0.0
        self.max_lag = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        expected = loop.time() + self.interval
        while True:
            await asyncio.sleep(max(0.0, expected - loop.time()))
            now = loop.time()
            self.lag = max(0.0, now - expected)
            self.max_lag = max(self.max_lag, self.lag)
            expected = now + self.interval
            for peers in self.peers:
                try:
                    peers.tick(now, self.lag)
                except Exception:
                    log.exception("link tick failed")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _private_dir(preferred: str | None) -> str:
    """A directory for the Unix socket that only this user can enter, with a path
    short enough for ``sun_path`` (108 bytes)."""
    if preferred and len(preferred) < 70 and os.path.isdir(preferred):
        path = os.path.join(preferred, "relay-links")
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        return path
    return tempfile.mkdtemp(prefix="rl-")


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
