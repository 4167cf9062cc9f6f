"""The actor link protocol, sans-IO: handshake, hostile input, delivery, window, liveness."""

from __future__ import annotations

import dataclasses
import gc
import pickle
import struct
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_actors.ray_runtime import link_protocol as lp
from relay_actors.ray_runtime.link_protocol import (
    Authenticated,
    Delivered,
    HealthStatus,
    LinkConnection,
    LinkError,
    LinkLimits,
    LinkOverflow,
    LinkSession,
    PeerRestarted,
    Role,
)

KEY = b"k" * 32


class Directory:
    """A process's sessions by peer (what the shell keeps)."""

    def __init__(self, limits: LinkLimits = lp.DEFAULT_LIMITS) -> None:
        self.sessions: dict[int, LinkSession] = {}
        self.limits = limits

    def __call__(self, peer_id: int, inc: bytes) -> tuple[LinkSession, LinkSession | None]:
        session = self.sessions.get(peer_id)
        if session is None or session.peer_incarnation in (b"", inc):
            session = session or LinkSession(peer_id, inc, self.limits)
            session.peer_incarnation = inc
            self.sessions[peer_id] = session
            return session, None
        fresh = self.sessions[peer_id] = LinkSession(peer_id, inc, self.limits)
        return fresh, session


def pair(
    client_dir: Directory,
    server_dir: Directory,
    *,
    client_inc: bytes = b"c" * 16,
    server_inc: bytes = b"s" * 16,
    client_key: bytes = KEY,
    server_key: bytes = KEY,
) -> tuple[LinkConnection, LinkConnection, list[Any], list[Any]]:
    """Run a handshake between two connections; returns them and the events each saw."""
    client = LinkConnection(Role.CLIENT, client_key, 3, client_inc, client_dir)
    server = LinkConnection(Role.SERVER, server_key, 7, server_inc, server_dir)
    client.initiate()
    c_events: list[Any] = []
    s_events: list[Any] = []
    for _ in range(4):
        s_events += server.receive_data(client.data_to_send(), 0.0)
        c_events += client.receive_data(server.data_to_send(), 0.0)
    return client, server, c_events, s_events


def test_handshake_authenticates_both_sides_and_binds_sessions() -> None:
    cd, sd = Directory(), Directory()
    client, server, c_events, s_events = pair(cd, sd)
    assert client.authenticated and server.authenticated
    assert isinstance(c_events[-1], Authenticated) and c_events[-1].session.peer_id == 7
    assert isinstance(s_events[-1], Authenticated) and s_events[-1].session.peer_id == 3
    assert cd.sessions[7].peer_incarnation == b"s" * 16
    assert sd.sessions[3].peer_incarnation == b"c" * 16


def test_wrong_secret_client_is_refused_by_the_server() -> None:
    # The client first refuses the server (whose proof is over the other key): either
    # way no session is bound on either side.
    client = LinkConnection(Role.CLIENT, b"x" * 32, 3, b"c" * 16, Directory())
    server = LinkConnection(Role.SERVER, KEY, 7, b"s" * 16, Directory())
    client.initiate()
    server.receive_data(client.data_to_send(), 0.0)
    with pytest.raises(LinkError, match="did not prove"):
        client.receive_data(server.data_to_send(), 0.0)
    assert not client.authenticated and not server.authenticated


def test_a_client_proof_that_was_not_computed_from_this_challenge_is_refused() -> None:
    server = LinkConnection(Role.SERVER, KEY, 7, b"s" * 16, Directory())
    hello = struct.pack("!4sBI16s16s", lp.MAGIC, Role.CLIENT, 3, b"c" * 16, b"n" * 16)
    server.receive_data(struct.pack("!IB", len(hello), lp.HELLO) + hello, 0.0)
    assert server.data_to_send()  # the challenge
    proof = struct.pack("!32sQ", b"\0" * 32, 0)
    with pytest.raises(LinkError, match="did not prove"):
        server.receive_data(struct.pack("!IB", len(proof), lp.PROOF) + proof, 0.0)
    assert not server.authenticated


def test_a_fake_server_gets_no_proof_and_a_seen_proof_does_not_replay() -> None:
    # A fake server (no secret) answers with a made-up proof: the client proves nothing.
    client = LinkConnection(Role.CLIENT, KEY, 3, b"c" * 16, Directory())
    client.initiate()
    client.data_to_send()
    fake = struct.pack("!4sBI16s16s32s", lp.MAGIC, Role.SERVER, 7, b"s" * 16, b"f" * 16, b"\0" * 32)
    with pytest.raises(LinkError):
        client.receive_data(struct.pack("!IB", len(fake), lp.CHALLENGE) + fake, 0.0)
    assert client.data_to_send() == b""
    # A genuine transcript's PROOF, replayed to a real server in a new connection, fails:
    # the server's nonce is new each time.
    cd, sd = Directory(), Directory()
    c1 = LinkConnection(Role.CLIENT, KEY, 3, b"c" * 16, cd)
    s1 = LinkConnection(Role.SERVER, KEY, 7, b"s" * 16, sd)
    c1.initiate()
    hello = c1.data_to_send()
    s1.receive_data(hello, 0.0)
    c1.receive_data(s1.data_to_send(), 0.0)
    proof = c1.data_to_send()
    s2 = LinkConnection(Role.SERVER, KEY, 7, b"s" * 16, Directory())
    s2.receive_data(hello, 0.0)
    s2.data_to_send()
    with pytest.raises(LinkError, match="did not prove"):
        s2.receive_data(proof, 0.0)
    assert not s2.authenticated


def test_oversized_frame_before_authentication_is_refused_from_its_header() -> None:
    server = LinkConnection(Role.SERVER, KEY, 7, b"s" * 16, Directory())
    with pytest.raises(LinkError, match="over the limit"):
        server.receive_data(struct.pack("!IB", 256 * 1024 * 1024, lp.HELLO), 0.0)
    decoder = lp.FrameDecoder()
    with pytest.raises(LinkError):
        decoder.feed(struct.pack("!IB", lp.PRE_AUTH_MAX + 1, 1))
    assert decoder.buffered <= lp.HEADER.size


def test_a_pickle_before_the_handshake_is_never_decoded() -> None:
    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (exec, ("raise SystemExit('ran')",))

    payload = pickle.dumps(("hello", b"x", ("shard", 0)))
    payload_evil = pickle.dumps(Boom())
    for blob in (payload, payload_evil, struct.pack("!I", len(payload_evil)) + payload_evil):
        server = LinkConnection(Role.SERVER, KEY, 7, b"s" * 16, Directory())
        try:
            events = server.receive_data(blob, 0.0)
        except LinkError:
            events = []
        # Either refused, or still waiting for a frame that is not a handshake frame:
        # nothing was decoded, nothing was answered beyond what no secret is needed for.
        assert events == [] and not server.authenticated


def test_data_before_authentication_is_refused() -> None:
    server = LinkConnection(Role.SERVER, KEY, 7, b"s" * 16, Directory())
    body = struct.pack("!QQ", 1, 0) + b"[]"
    with pytest.raises(LinkError, match="expected handshake"):
        server.receive_data(struct.pack("!IB", len(body), lp.DATA) + body, 0.0)


def roundtrip(sender: LinkSession, receiver: LinkSession, now: float = 0.0) -> tuple[list[Any], list[Any]]:
    """Carry every frame ``sender`` packs to ``receiver``; return items and released metas."""
    items: list[Any] = []
    released: list[Any] = []
    for frame in sender.pack(now):
        (_size, kind) = lp.HEADER.unpack_from(frame)
        got, rel = receiver.on_frame(kind, frame[lp.HEADER.size :], now)
        items += got
        released += rel
    return items, released


def test_items_are_delivered_once_in_order_and_metas_released_on_ack() -> None:
    a, b = LinkSession(1, b"b"), LinkSession(2, b"a")
    for i in range(5):
        a.queue(["event", i], meta=f"ack{i}")
    items, _ = roundtrip(a, b)
    assert items == [["event", i] for i in range(5)]
    assert a.in_window == 1
    # b acknowledges (a bare ACK when it has nothing to say)
    _, released = roundtrip(b, a)
    assert released == [f"ack{i}" for i in range(5)]
    assert a.in_window == 0


def test_ack_is_piggybacked_on_data() -> None:
    a, b = LinkSession(1, b"b"), LinkSession(2, b"a")
    a.queue(["offer"], meta="m")
    roundtrip(a, b)
    b.queue(["req", "r1", "calling.answer", {}])
    frames = b.pack(0.0)
    assert len(frames) == 1 and frames[0][4] == lp.DATA  # no separate ACK frame
    _, released = a.on_frame(lp.DATA, frames[0][lp.HEADER.size :], 0.0)
    assert released == ["m"]


def test_resend_after_reconnect_and_duplicates_dropped() -> None:
    a, b = LinkSession(1, b"b"), LinkSession(2, b"a")
    a.queue(["e", 1], "m1")
    first = a.pack(0.0)  # lost with the socket
    a.queue(["e", 2], "m2")
    second = a.pack(0.0)
    # The receiver got only the first frame before the reset.
    got, _ = b.on_frame(lp.DATA, first[0][lp.HEADER.size :], 0.0)
    assert got == [["e", 1]]
    # Reconnect: b says it has seq 1; a releases it and resends the rest.
    assert a.take_acked(b.recv_seq, 1.0) == ["m1"]
    again = a.resend(1.0)
    assert again == second
    got, _ = b.on_frame(lp.DATA, again[0][lp.HEADER.size :], 1.0)
    assert got == [["e", 2]]
    # The same frame once more (a second resend) is a duplicate.
    got, _ = b.on_frame(lp.DATA, again[0][lp.HEADER.size :], 1.0)
    assert got == [] and b.duplicates == 1


def test_a_gap_in_the_stream_is_a_protocol_error() -> None:
    a, b = LinkSession(1, b"b"), LinkSession(2, b"a")
    a.queue(["e", 1])
    a.pack(0.0)
    a.queue(["e", 2])
    second = a.pack(0.0)
    with pytest.raises(LinkError, match="gap"):
        b.on_frame(lp.DATA, second[0][lp.HEADER.size :], 0.0)


def test_window_bounds_unacknowledged_frames_and_pending_overflows() -> None:
    limits = LinkLimits(window=2, max_pending=3, max_items=1)
    a = LinkSession(1, b"b", limits)
    for i in range(3):
        a.queue(["e", i])
    frames = a.pack(0.0)
    assert len(frames) == 2 and a.in_window == 2 and a.pending == 1
    assert a.health(0.0, True).status is HealthStatus.SLOW  # window full
    a.queue(["e", 3])
    a.queue(["e", 4])
    with pytest.raises(LinkOverflow):
        a.queue(["e", 5])


def test_framed_items_and_a_full_windows_backlog_live_as_bytes_and_come_back_in_order() -> None:
    """A frame in flight keeps its bytes, not the queued objects too, and so does a frame's
    worth queued behind a full window (a burst held twice over, or a stalled peer's whole
    backlog, as Python objects); a lost peer's items come back decoded, in order: the
    framed ones, then those never framed."""

    @dataclasses.dataclass
    class Event:  # (orjson encodes dataclasses; a weak reference shows whether one is kept)
        n: int

    limits = LinkLimits(window=1, max_items=2)
    a = LinkSession(1, b"b", limits)
    queued = [Event(i) for i in range(7)]
    refs = [weakref.ref(e) for e in queued]
    a.queue(queued[0], "ack-0")
    a.queue(queued[1], "ack-1")
    assert len(a.pack(0.0)) == 1 and a.pending == 0 and a.in_window == 1  # the window is full now
    for e in queued[2:]:
        a.queue(e, f"ack-{e.n}")
    assert a.pending == 5 and len(a.pack(0.0)) == 0
    del queued, e
    gc.collect()
    assert [r() for r in refs[:6]] == [None] * 6  # framed, or a frame's worth behind the window
    assert refs[6]() is not None  # the next frame's first item: still itself
    assert a.unacknowledged_count == 7
    pairs = a.unacknowledged()
    assert pairs[:6] == [({"n": i}, f"ack-{i}") for i in range(6)] and pairs[6] == (refs[6](), "ack-6")
    # The window opens: the encoded frames go first, as they were queued.
    assert a.take_acked(1, 0.1) == ["ack-0", "ack-1"]
    frames = a.pack(0.1)
    assert len(frames) == 1 and a.pending == 3
    assert a.take_pending() == [({"n": 4}, "ack-4"), ({"n": 5}, "ack-5"), (refs[6](), "ack-6")]
    assert a.pending == 0 and a.unacknowledged_count == 2


def _one_frame_sent(limits: LinkLimits) -> LinkSession:
    """A session that sent one frame at time 0, heard from its peer then too."""
    session = LinkSession(1, b"b", limits)
    session.last_heard = 0.0
    session.queue(["offer"])
    session.pack(0.0)
    return session


def test_health_slow_then_lost_when_unacknowledged_and_unreachable() -> None:
    limits = LinkLimits(slow_after=1.0, slow_unacked_after=1.0, lost_after=10.0)
    a = _one_frame_sent(limits)
    assert a.health(0.5, True).status is HealthStatus.OK
    assert a.health(1.5, True).status is HealthStatus.SLOW
    assert a.health(10.5, True).status is HealthStatus.LOST
    b = LinkSession(1, b"b", limits)
    assert b.health(0.0, False).status is HealthStatus.OK  # a blip: frames wait, calls still placed
    assert b.health(1.5, False).status is HealthStatus.SLOW  # down past slow_after
    assert b.health(9.0, False).status is HealthStatus.SLOW
    assert b.health(10.0, False).status is HealthStatus.LOST


def test_a_link_closed_while_its_peer_lagged_stays_slow() -> None:
    # A CallActor whose loop is blocked: its frames go unacknowledged (slow), then its silent
    # link is closed (dead_after). The closed link must not read as a mere blip (OK for
    # slow_after), or new calls would go to the blocked loop meanwhile.
    limits = LinkLimits(slow_after=2.0, slow_unacked_after=0.15, dead_after=6.0)
    a = _one_frame_sent(limits)
    assert a.health(0.2, True).status is HealthStatus.SLOW
    assert a.health(6.0, False).status is HealthStatus.SLOW  # just closed: still slow
    b = LinkSession(1, b"b", limits)
    assert b.health(6.0, False).status is HealthStatus.OK  # closed with nothing owed: a blip
    # Closed because it was silent past dead_after, owing nothing (no call was sent to the
    # blocked loop): still slow, not a blip (CI: the waiting offers went to it).
    c = LinkSession(1, b"b", limits)
    c.last_heard = 1.0
    assert c.health(2.5, True).status is HealthStatus.OK  # silent 1.5 s: under slow_after
    assert c.health(3.5, True).status is HealthStatus.SLOW
    assert c.health(7.0, False).status is HealthStatus.SLOW
    c.last_heard = 6.5  # heard just before a reset: a blip
    assert c.health(7.0, False).status is HealthStatus.OK


def test_peer_restart_is_reported_with_the_previous_session() -> None:
    cd, sd = Directory(), Directory()
    client, _server, _, _ = pair(cd, sd, server_inc=b"1" * 16)
    assert client.session is not None
    client.session.queue(["offer", "c1"], "ack-c1")
    client.session.pack(0.0)  # never acknowledged: the CallActor died
    _, _, c_events, _ = pair(cd, Directory(), server_inc=b"2" * 16)
    restarted = [e for e in c_events if isinstance(e, PeerRestarted)]
    assert len(restarted) == 1
    assert restarted[0].previous.unacknowledged() == [(["offer", "c1"], "ack-c1")]
    assert cd.sessions[7].peer_incarnation == b"2" * 16 and cd.sessions[7].in_window == 0


def test_reconnect_to_the_same_incarnation_resends_from_where_the_peer_is() -> None:
    cd, sd = Directory(), Directory()
    _client, server, _, _ = pair(cd, sd)
    c_sess, s_sess = cd.sessions[7], sd.sessions[3]
    c_sess.queue(["e", 1], "m1")
    lost = c_sess.pack(0.0)
    c_sess.queue(["e", 2], "m2")
    c_sess.pack(0.0)
    # Only the first frame arrived before the socket broke.
    server.receive_data(lost[0], 0.0)
    _client2, _server2, c_events, s_events = pair(cd, sd)
    auth = next(e for e in c_events if isinstance(e, Authenticated))
    assert auth.released == ["m1"]
    # The resent frame was written by the client on authentication: deliver it.
    delivered = [e for e in s_events if isinstance(e, Delivered)]
    items = [i for e in delivered for i in e.items]
    assert items == [["e", 2]]
    assert s_sess.recv_seq == 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("send"), st.integers(1, 5)),
            st.tuples(st.just("deliver"), st.integers(0, 3)),
            st.tuples(st.just("ack"), st.just(0)),
            st.tuples(st.just("reconnect"), st.just(0)),
        ),
        max_size=60,
    )
)
def test_any_schedule_of_losses_and_reconnects_delivers_everything_once_in_order(
    ops: list[tuple[str, int]],
) -> None:
    """Frames in flight are dropped at every reconnect; whatever happens, the receiver
    sees each item once, in order, and every meta is released once it has them."""
    a, b = LinkSession(1, b"b", LinkLimits(window=4, max_items=3)), LinkSession(2, b"a")
    wire: list[bytes] = []
    back: list[bytes] = []
    sent = 0
    got: list[int] = []
    released: list[int] = []

    def deliver(n: int) -> None:
        for _ in range(n):
            if not wire:
                return
            frame = wire.pop(0)
            items, _ = b.on_frame(frame[4], frame[lp.HEADER.size :], 0.0)
            got.extend(i[1] for i in items)

    for op, n in ops:
        if op == "send":
            for _ in range(n):
                a.queue(["e", sent], sent)
                sent += 1
            wire += a.pack(0.0)
        elif op == "deliver":
            deliver(n)
        elif op == "ack":
            back += b.pack(0.0)
            for frame in back:
                _, rel = a.on_frame(frame[4], frame[lp.HEADER.size :], 0.0)
                released.extend(rel)
            back.clear()
            wire += a.pack(0.0)
        else:  # the socket breaks: what was in flight is gone; handshake says where b is
            wire.clear()
            back.clear()
            released.extend(a.take_acked(b.recv_seq, 0.0))
            wire += a.resend(0.0)
            wire += a.pack(0.0)
    # quiesce
    for _ in range(sent + 5):
        deliver(len(wire))
        back += b.pack(0.0)
        for frame in back:
            _, rel = a.on_frame(frame[4], frame[lp.HEADER.size :], 0.0)
            released.extend(rel)
        back.clear()
        wire += a.pack(0.0)
    assert got == list(range(sent))
    assert released == list(range(sent))


def test_a_frame_unacknowledged_past_a_loop_stall_makes_the_peer_slow_at_once() -> None:
    """A peer acknowledges every loop iteration: 150 ms without it means its loop stalls,
    well before 2 s of silence would say so (it then takes no new calls)."""
    a = LinkSession(1, b"b", LinkLimits())
    a.last_heard = 0.0
    a.queue(["offer"])
    a.pack(0.0)
    assert a.health(0.1, True).status is HealthStatus.OK
    assert a.health(0.2, True).status is HealthStatus.SLOW


# --- delayed acknowledgements: piggybacked on DATA, bare only when overdue ---------------


def kinds(frames: list[bytes]) -> list[int]:
    return [frame[4] for frame in frames]


def carry(frames: list[bytes], receiver: LinkSession, now: float) -> tuple[list[Any], list[Any]]:
    items: list[Any] = []
    released: list[Any] = []
    for frame in frames:
        got, rel = receiver.on_frame(frame[4], frame[lp.HEADER.size :], now)
        items += got
        released += rel
    return items, released


def test_an_owed_ack_waits_for_data_going_back_and_rides_on_it() -> None:
    a, b = LinkSession(1, b"b"), LinkSession(2, b"a")
    a.queue(["offer"], meta="m")
    carry(a.pack(1.0), b, 1.0)
    assert b.ack_due and b.ack_deadline == pytest.approx(1.0 + lp.DEFAULT_LIMITS.ack_delay)
    assert b.pack(1.005, ack=False) == []  # no bare ACK yet: the answer may carry it
    b.queue(["req", "r1", "calling.answer", {}])
    frames = b.pack(1.01, ack=False)
    assert kinds(frames) == [lp.DATA]
    assert not b.ack_due and b.ack_deadline is None and b.acks_out == 0
    _, released = carry(frames, a, 1.01)
    assert released == ["m"]


def test_an_owed_ack_goes_bare_once_overdue() -> None:
    limits = LinkLimits(ack_delay=0.02)
    a, b = LinkSession(1, b"b", limits), LinkSession(2, b"a", limits)
    a.queue(["event"], meta="m")
    carry(a.pack(0.0), b, 0.0)
    assert b.pack(0.019, ack=False) == []
    frames = b.pack(0.02, ack=False)
    assert kinds(frames) == [lp.ACK] and b.acks_out == 1
    assert carry(frames, a, 0.02)[1] == ["m"]
    assert b.pack(1.0, ack=False) == []  # owed once, sent once


def test_enough_unacknowledged_frames_make_the_ack_go_at_once() -> None:
    limits = LinkLimits(ack_every=4, max_items=1)
    a, b = LinkSession(1, b"b", limits), LinkSession(2, b"a", limits)
    for i in range(3):
        a.queue(["e", i])
    carry(a.pack(0.0), b, 0.0)
    assert b.pack(0.0, ack=False) == []
    a.queue(["e", 3])
    carry(a.pack(0.0), b, 0.0)
    assert b.ack_deadline == float("-inf")
    assert kinds(b.pack(0.0, ack=False)) == [lp.ACK]


def test_a_duplicate_makes_the_ack_go_at_once() -> None:
    """The peer resends: it must learn where we are without waiting."""
    a, b = LinkSession(1, b"b"), LinkSession(2, b"a")
    a.queue(["e"])
    first = a.pack(0.0)
    carry(first, b, 0.0)
    b.pack(0.0)  # acknowledged, but the ACK is lost with the socket
    carry(a.resend(0.0), b, 0.0)
    assert b.duplicates == 1 and b.ack_deadline == float("-inf")
    assert kinds(b.pack(0.0, ack=False)) == [lp.ACK]


def test_a_heartbeat_carries_the_owed_ack() -> None:
    a, b = LinkSession(1, b"b"), LinkSession(2, b"a")
    a.queue(["e"], meta="m")
    carry(a.pack(0.0), b, 0.0)
    beat = b.heartbeat(0.01, 0.0)
    assert b.ack_deadline is None
    assert carry([beat], a, 0.01)[1] == ["m"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["a_send", "b_send"]), st.integers(1, 4)),
            st.tuples(st.sampled_from(["to_b", "to_a"]), st.integers(0, 3)),
            st.tuples(st.just("wait"), st.integers(1, 30)),
        ),
        max_size=80,
    )
)
def test_two_way_traffic_with_delayed_acks_loses_and_reorders_nothing(ops: list[tuple[str, int]]) -> None:
    """Both ends flush with ``ack=False`` and keep an ACK timer, as the shell does. Whatever
    the interleaving: every item arrives once and in order both ways, every meta is
    released, an owed acknowledgement never waits past its deadline, and no bare ACK
    goes while DATA could carry it."""
    limits = LinkLimits(window=8, max_items=3, ack_every=5, ack_delay=0.02)
    ends = {"a": LinkSession(1, b"b", limits), "b": LinkSession(2, b"a", limits)}
    wires: dict[str, list[bytes]] = {"a": [], "b": []}  # frames in flight *to* that end
    sent = {"a": 0, "b": 0}
    got: dict[str, list[int]] = {"a": [], "b": []}
    released: dict[str, list[int]] = {"a": [], "b": []}
    now = 0.0
    other = {"a": "b", "b": "a"}

    def flush(me: str, ack: bool = False) -> None:
        frames = ends[me].pack(now, ack=ack)
        # a bare ACK never goes beside DATA (which carries the acknowledgement)
        assert lp.ACK not in kinds(frames) or kinds(frames) == [lp.ACK]
        wires[other[me]] += frames

    def deliver(me: str, n: int) -> None:
        for _ in range(n):
            if not wires[me]:
                return
            frame = wires[me].pop(0)
            items, rel = ends[me].on_frame(frame[4], frame[lp.HEADER.size :], now)
            got[me].extend(i[1] for i in items)
            released[me].extend(rel)
        flush(me)  # the end of the loop iteration

    def timers() -> None:
        for me, session in ends.items():
            deadline = session.ack_deadline
            if deadline is not None and now >= deadline:
                flush(me, ack=True)
            deadline = session.ack_deadline
            assert deadline is None or deadline > now - 1e-9  # never left overdue

    for op, n in ops:
        if op in ("a_send", "b_send"):
            me = op[0]
            for _ in range(n):
                ends[me].queue(["e", sent[me]], sent[me])
                sent[me] += 1
            flush(me)
        elif op == "to_b":
            deliver("b", n)
        elif op == "to_a":
            deliver("a", n)
        else:
            now += n / 1000
        timers()
    for _ in range(4 * (sent["a"] + sent["b"]) + 10):  # quiesce: time passes, timers fire
        deliver("a", len(wires["a"]))
        deliver("b", len(wires["b"]))
        now += 0.03
        timers()
    for me in ("a", "b"):
        assert got[other[me]] == list(range(sent[me]))
        assert released[me] == list(range(sent[me]))
