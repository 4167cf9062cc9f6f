"""The emulator's state and every control operation, independent of any transport.

:class:`EmulatorCore` owns the configuration, credentials, sessions, calls and
counters. The WebSocket server feeds it frames; the HTTP control API and the
in-process :class:`~relay_actors.emulator.Emulator` call its methods.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson

from ..protocol.constants import METHOD_DISCONNECT, METHOD_PING
from .auth import Credentials
from .caller import parse_inputs
from .calls import Call, CallService
from .config import EmulatorConfig
from .journal import Journal
from .messaging import MessagingService
from .session import Session

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["EmulatorCore", "UnknownSession"]


class UnknownSession(KeyError):
    """No session has that protocol."""


class EmulatorCore:
    """Shared state of one emulator instance."""

    def __init__(self, config: EmulatorConfig, credentials: Credentials) -> None:
        self.config = config
        self.credentials = credentials
        self.node_id = str(uuid.uuid4())
        self.master_node_id = str(uuid.uuid4())
        self.sessions: dict[str, Session] = {}
        self.retired_protocols: set[str] = set()
        self.journal = Journal(config.journal_limit)
        self.calls = CallService(self)
        self.messaging = MessagingService(self)
        self.refuse_handshakes = 0
        # Plain ints, not Counter entries: they are bumped once per frame.
        self.frames_in = 0
        self.frames_out = 0
        self.stats_counters: Counter[str] = Counter()
        self.calls_by_state: Counter[str] = Counter()
        self._round_robin: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- helpers used by the services -------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        self.stats_counters[name] += n

    def count_call_state(self, call: Call) -> None:
        """Count a call entering its current state."""
        self.calls_by_state[call.state] += 1

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def subscribers(self, context: str) -> list[Session]:
        """Live sessions receiving ``context`` (a session's own protocol counts as a context)."""
        direct = self.sessions.get(context)
        found = [s for s in self.sessions.values() if not s.closed and context in s.contexts]
        if direct is not None and not direct.closed and direct not in found:
            found.append(direct)
        return found

    def next_subscriber(self, context: str, exclude: Iterable[str] = ()) -> Session | None:
        """The next subscriber of ``context`` in round-robin order, skipping ``exclude`` protocols."""
        excluded = set(exclude)
        candidates = [s for s in self.subscribers(context) if s.protocol not in excluded]
        if not candidates:
            return None
        # Prefer attached sessions; a detached one still queues (it may resume).
        attached = [s for s in candidates if s.attached] or candidates
        index = self._round_robin.get(context, 0)
        self._round_robin[context] = index + 1
        return attached[index % len(attached)]

    def new_session(self, project: str, contexts: set[str]) -> Session:
        """Create and register a session."""
        session = Session(project, contexts, id_prefix=f"sw-{uuid.uuid4().hex[:8]}-")
        session.max_unacked = self.config.max_unacked
        self.sessions[session.protocol] = session
        return session

    def retire(self, session: Session, reason: str = "hangup") -> None:
        """Close a session for good: its protocol is refused and its calls end."""
        session.closed = True
        self.count("acks_retired", session.acks)
        self.calls.end_session_calls(session, reason)
        self.sessions.pop(session.protocol, None)
        self.retired_protocols.add(session.protocol)

    def session(self, protocol: str) -> Session:
        """The session named ``protocol``; raises :class:`UnknownSession`."""
        session = self.sessions.get(protocol)
        if session is None:
            raise UnknownSession(protocol)
        return session

    async def expire_detached(self) -> None:
        """Retire sessions detached for longer than the grace period (runs forever)."""
        while True:
            await asyncio.sleep(min(1.0, max(0.05, self.config.resume_grace / 4)))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.detached_at is not None and now - session.detached_at > self.config.resume_grace:
                    self.retire(session)

    async def ping_loop(self) -> None:
        """Send ``signalwire.ping`` to every attached session every ``ping_interval`` seconds."""
        while True:
            interval = self.config.ping_interval
            await asyncio.sleep(interval if interval > 0 else 1.0)
            if interval <= 0:
                continue
            for session in list(self.sessions.values()):
                if session.attached and not session.silent:
                    future = session.request(METHOD_PING, {"timestamp": time.time()})
                    if future is not None:
                        self.count("pings_sent")
                        # Nobody awaits a ping ack: don't let its cancellation be reported.
                        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    # --- control operations -----------------------------------------------------
    def inject_calls(
        self, context: str, count: int = 1, rate: float | None = None, **options: Any
    ) -> list[str]:
        """Inject ``count`` inbound calls on ``context``; at ``rate`` calls/s when given.

        Returns the ids of the calls injected now (all of them when ``rate`` is None,
        else an empty list: they arrive in the background).
        """
        if options.get("inputs") is not None:
            # Checked now: with a rate, the calls are made later, where an error reaches nobody.
            options["inputs"] = parse_inputs(options["inputs"])
        if rate is None or rate <= 0:
            return [self.calls.inject(context, **options).call_id for _ in range(count)]
        self.spawn(self._inject_at_rate(context, count, rate, options))
        return []

    async def _inject_at_rate(self, context: str, count: int, rate: float, options: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in range(count):
            due = start + index / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.calls.inject(context, **options)
            self.count("calls_injected_at_rate")

    def hangup(self, call_id: str, reason: str = "hangup") -> bool:
        """The far side hangs up ``call_id``."""
        return self.calls.hangup(call_id, reason)

    def push_event(self, protocol: str, event_type: str, params: dict[str, Any]) -> str:
        """Emit an arbitrary event to a session; returns the event id."""
        return self.session(protocol).emit(event_type, params)

    def push_raw(self, protocol: str, frame: str | bytes | dict[str, Any] | list[Any]) -> None:
        """Send a raw frame (possibly malformed) on a session's socket, untracked."""
        session = self.session(protocol)
        if session.peer is None:
            raise UnknownSession(f"{protocol} is not attached")
        data = frame if isinstance(frame, (str, bytes)) else orjson.dumps(frame)
        session.peer.push(data.encode() if isinstance(data, str) else data)

    def drop(self, protocol: str) -> bool:
        """Drop a session's socket abruptly (no close handshake); False if detached."""
        session = self.session(protocol)
        if session.peer is None:
            return False
        session.peer.abort()
        return True

    async def disconnect(self, protocol: str, restart: bool = False) -> bool:
        """Send ``signalwire.disconnect``, await the ack (bounded), close the socket.

        With ``restart`` the protocol is retired: refused on resume, its calls ended.
        Returns True when the client acked in time.
        """
        session = self.session(protocol)
        acked = False
        peer = session.peer
        future = session.request(METHOD_DISCONNECT, {"restart": restart})
        if future is not None:
            try:
                await asyncio.wait_for(future, self.config.disconnect_ack_timeout)
                acked = True
            except (asyncio.TimeoutError, asyncio.CancelledError):
                acked = False
        if restart:
            self.retire(session)
        if peer is not None:
            peer.close_gracefully()  # type: ignore[attr-defined]
        return acked

    def set_half_open(
        self, protocol: str, *, answer_pings: bool | None = None, silent: bool | None = None
    ) -> None:
        """Stop answering pings and/or stop sending anything, keeping the socket open."""
        session = self.session(protocol)
        if answer_pings is not None:
            session.answer_pings = answer_pings
        if silent is not None:
            session.silent = silent
            if not silent and session.peer is not None:
                session.peer.wake()  # type: ignore[attr-defined]

    def set_faults(self, protocol: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change a session's fault knobs; returns them all."""
        faults = self.session(protocol).faults
        for key, value in changes.items():
            if key not in faults.__slots__:
                raise ValueError(f"unknown fault {key!r}")
            setattr(faults, key, type(getattr(faults, key))(value))
        return faults.to_dict()

    def set_config(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Partial configuration update; returns the whole configuration."""
        self.config.update(changes)
        if "max_unacked" in changes:
            for session in self.sessions.values():
                session.max_unacked = self.config.max_unacked
        if "journal_limit" in changes:
            self.journal.limit = self.config.journal_limit
        return self.config.to_dict()

    async def flood(self, protocol: str, count: int, event_type: str = "calling.call.play") -> None:
        """Emit ``count`` small events to a session as fast as its socket drains (benchmark)."""
        session = self.session(protocol)
        params = {"call_id": "flood", "node_id": self.node_id, "control_id": "flood", "state": "playing"}
        emit = session.emit
        chunk = 256
        sent = 0
        while sent < count:
            n = min(chunk, count - sent)
            for _ in range(n):
                emit(event_type, params)
            sent += n
            peer = session.peer
            if peer is not None:
                await peer.drained(chunk * 4)  # type: ignore[attr-defined]
            else:
                await asyncio.sleep(0)

    def list_sessions(self) -> list[dict[str, Any]]:
        """Every known session."""
        return [s.describe() for s in self.sessions.values()]

    def list_calls(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every known call (optionally only those in ``state``)."""
        return [c.describe() for c in self.calls.calls.values() if state is None or c.state == state]

    def stats(self) -> dict[str, Any]:
        """Counters for the control API."""
        live: Counter[str] = Counter(call.state for call in self.calls.calls.values())
        return {
            "sessions": len(self.sessions),
            "sessions_attached": sum(1 for s in self.sessions.values() if s.attached),
            "calls": dict(live),
            "call_state_transitions": dict(self.calls_by_state),
            "unacked": {p: len(s.unacked) for p, s in self.sessions.items()},
            "dropped_events": {p: s.dropped_events for p, s in self.sessions.items() if s.dropped_events},
            "acks": sum(s.acks for s in self.sessions.values()) + self.stats_counters["acks_retired"],
            "protocol_violations": self.stats_counters["protocol_violations"],
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "messages_sent": self.messaging.sent,
            "messages_received": self.messaging.received,
            "counters": dict(self.stats_counters),
        }
