"""A RELAY session: what a ``protocol`` string names on the server side.

A session outlives its WebSocket: it owns contexts, calls and the ordered log of
events not yet acked. While detached (socket dropped) new events keep queuing;
a resume re-attaches it and every unacked event is sent again, in order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Protocol

import orjson

from ..protocol.constants import METHOD_EVENT

__all__ = ["Faults", "Session", "SessionPeer"]


class SessionPeer(Protocol):
    """The attached socket, as a session sees it (implemented by ``server.Connection``)."""

    def push(self, frame: bytes) -> None:
        """Queue one outbound frame, in order."""

    def abort(self) -> None:
        """Drop the socket abruptly."""


class Faults:
    """Fault knobs of one session (see CONTROL_API.md, ``POST /sessions/{protocol}/faults``)."""

    __slots__ = ("drop_responses", "duplicate_events", "reorder_events", "response_delay")

    def __init__(self) -> None:
        self.response_delay = 0.0  # seconds added before each response
        self.drop_responses = 0  # the next N responses are never sent
        self.duplicate_events = False  # every event is sent twice (same id)
        self.reorder_events = False  # events are swapped pairwise

    def to_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {name: getattr(self, name) for name in self.__slots__}


class Session:
    """Server-side state of one protocol."""

    def __init__(self, project: str, contexts: set[str], id_prefix: str) -> None:
        self.protocol = f"signalwire_{uuid.uuid4().hex}"
        self.identity = str(uuid.uuid4())
        self.project = project
        self.contexts = contexts
        self.peer: SessionPeer | None = None
        self.detached_at: float | None = time.monotonic()
        self.closed = False  # ended by a restart or by the grace period: never resumable
        #: Events sent or queued but not acked, by id, in emission order.
        self.unacked: dict[str, bytes] = {}
        self.dropped_events = 0
        self.acks = 0
        self.answer_pings = True  # False: client pings get no answer (half-open)
        self.silent = False  # True: nothing at all is sent (half-open)
        self.faults = Faults()
        self.call_ids: set[str] = set()
        self.pending_requests: dict[str, asyncio.Future[Any]] = {}
        self.max_unacked = 100_000
        self._prefix = id_prefix
        self._seq = 0
        self._held: bytes | None = None  # reorder fault: the event waiting for its successor
        #: While a request is handled, its events wait here so its response goes out first.
        self._batch: list[bytes] | None = None

    @property
    def attached(self) -> bool:
        """True while a socket is attached."""
        return self.peer is not None

    def next_id(self) -> str:
        """A fresh server request id (all start with ``sw-`` so late acks are recognised)."""
        self._seq += 1
        return f"{self._prefix}{self._seq}"

    def emit(self, event_type: str, params: dict[str, Any]) -> str:
        """Send (or queue) one ``signalwire.event``; returns its id."""
        event_id = self.next_id()
        frame = orjson.dumps(
            {
                "jsonrpc": "2.0",
                "id": event_id,
                "method": METHOD_EVENT,
                "params": {"event_type": event_type, "timestamp": time.time(), "params": params},
            }
        )
        unacked = self.unacked
        unacked[event_id] = frame
        if len(unacked) > self.max_unacked:
            # Bounded queue: drop the oldest, count it.
            del unacked[next(iter(unacked))]
            self.dropped_events += 1
        peer = self.peer
        if peer is not None:
            self._send_event(peer, frame)
        return event_id

    def _send_event(self, peer: SessionPeer, frame: bytes) -> None:
        if self._batch is not None:
            self._batch.append(frame)
            return
        faults = self.faults
        if faults.reorder_events:
            if self._held is None:
                self._held = frame
                return
            peer.push(frame)
            frame, self._held = self._held, None
        peer.push(frame)
        if faults.duplicate_events:
            peer.push(frame)

    def begin_batch(self) -> None:
        """Hold events emitted from now on until :meth:`end_batch` (response-first ordering)."""
        self._batch = []

    def end_batch(self) -> None:
        """Send the events held since :meth:`begin_batch`, in order."""
        batch, self._batch = self._batch, None
        peer = self.peer
        if batch and peer is not None:
            for frame in batch:
                self._send_event(peer, frame)

    def ack(self, event_id: str) -> bool:
        """Record the ack of a server request; False if the id was not outstanding."""
        if self.unacked.pop(event_id, None) is not None:
            self.acks += 1
            return True
        future = self.pending_requests.pop(event_id, None)
        if future is not None:
            if not future.done():
                future.set_result(None)
            return True
        return False

    def attach(self, peer: SessionPeer) -> None:
        """Attach a socket and redeliver, in order, every event not yet acked."""
        self.peer = peer
        self.detached_at = None
        self._held = None
        self._batch = None
        for frame in list(self.unacked.values()):
            peer.push(frame)

    def detach(self, peer: SessionPeer) -> None:
        """Forget ``peer`` if it is the attached socket; the session waits for a resume."""
        if self.peer is peer:
            self.peer = None
            self.detached_at = time.monotonic()
            if self._held is not None:
                self._held = None  # still in ``unacked``: redelivered on resume
            for future in self.pending_requests.values():
                if not future.done():
                    future.cancel()
            self.pending_requests.clear()

    def request(self, method: str, params: dict[str, Any]) -> asyncio.Future[Any] | None:
        """Send a server request that expects an empty ack (ping, disconnect).

        Returns a future resolved by the ack, or None when detached.
        """
        peer = self.peer
        if peer is None:
            return None
        request_id = self.next_id()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending_requests[request_id] = future
        peer.push(orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
        return future

    def describe(self) -> dict[str, Any]:
        """JSON view for the control API."""
        return {
            "protocol": self.protocol,
            "project": self.project,
            "identity": self.identity,
            "contexts": sorted(self.contexts),
            "attached": self.attached,
            "closed": self.closed,
            "calls": len(self.call_ids),
            "unacked": len(self.unacked),
            "dropped_events": self.dropped_events,
            "acks": self.acks,
            "answer_pings": self.answer_pings,
            "silent": self.silent,
            "faults": self.faults.to_dict(),
        }
