"""The client side of one RELAY session, sans-IO.

:class:`ClientSession` owns what one WebSocket conversation needs and nothing
else: the ``signalwire.connect`` parameters (both auth modes, resume by
``protocol`` and ``authorization_state``), request/response correlation by
JSON-RPC id, result-code checking, acks for every ``signalwire.event``, answers
to server pings, ``signalwire.disconnect`` and its restart flag, and the
bounded queue of requests made while disconnected.

It never touches a socket or a clock. The driver feeds it inbound frames with
:meth:`ClientSession.receive`, which returns the frame to answer with (an ack
or pong, or None) and what happened, as a list of small items; it writes the
frames the session hands back and arms timers itself.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, ProtocolError, RelayError
from . import codec
from . import constants as c
from .events import RelayEvent, drop_mistyped_fields, parse_event
from .recent_ids import RecentIds

__all__ = [
    "ClientSession",
    "ConnectFailed",
    "Connected",
    "Credentials",
    "DisconnectRequested",
    "EventReceived",
    "Item",
    "PingReceived",
    "ProtocolViolation",
    "RequestFailed",
    "ResponseReceived",
    "check_result",
]

log = logging.getLogger("relay_actors.protocol")


@dataclass(frozen=True)
class Credentials:
    """Project + API token, or a JWT. Never printed: the repr masks every value."""

    project: str = ""
    token: str = ""
    jwt_token: str = ""

    def __post_init__(self) -> None:
        if not self.jwt_token and not (self.project and self.token):
            raise ConfigError("credentials need a JWT, or both a project and a token")

    def authentication(self) -> dict[str, str]:
        """The ``authentication`` object of ``signalwire.connect``."""
        if self.jwt_token:
            return {"jwt_token": self.jwt_token}
        return {"project": self.project, "token": self.token}

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in logs (used by log scrubbing)."""
        return tuple(v for v in (self.project, self.token, self.jwt_token) if v)

    def __repr__(self) -> str:
        mode = "jwt" if self.jwt_token else "project+token"
        return f"Credentials({mode}, ***)"

    __str__ = __repr__


# --- what receive() reports ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A 2xx (or uncoded) answer to one of our requests. ``result`` is always a dict."""

    id: str
    method: str
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A request answered with a JSON-RPC error or a non-2xx code."""

    id: str
    method: str
    error: RelayError


@dataclass(frozen=True, slots=True)
class Connected:
    """``signalwire.connect`` succeeded. ``restored`` is True when the session resumed."""

    id: str
    protocol: str
    restored: bool
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """``signalwire.connect`` was rejected (bad credentials, unknown protocol, ...)."""

    id: str
    error: RelayError


@dataclass(frozen=True, slots=True)
class EventReceived:
    """A ``signalwire.event``. Already acked (the reply frame) unless the session
    defers acks; then ``ack_id`` is the id to pass to :meth:`ClientSession.ack`."""

    event: RelayEvent
    ack_id: str | None = None


@dataclass(frozen=True, slots=True)
class PingReceived:
    """A server ping, already answered: restart the server-ping watchdog."""


@dataclass(frozen=True, slots=True)
class DisconnectRequested:
    """The server will close the socket. With ``restart`` the resume state was cleared."""

    restart: bool


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """A frame, or a field of one, that broke the rules. A bad frame is dropped (a
    request with an id still answered); a wrongly typed field is removed from its
    event, which is delivered without it."""

    error: ProtocolError


Item = (
    ResponseReceived
    | RequestFailed
    | Connected
    | ConnectFailed
    | EventReceived
    | PingReceived
    | DisconnectRequested
    | ProtocolViolation
)


def check_result(method: str, result: Any) -> dict[str, Any]:
    """Apply the SDK's result rules: non-dict → ``{"raw": value}``; non-2xx ``code`` → RelayError."""
    if not isinstance(result, dict):
        return {"raw": result}
    code = result.get("code")
    if code is None or method == c.METHOD_CONNECT:
        return result
    code_str = str(code)
    if c.SUCCESS_CODE_RE.match(code_str):
        return result
    raise RelayError.from_server(code_str, str(result.get("message", "Unknown error")), result)


_PING_REPLY: dict[str, Any] = {}


@dataclass
class ClientSession:
    """Sans-IO state of one client session (see the module docstring).

    ``protocol`` and ``authorization_state`` are the resume state: the driver
    may persist them (and :meth:`restore` them into a new instance) so a
    restarted process resumes instead of starting afresh.
    """

    credentials: Credentials
    contexts: list[str] = field(default_factory=list)
    agent: str = c.AGENT
    max_frame_size: int = codec.MAX_FRAME_SIZE
    max_queued: int = c.MAX_QUEUED_REQUESTS

    protocol: str = ""
    #: A credential (the resume blob): never in repr.
    authorization_state: str = field(default="", repr=False)
    identity: str = ""
    connected: bool = False
    #: ``pending[id] = method`` for requests sent and not yet answered.
    pending: dict[str, str] = field(default_factory=dict)
    #: Frames of requests made while not connected, flushed after connect.
    queued: dict[str, bytes] = field(default_factory=dict)
    #: Counters: events by type, protocol violations by code, acks sent, ...
    stats: Counter[str] = field(default_factory=Counter)
    #: Recent event ids, to drop redelivered duplicates (``recent_events.size`` of them).
    recent_events: RecentIds = field(default_factory=lambda: RecentIds(4096), repr=False, compare=False)
    #: Ack events only when the driver calls :meth:`ack` (after handing them on),
    #: so a crash before the hand-off means redelivery, not loss.
    defer_acks: bool = False
    _connect_id: str = ""
    #: Deferred events whose id was a number: text form → the number, so :meth:`ack`
    #: echoes the id as sent (bounded like ``recent_events``).
    _numeric_ids: OrderedDict[str, int | float] = field(default_factory=OrderedDict)

    # --- outbound ---------------------------------------------------------------

    def connect_params(self) -> dict[str, Any]:
        """The params of ``signalwire.connect``: auth, contexts and resume state."""
        params: dict[str, Any] = {
            "version": c.PROTOCOL_VERSION,
            "agent": self.agent,
            "event_acks": True,
            "authentication": self.credentials.authentication(),
        }
        if self.contexts:
            params["contexts"] = list(self.contexts)
        if self.protocol:
            params["protocol"] = self.protocol
        if self.authorization_state:
            params["authorization_state"] = self.authorization_state
        return params

    def start_connect(self) -> tuple[str, bytes]:
        """A new socket is open: the ``signalwire.connect`` request to send first."""
        self.connected = False
        req_id = codec.new_id()
        self._connect_id = req_id
        self.pending[req_id] = c.METHOD_CONNECT
        return req_id, codec.encode_request(req_id, c.METHOD_CONNECT, self.connect_params())

    def request(
        self, method: str, params: dict[str, Any], req_id: str | None = None
    ) -> tuple[str, bytes | None]:
        """Register a request. Returns its id and the frame to send now, or None when
        it was queued because the session is not connected.

        Raises:
            RelayError: ``queue_full`` when the disconnected queue holds ``max_queued``.
        """
        req_id = req_id or codec.new_id()
        frame = codec.encode_request(req_id, method, params)
        if self.connected:
            self.pending[req_id] = method
            return req_id, frame
        if len(self.queued) >= self.max_queued:
            self.stats["queue_full"] += 1
            raise RelayError("queue_full", "Execute queue full — too many requests while disconnected")
        self.pending[req_id] = method
        self.queued[req_id] = frame
        return req_id, None

    def take_queued(self) -> list[bytes]:
        """The queued request frames, in order, once connected (the queue is emptied)."""
        frames = list(self.queued.values())
        self.queued.clear()
        return frames

    def forget(self, req_id: str) -> None:
        """Stop tracking a request (timed out or cancelled by the driver)."""
        self.pending.pop(req_id, None)
        self.queued.pop(req_id, None)

    def connection_lost(self) -> list[tuple[str, str]]:
        """The socket is gone. Returns ``(id, method)`` of requests that were in
        flight (they fail with ``connection_closed``); queued ones stay queued."""
        self.connected = False
        lost = [(rid, m) for rid, m in self.pending.items() if rid not in self.queued]
        for rid, _ in lost:
            del self.pending[rid]
        self._connect_id = ""
        return lost

    def clear_resume_state(self) -> None:
        """Forget ``protocol`` and ``authorization_state``: the next connect is fresh."""
        self.protocol = ""
        self.authorization_state = ""

    def resume_state(self) -> dict[str, str]:
        """What a restarted process needs to resume this session (contains a credential blob)."""
        return {"protocol": self.protocol, "authorization_state": self.authorization_state}

    def restore(self, state: dict[str, Any]) -> None:
        """Load state saved by :meth:`resume_state`."""
        self.protocol = str(state.get("protocol") or "")
        self.authorization_state = str(state.get("authorization_state") or "")

    # --- inbound ----------------------------------------------------------------

    def receive(self, data: str | bytes) -> tuple[bytes | None, list[Item]]:
        """Feed one inbound frame. Returns (frame to send back or None, items).

        Never raises: malformed input becomes a :class:`ProtocolViolation`.
        """
        try:
            frame = codec.decode(data, self.max_frame_size)
        except codec.InvalidRequest as exc:
            return self._on_invalid_request(exc)
        except ProtocolError as exc:
            return None, [self._violation(exc)]
        if isinstance(frame, codec.Request):
            return self._on_request(frame)
        if isinstance(frame, codec.Response):
            return None, [self._on_response(frame)]
        return None, [self._on_error(frame)]

    def ack(self, event_id: str) -> bytes:
        """The ack frame of an event received with deferred acks."""
        self.stats["acks_sent"] += 1
        return codec.encode_result(self._numeric_ids.pop(event_id, event_id), _PING_REPLY)

    def _violation(self, exc: ProtocolError) -> ProtocolViolation:
        self.stats[f"violation.{exc.failure}"] += 1
        log.warning("RELAY protocol violation: %s", exc.message)
        return ProtocolViolation(exc)

    def _on_invalid_request(self, exc: codec.InvalidRequest) -> tuple[bytes | None, list[Item]]:
        """A request with an id but a bad method or params: answered all the same.

        RELAY's server requests (event, ping, disconnect) all expect the empty
        result whatever they carry, and the server redelivers an unanswered event
        for ever, so a known method is acked like a well-formed one; its params
        are unreadable, so it is treated as carrying none (a disconnect as
        ``restart: false``). A bad or unknown method gets the JSON-RPC error.
        """
        violation = self._violation(exc)
        req = exc.request
        reply_id: codec.WireId = req.reply_id  # type: ignore[assignment]  # never None here
        if req.method == c.METHOD_EVENT:
            self.stats["acks_sent"] += 1
            return codec.encode_result(reply_id, _PING_REPLY), [violation]
        if not req.method:
            return codec.encode_error(reply_id, -32600, "Invalid Request"), [violation]
        reply, items = self._on_request(req)
        return reply, [violation, *items]

    def _on_request(self, req: codec.Request) -> tuple[bytes | None, list[Item]]:
        reply_id = req.reply_id
        ack = codec.encode_result(reply_id, _PING_REPLY) if reply_id is not None else None
        method = req.method
        if method == c.METHOD_EVENT:
            # An empty id cannot be deferred: drivers take a falsy ``ack_id`` as "already acked".
            if self.defer_acks and req.id:
                if self.recent_events.seen_before(req.id):
                    # Redelivered and already handed on: ack it again, deliver once.
                    self.stats["duplicate_events"] += 1
                    return ack, []
                items = self._on_event(req.params)
                if items and isinstance(items[0], EventReceived):
                    items[0] = EventReceived(items[0].event, req.id)
                    if req.wire_id is not None:
                        self._numeric_ids[req.id] = req.wire_id
                        if len(self._numeric_ids) > self.recent_events.size:
                            self._numeric_ids.popitem(last=False)
                    return None, items
                return ack, items  # a malformed event is acked at once: it goes nowhere
            if ack is not None:
                self.stats["acks_sent"] += 1
                # The server redelivers events it saw no ack for (resume): ack again, deliver once.
                if self.recent_events.seen_before(req.id):  # type: ignore[arg-type]
                    self.stats["duplicate_events"] += 1
                    return ack, []
            return ack, self._on_event(req.params)
        if method == c.METHOD_PING:
            self.stats["server_pings"] += 1
            return ack, [PingReceived()]
        if method == c.METHOD_DISCONNECT:
            restart = req.params.get("restart") is True
            if restart:
                self.clear_resume_state()
            self.stats["server_disconnects"] += 1
            return ack, [DisconnectRequested(restart)]
        # An unknown server request: answer it so the server does not wait, and count it.
        err = ProtocolError("unknown_method", f"unknown server request {method!r}")
        reply = codec.encode_error(reply_id, -32601, "Method not found") if reply_id is not None else None
        return reply, [self._violation(err)]

    def _on_event(self, outer: dict[str, Any]) -> list[Item]:
        event_type = outer.get("event_type")
        inner = outer.get("params")
        if not isinstance(event_type, str) or not event_type:
            return [self._violation(ProtocolError("invalid_params", "event_type must be a non-empty string"))]
        if not isinstance(inner, dict):
            return [
                self._violation(
                    ProtocolError(
                        "invalid_params",
                        f"{event_type} event params must be an object, not {type(inner).__name__}",
                    )
                )
            ]
        self.stats[event_type] += 1
        items: list[Item] = []
        for name in drop_mistyped_fields(event_type, inner):
            items.append(
                self._violation(ProtocolError("invalid_field", f"{event_type}: {name} has the wrong type"))
            )
        timestamp = outer.get("timestamp")
        if timestamp is not None and type(timestamp) not in (int, float):
            items.append(
                self._violation(ProtocolError("invalid_field", f"{event_type}: timestamp is not a number"))
            )
        event = parse_event(event_type, inner, timestamp)
        if event_type == c.EVENT_AUTHORIZATION_STATE:
            value = inner.get("authorization_state")
            # An empty value never overwrites a good one.
            if isinstance(value, str) and value:
                self.authorization_state = value
        items.insert(0, EventReceived(event))
        if event_type not in c.EVENT_TYPES:
            # Still delivered (listeners may want it), but counted and logged.
            items.append(
                self._violation(ProtocolError("unknown_event", f"unknown event type {event_type!r}"))
            )
        return items

    def _on_response(self, resp: codec.Response) -> Item:
        method = self.pending.pop(resp.id, None)
        if method is None:
            return self._violation(ProtocolError("unknown_response", "response to an unknown request id"))
        if method == c.METHOD_CONNECT:
            return self._on_connected(resp.id, resp.result)
        try:
            result = check_result(method, resp.result)
        except RelayError as exc:
            return RequestFailed(resp.id, method, exc)
        return ResponseReceived(resp.id, method, result)

    def _on_connected(self, req_id: str, result: Any) -> Item:
        result = result if isinstance(result, dict) else {"raw": result}
        protocol = result.get("protocol")
        restored = bool(result.get("session_restored")) or (bool(protocol) and protocol == self.protocol)
        if isinstance(protocol, str) and protocol:
            self.protocol = protocol
        identity = result.get("identity")
        if isinstance(identity, str):
            self.identity = identity
        self.connected = True
        self._connect_id = ""
        return Connected(req_id, self.protocol, restored, result)

    def _on_error(self, resp: codec.ErrorResponse) -> Item:
        if resp.id is None:
            return self._violation(ProtocolError("unknown_response", f"error without an id: {resp.message}"))
        method = self.pending.pop(resp.id, None)
        if method is None:
            return self._violation(ProtocolError("unknown_response", "error for an unknown request id"))
        error = RelayError.from_server(resp.code, resp.message, resp.data)
        if method == c.METHOD_CONNECT:
            self._connect_id = ""
            return ConnectFailed(resp.id, error)
        return RequestFailed(resp.id, method, error)
