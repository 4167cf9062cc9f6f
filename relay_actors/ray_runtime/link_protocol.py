"""The actor link protocol, sans-IO: bytes in, frames and decisions out, no sockets.

The per-call data path of the Ray runtime runs over one stream per (connection
actor, CallActor) pair. This module is everything that stream means, with no
asyncio and no Ray in it (the shell is :mod:`relay_actors.ray_runtime.actor_link`):

* **Framing**: ``!IB`` (body length, frame type) then the body. Before both
  sides have proved themselves, a frame may be at most :data:`PRE_AUTH_MAX`
  bytes and only of the handshake type expected next; a bigger length header is
  refused before a byte of its body is read or allocated.
* **Handshake** (fixed-format ``struct`` frames, nothing else is decoded
  before it completes): the client sends ``HELLO`` (its id, incarnation and a
  nonce); the server answers ``CHALLENGE`` (its id, incarnation, a nonce and an
  HMAC over both nonces, both identities and its role); the client checks that
  proof *before* it proves anything itself, then sends ``PROOF`` (the same HMAC
  with the client's role) and where it stands in the stream; the server checks
  it and answers ``WELCOME`` with where it stands. A fake server therefore
  learns nothing it can use (the client proves nothing to it), and a proof seen
  on the wire is bound to both nonces, so it replays nowhere.
* **Delivery** (after the handshake, orjson payloads — nothing executable ever
  crosses): ``DATA`` frames carry a sequence number, the sender's cumulative
  acknowledgement of the other direction, and a JSON array of items. The
  receiver applies a frame once (duplicates after a resend are dropped by
  sequence number) and acknowledges cumulatively, piggybacked on its own
  ``DATA``; a bare ``ACK`` goes only when no ``DATA`` carried it within
  :attr:`LinkLimits.ack_delay` (or :attr:`LinkLimits.ack_every` frames wait for
  it, or a duplicate says the peer resends): as TCP's delayed ACK, this spares
  the peer a wake-up per frame for nothing but an acknowledgement, and no item
  waits for it (acknowledgements release memory and RELAY acks, not calls).
  The sender keeps every frame
  until it is acknowledged (a bounded window) and resends the rest after a
  reconnect, from what the peer's handshake says it has.
* **Liveness**: both sides send a ``HEARTBEAT`` (with the sender's event-loop
  lag) when they have sent nothing for a while; :meth:`LinkSession.health`
  turns silence, a full window and old unacknowledged frames into a status the
  shell acts on: ``ok``, ``slow`` (take no new calls), ``lost`` (apply the
  lost-actor policy).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..protocol.codec import compact_dumps

__all__ = [
    "DEFAULT_LIMITS",
    "HEADER",
    "PRE_AUTH_MAX",
    "Authenticated",
    "Delivered",
    "FrameDecoder",
    "Health",
    "HealthStatus",
    "LinkConnection",
    "LinkError",
    "LinkLimits",
    "LinkOverflow",
    "LinkSession",
    "PeerRestarted",
    "Role",
    "new_incarnation",
]

HEADER = struct.Struct("!IB")
#: Largest frame before both sides are authenticated (the handshake frames are < 100 bytes).
PRE_AUTH_MAX = 1024
MAGIC = b"RLK1"

# Frame types.
HELLO, CHALLENGE, PROOF, WELCOME = 1, 2, 3, 4
DATA, ACK, HEARTBEAT = 16, 17, 18

_HELLO = struct.Struct("!4sBI16s16s")  # magic, role, id, incarnation, nonce
_CHALLENGE = struct.Struct("!4sBI16s16s32s")  # magic, role, id, incarnation, nonce, proof
_PROOF = struct.Struct("!32sQ")  # proof, highest sequence received from the server's incarnation
_WELCOME = struct.Struct("!Q")  # highest sequence received from the client's incarnation
_DATA = struct.Struct("!QQ")  # seq, cumulative ack
_ACK = struct.Struct("!Q")
_HEARTBEAT = struct.Struct("!QI")  # cumulative ack, event-loop lag (ms)


class Role(enum.IntEnum):
    """Which end of a link: the connection actor dials (client), the CallActor listens."""

    CLIENT = 1
    SERVER = 2


class LinkError(ConnectionError):
    """The peer broke the protocol or failed to authenticate: close the socket."""


class LinkOverflow(LinkError):
    """A link's bounded queue is full (its peer has stopped taking frames)."""


def new_incarnation() -> bytes:
    return os.urandom(16)


def _proof(key: bytes, role: Role, nonce_c: bytes, nonce_s: bytes, ids: bytes) -> bytes:
    label = b"relay-actors link server" if role is Role.SERVER else b"relay-actors link client"
    return hmac.new(key, label + nonce_c + nonce_s + ids, hashlib.sha256).digest()


def _frame(kind: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), kind) + body


# --- framing ---------------------------------------------------------------------------


class FrameDecoder:
    """Splits a byte stream into ``(type, body)`` frames, refusing oversized ones from
    their header alone."""

    __slots__ = ("_buf", "expect", "max_frame")

    def __init__(self, max_frame: int = PRE_AUTH_MAX) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame
        #: ``(type, size)`` the next frame must have (during the handshake), judged from
        #: its header alone: a peer that is not ours is refused without waiting for more.
        self.expect: tuple[int, int] | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        frames: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        size_header = HEADER.size
        while end - pos >= size_header:
            size, kind = HEADER.unpack_from(buf, pos)
            if size > self.max_frame:
                raise LinkError(f"frame of {size} bytes is over the limit of {self.max_frame}")
            if self.expect is not None and (kind, size) != self.expect:
                raise LinkError(f"expected handshake frame {self.expect}, got type {kind} of {size} bytes")
            if end - pos - size_header < size:
                break
            start = pos + size_header
            frames.append((kind, bytes(buf[start : start + size])))
            pos = start + size
            if self.expect is not None:
                break  # the handshake frame decides the limits of what follows it
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf)


# --- the reliable session (outlives sockets) ---------------------------------------------


@dataclass(frozen=True)
class LinkLimits:
    """Bounds and deadlines of one link (seconds, frames, items)."""

    #: Unacknowledged DATA frames at most; past it nothing new is framed (items wait).
    window: int = 256
    #: Items waiting to be framed at most; past it :class:`LinkOverflow` (the shell
    #: applies the lost-actor policy: the peer has stopped reading for good).
    max_pending: int = 50_000
    #: Items in one DATA frame at most.
    max_items: int = 2000
    #: Largest DATA frame accepted after authentication.
    max_frame: int = 64 * 1024 * 1024
    #: Send a heartbeat when nothing was sent for this long.
    heartbeat: float = 0.5
    #: Seconds a due acknowledgement waits for a DATA frame to carry it before it
    #: goes as a bare ACK (well under ``slow_unacked_after``: a healthy peer never
    #: looks slow for it). Request/answer traffic usually carries it sooner.
    ack_delay: float = 0.02
    #: DATA frames received unacknowledged that make a bare ACK go at once (keeps
    #: the peer's window open at a burst).
    ack_every: int = 16
    #: ``slow`` when the peer is silent (or unreachable) this long.
    slow_after: float = 2.0
    #: ``slow`` when the oldest frame is unacknowledged this long: a peer acknowledges
    #: within ``ack_delay`` of its loop reading a frame, so this long means its loop
    #: stalls (it then takes no new calls within ~200 ms, not after the 2 s of silence).
    slow_unacked_after: float = 0.15
    #: Close the socket (and reconnect) when the peer is silent this long.
    dead_after: float = 6.0
    #: ``lost`` when the peer stayed unreachable or unresponsive this long.
    lost_after: float = 60.0
    #: ``slow`` when the peer reports its event loop lagging this much (seconds).
    max_lag: float = 1.0


DEFAULT_LIMITS = LinkLimits()


class HealthStatus(str, enum.Enum):
    OK = "ok"
    SLOW = "slow"
    LOST = "lost"


@dataclass(frozen=True)
class Health:
    status: HealthStatus
    reason: str = ""
    #: False while the link is down (the peer restarting, or closed for silence).
    reachable: bool = True


@dataclass(slots=True)
class _Unacked:
    """A DATA frame sent and not yet acknowledged. Its items are not kept beside it: the
    frame holds them, and only a lost peer's items are wanted again (:meth:`items`), so a
    burst in flight costs its bytes, not a second copy as Python objects."""

    seq: int
    frame: bytes
    metas: list[Any]
    sent_at: float

    def items(self) -> list[Any]:
        items: list[Any] = orjson.loads(memoryview(self.frame)[HEADER.size + _DATA.size :])
        return items


class LinkSession:
    """Both directions of one link between two given incarnations, across reconnects.

    Sending: :meth:`queue` items (each with an optional ``meta`` returned when the
    peer has acknowledged it — the connection actor's RELAY ack ids); :meth:`pack`
    frames what is queued (one DATA frame per call, inside the window).
    Receiving: :meth:`on_frame` returns the items of a new DATA frame (``[]`` for a
    duplicate) and the metas that the piggybacked acknowledgement released.
    """

    def __init__(self, peer_id: int, peer_incarnation: bytes, limits: LinkLimits = DEFAULT_LIMITS) -> None:
        self.peer_id = peer_id
        self.peer_incarnation = peer_incarnation
        self.limits = limits
        self._next_seq = 1
        self._unacked: deque[_Unacked] = deque()
        #: Items queued and not framed yet, oldest first: whole frames' worth already
        #: encoded (``(JSON array, items)``, see :meth:`queue`), then the items of the next.
        self._chunks: deque[tuple[bytes, int]] = deque()
        self._pending: list[Any] = []
        self._pending_metas: list[Any] = []
        self._queued = 0
        self.recv_seq = 0
        #: An acknowledgement is owed (see :meth:`pack` and :attr:`ack_deadline`).
        self.ack_due = False
        #: When the first frame it acknowledges arrived; DATA frames it covers; whether
        #: it must go at once (a duplicate: the peer is resending).
        self._ack_since = 0.0
        self._ack_frames = 0
        self._ack_urgent = False
        self.peer_lag = 0.0
        self.last_sent = 0.0
        self.last_heard = 0.0
        self.unreachable_since: float | None = None
        # Counters (metrics).
        self.frames_out = 0
        self.frames_in = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.items_out = 0
        self.resent = 0
        self.duplicates = 0
        self.acks_out = 0
        self.ack_latency_sum = 0.0
        self.ack_latency_count = 0

    # -- sending --

    @property
    def pending(self) -> int:
        return self._queued

    @property
    def in_window(self) -> int:
        return len(self._unacked)

    def queue(self, item: Any, meta: Any = None) -> None:
        """Queue ``item`` (JSON values) for the peer. Items are encoded a frame's worth at a
        time (one ``orjson`` call for up to ``max_items``): when the window is full (a burst,
        a slow peer) a whole frame's worth is encoded at once and the queue keeps its bytes
        (an offer: ~0.4 KiB), not the decoded objects (~1.9 KiB), which would set the
        process's memory high-water mark for good."""
        limits = self.limits
        if self._queued >= limits.max_pending:
            why = f"{self._queued} items wait for link peer {self.peer_id}: it stopped taking frames"
            raise LinkOverflow(why)
        self._pending.append(item)
        self._pending_metas.append(meta)
        self._queued += 1
        n = limits.max_items
        while len(self._pending) >= n and len(self._unacked) >= limits.window:
            self._chunks.append((compact_dumps(self._pending[:n]), n))
            self._pending = self._pending[n:]

    @property
    def ack_deadline(self) -> float | None:
        """When a due acknowledgement must go as a bare ACK if no DATA frame carried it
        (None: none is due); ``-inf``: at once."""
        if not self.ack_due:
            return None
        if self._ack_now():
            return float("-inf")
        return self._ack_since + self.limits.ack_delay

    def _ack_now(self) -> bool:
        return self._ack_urgent or self._ack_frames >= self.limits.ack_every

    def pack(self, now: float, ack: bool = True) -> list[bytes]:
        """Frames to write now: new DATA frames for what is queued (while the window
        has room), else a bare ACK if one is due — with ``ack=False`` only once it is
        past :attr:`ack_deadline` (DATA going the other way soon carries it for free).
        Each DATA frame acknowledges too."""
        out: list[bytes] = []
        limits = self.limits
        while self._queued and len(self._unacked) < limits.window:
            if self._chunks:
                body, n = self._chunks.popleft()
            else:
                n = limits.max_items
                items, self._pending = self._pending[:n], self._pending[n:]
                body, n = orjson.dumps(items), len(items)
            metas, self._pending_metas = self._pending_metas[:n], self._pending_metas[n:]
            self._queued -= n
            seq = self._next_seq
            self._next_seq += 1
            frame = _frame(DATA, _DATA.pack(seq, self.recv_seq) + body)
            self._unacked.append(_Unacked(seq, frame, metas, now))
            out.append(frame)
            self.items_out += n
        if out:
            self._acked_all()
        elif self.ack_due and (ack or now >= self._ack_since + self.limits.ack_delay or self._ack_now()):
            self._acked_all()
            self.acks_out += 1
            out.append(_frame(ACK, _ACK.pack(self.recv_seq)))
        if out:
            self._sent(out, now)
        return out

    def _acked_all(self) -> None:
        self.ack_due = False
        self._ack_frames = 0
        self._ack_urgent = False

    def heartbeat(self, now: float, lag: float) -> bytes:
        self._acked_all()
        frame = _frame(HEARTBEAT, _HEARTBEAT.pack(self.recv_seq, min(int(lag * 1000), 0xFFFFFFFF)))
        self._sent([frame], now)
        return frame

    def _sent(self, frames: list[bytes], now: float) -> None:
        self.last_sent = now
        self.frames_out += len(frames)
        self.bytes_out += sum(len(f) for f in frames)

    def resend(self, now: float) -> list[bytes]:
        """After a reconnect (and :meth:`take_acked` of what the peer says it has):
        every frame still unacknowledged, to send again in order."""
        frames = [entry.frame for entry in self._unacked]
        self.resent += len(frames)
        if frames:
            self._sent(frames, now)
        self.unreachable_since = None
        self.last_heard = now
        return frames

    def _acked(self, ack: int, now: float) -> list[Any]:
        metas: list[Any] = []
        unacked = self._unacked
        while unacked and unacked[0].seq <= ack:
            entry = unacked.popleft()
            metas.extend(m for m in entry.metas if m is not None)
            self.ack_latency_sum += now - entry.sent_at
            self.ack_latency_count += 1
        return metas

    def take_acked(self, ack: int, now: float) -> list[Any]:
        """Metas released by a cumulative acknowledgement ``ack`` (e.g. from a handshake)."""
        return self._acked(ack, now)

    def unacknowledged(self) -> list[tuple[Any, Any]]:
        """Every ``(item, meta)`` the peer has not acknowledged, in order: framed, then queued."""
        pairs = [pair for entry in self._unacked for pair in zip(entry.items(), entry.metas, strict=True)]
        return pairs + list(zip(self._queued_items(), self._pending_metas, strict=True))

    def _queued_items(self) -> list[Any]:
        items = [item for body, _n in self._chunks for item in orjson.loads(body)]
        return items + self._pending

    @property
    def unacknowledged_count(self) -> int:
        """How many items the peer has not acknowledged (framed or queued)."""
        return sum(len(entry.metas) for entry in self._unacked) + self._queued

    def take_pending(self) -> list[tuple[Any, Any]]:
        """Remove and return the ``(item, meta)`` pairs never framed: they never left this
        process, so they may go to a new incarnation of the peer as they are."""
        pairs = list(zip(self._queued_items(), self._pending_metas, strict=True))
        self._chunks.clear()
        self._pending, self._pending_metas, self._queued = [], [], 0
        return pairs

    # -- receiving --

    def on_frame(self, kind: int, body: bytes, now: float) -> tuple[list[Any], list[Any]]:
        """Apply one post-handshake frame: ``(items delivered, metas acknowledged)``."""
        self.last_heard = now
        self.frames_in += 1
        self.bytes_in += len(body) + HEADER.size
        if kind == DATA:
            if len(body) < _DATA.size:
                raise LinkError("short DATA frame")
            seq, ack = _DATA.unpack_from(body)
            metas = self._acked(ack, now)
            if seq <= self.recv_seq:
                self.duplicates += 1
                self._owe_ack(now)
                self._ack_urgent = True  # tell the resender where we are
                return [], metas
            if seq != self.recv_seq + 1:
                raise LinkError(f"DATA frame {seq} after {self.recv_seq}: a gap in the stream")
            try:
                items = orjson.loads(memoryview(body)[_DATA.size :])
            except orjson.JSONDecodeError as exc:
                raise LinkError(f"undecodable DATA frame: {exc}") from None
            if not isinstance(items, list):
                raise LinkError("DATA frame payload is not a list")
            self.recv_seq = seq
            self._owe_ack(now)
            self._ack_frames += 1
            return items, metas
        if kind == ACK:
            if len(body) != _ACK.size:
                raise LinkError("bad ACK frame")
            return [], self._acked(_ACK.unpack(body)[0], now)
        if kind == HEARTBEAT:
            if len(body) != _HEARTBEAT.size:
                raise LinkError("bad HEARTBEAT frame")
            ack, lag_ms = _HEARTBEAT.unpack(body)
            self.peer_lag = lag_ms / 1000.0
            return [], self._acked(ack, now)
        raise LinkError(f"unexpected frame type {kind} after the handshake")

    def _owe_ack(self, now: float) -> None:
        if not self.ack_due:
            self.ack_due = True
            self._ack_since = now

    # -- liveness --

    def health(self, now: float, connected: bool) -> Health:
        limits = self.limits
        oldest = now - self._unacked[0].sent_at if self._unacked else 0.0
        silent = now - self.last_heard if self.last_heard else 0.0
        if not connected:
            if self.unreachable_since is None:
                self.unreachable_since = now
            down = now - self.unreachable_since
            if down >= limits.lost_after:
                return Health(HealthStatus.LOST, f"unreachable for {down:.0f} s", reachable=False)
            if down >= limits.slow_after:  # (a blip reconnects well before: frames just wait)
                return Health(HealthStatus.SLOW, f"unreachable for {down:.1f} s", reachable=False)
            if oldest >= min(limits.slow_unacked_after, limits.slow_after):
                # Closed while it lagged (a peer silent past dead_after, its loop blocked): it
                # stays slow, or calls would go to a loop that is not running.
                why = f"unreachable, oldest frame unacknowledged for {oldest:.2f} s"
                return Health(HealthStatus.SLOW, why, reachable=False)
            if silent >= limits.slow_after:
                # Closed because it was silent (dead_after): a stalled loop owing nothing
                # is no blip either.
                return Health(HealthStatus.SLOW, f"unreachable, silent for {silent:.1f} s", reachable=False)
            return Health(HealthStatus.OK, reachable=False)
        self.unreachable_since = None
        if oldest >= limits.lost_after:
            return Health(HealthStatus.LOST, f"no acknowledgement for {oldest:.0f} s")
        if len(self._unacked) >= limits.window:
            return Health(HealthStatus.SLOW, "window full")
        if oldest >= min(limits.slow_unacked_after, limits.slow_after):
            return Health(HealthStatus.SLOW, f"oldest frame unacknowledged for {oldest:.2f} s")
        if silent >= limits.slow_after:
            return Health(HealthStatus.SLOW, f"silent for {silent:.1f} s")
        if self.peer_lag >= limits.max_lag:
            return Health(HealthStatus.SLOW, f"event loop lagging {self.peer_lag:.1f} s")
        return Health(HealthStatus.OK)

    def heartbeat_due(self, now: float) -> bool:
        return now - self.last_sent >= self.limits.heartbeat

    def silent_too_long(self, now: float) -> bool:
        return bool(self.last_heard) and now - self.last_heard >= self.limits.dead_after

    def stats(self) -> dict[str, Any]:
        return {
            "frames_out": self.frames_out,
            "frames_in": self.frames_in,
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "items_out": self.items_out,
            "resent": self.resent,
            "duplicates": self.duplicates,
            "acks_out": self.acks_out,
            "window": len(self._unacked),
            "pending": self._queued,
            "peer_lag_ms": int(self.peer_lag * 1000),
            "ack_latency_sum": self.ack_latency_sum,
            "ack_latency_count": self.ack_latency_count,
        }


# --- one socket: handshake, then frames for a session ----------------------------------------


@dataclass(frozen=True)
class Authenticated:
    """Both sides proved the secret; ``session`` is the session this socket now carries
    and ``released`` the metas the peer's handshake acknowledged."""

    session: LinkSession
    released: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class PeerRestarted:
    """The peer is a new incarnation: the previous session (if any) is over."""

    previous: LinkSession


@dataclass(frozen=True)
class Delivered:
    items: list[Any]
    released: list[Any]


Event = Authenticated | PeerRestarted | Delivered

#: ``sessions(peer_id, peer_incarnation)`` → (the session to use, the one it replaces or None).
SessionLookup = Callable[[int, bytes], "tuple[LinkSession, LinkSession | None]"]


class LinkConnection:
    """One socket's protocol state: feed it bytes, write what :meth:`data_to_send` returns.

    Args:
        role: ``Role.CLIENT`` (dials) or ``Role.SERVER`` (listens).
        key: the app's shared secret (raw bytes).
        my_id, my_incarnation: who this end is (a shard number or CallActor index,
            and a random id per process).
        sessions: finds or creates the :class:`LinkSession` for an authenticated peer.
        expect_peer: (client) the id the server must have.
    """

    def __init__(
        self,
        role: Role,
        key: bytes,
        my_id: int,
        my_incarnation: bytes,
        sessions: SessionLookup,
        *,
        expect_peer: int | None = None,
        max_frame: int = DEFAULT_LIMITS.max_frame,
        nonce: bytes | None = None,
    ) -> None:
        self.role = role
        self._key = key
        self._my_id = my_id
        self._my_inc = my_incarnation
        self._sessions = sessions
        self._expect_peer = expect_peer
        self._max_frame = max_frame
        self._nonce = nonce or os.urandom(16)
        self._decoder = FrameDecoder(PRE_AUTH_MAX)
        self._decoder.expect = (CHALLENGE, _CHALLENGE.size) if role is Role.CLIENT else (HELLO, _HELLO.size)
        self._out: list[bytes] = []
        self._peer: tuple[int, bytes, bytes] | None = None  # id, incarnation, nonce
        self.session: LinkSession | None = None
        self._expect = CHALLENGE if role is Role.CLIENT else HELLO
        self._pending_session: tuple[LinkSession, LinkSession | None] | None = None

    @property
    def authenticated(self) -> bool:
        return self.session is not None

    def initiate(self) -> None:
        """Client: queue the HELLO."""
        assert self.role is Role.CLIENT
        hello = _HELLO.pack(MAGIC, Role.CLIENT, self._my_id, self._my_inc, self._nonce)
        self._out.append(_frame(HELLO, hello))

    def data_to_send(self) -> bytes:
        out, self._out = self._out, []
        return b"".join(out)

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Events for ``data``; raises :class:`LinkError` when the socket must close."""
        events: list[Event] = []
        frames = self._decoder.feed(data)
        while self.session is None and frames:
            events.extend(self._handshake(*frames[0], now))
            frames = self._decoder.feed(b"")
        session = self.session
        if session is not None:
            for kind, body in frames:
                items, released = session.on_frame(kind, body, now)
                if items or released:
                    events.append(Delivered(items, released))
        return events

    def _ids(self, client: tuple[int, bytes], server: tuple[int, bytes]) -> bytes:
        return struct.pack("!I16sI16s", client[0], client[1], server[0], server[1])

    def _handshake(self, kind: int, body: bytes, now: float) -> list[Event]:
        if kind != self._expect:  # (the decoder checks it first; this is the guard)
            raise LinkError(f"expected handshake frame {self._expect}, got {kind}")
        key = self._key
        if kind == HELLO:  # server
            magic, role, peer_id, peer_inc, nonce_c = self._unpack(_HELLO, body)
            if magic != MAGIC or role != Role.CLIENT:
                raise LinkError("not a relay-actors link client")
            self._peer = (peer_id, peer_inc, nonce_c)
            ids = self._ids((peer_id, peer_inc), (self._my_id, self._my_inc))
            proof = _proof(key, Role.SERVER, nonce_c, self._nonce, ids)
            challenge = _CHALLENGE.pack(MAGIC, Role.SERVER, self._my_id, self._my_inc, self._nonce, proof)
            self._out.append(_frame(CHALLENGE, challenge))
            self._expect = PROOF
            self._decoder.expect = (PROOF, _PROOF.size)
            return []
        if kind == CHALLENGE:  # client
            magic, role, peer_id, peer_inc, nonce_s, proof = self._unpack(_CHALLENGE, body)
            if magic != MAGIC or role != Role.SERVER:
                raise LinkError("not a relay-actors link server")
            ids = self._ids((self._my_id, self._my_inc), (peer_id, peer_inc))
            # The server proves itself first: a fake one gets nothing from us.
            if not hmac.compare_digest(proof, _proof(key, Role.SERVER, self._nonce, nonce_s, ids)):
                raise LinkError("the server did not prove it belongs to the app")
            if self._expect_peer is not None and peer_id != self._expect_peer:
                raise LinkError(f"linked to CallActor {peer_id}, expected {self._expect_peer}")
            session, previous = self._sessions(peer_id, peer_inc)
            self._peer = (peer_id, peer_inc, nonce_s)
            mine = _proof(key, Role.CLIENT, self._nonce, nonce_s, ids)
            self._out.append(_frame(PROOF, _PROOF.pack(mine, session.recv_seq)))
            self._pending_session = (session, previous)
            self._expect = WELCOME
            self._decoder.expect = (WELCOME, _WELCOME.size)
            return []
        if kind == PROOF:  # server
            proof, peer_recv = self._unpack(_PROOF, body)
            assert self._peer is not None
            peer_id, peer_inc, nonce_c = self._peer
            ids = self._ids((peer_id, peer_inc), (self._my_id, self._my_inc))
            if not hmac.compare_digest(proof, _proof(key, Role.CLIENT, nonce_c, self._nonce, ids)):
                raise LinkError("the peer did not prove it belongs to the app")
            session, previous = self._sessions(peer_id, peer_inc)
            self._out.append(_frame(WELCOME, _WELCOME.pack(session.recv_seq)))
            return self._bind(session, previous, peer_recv, now)
        if kind == WELCOME:  # client
            (peer_recv,) = self._unpack(_WELCOME, body)
            assert self._pending_session is not None
            session, previous = self._pending_session
            return self._bind(session, previous, peer_recv, now)
        raise LinkError(f"unexpected frame type {kind}")  # pragma: no cover - _expect guards

    @staticmethod
    def _unpack(fmt: struct.Struct, body: bytes) -> tuple[Any, ...]:
        if len(body) != fmt.size:
            raise LinkError(f"handshake frame of {len(body)} bytes, expected {fmt.size}")
        return fmt.unpack(body)

    def _bind(
        self, session: LinkSession, previous: LinkSession | None, peer_recv: int, now: float
    ) -> list[Event]:
        self.session = self.session or session
        self._decoder.max_frame = self._max_frame
        self._decoder.expect = None
        events: list[Event] = []
        if previous is not None:
            events.append(PeerRestarted(previous))
        released = session.take_acked(peer_recv, now)
        self._out.extend(session.resend(now))
        events.append(Authenticated(session, released))
        return events
