"""The actor link's asyncio shell on real sockets (Unix and TLS on 127.0.0.1), against
honest and hostile peers. The same listener runs inside every CallActor
(``tests/ray/test_ray_link.py`` attacks a real one)."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import stat
import struct
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from relay_actors.ray_runtime import actor_link, link_tls
from relay_actors.ray_runtime import link_protocol as lp
from relay_actors.ray_runtime.actor_link import LinkClient, LinkHub, LinkServer
from relay_actors.ray_runtime.link_protocol import HealthStatus, LinkLimits, LinkSession

SECRET = bytes.fromhex(actor_link.new_secret())
IDENTITY = link_tls.generate_identity()


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"{what} not met within {timeout} s"
        await asyncio.sleep(0.005)


class Side:
    """One end with its inbox."""

    def __init__(self) -> None:
        self.items: list[tuple[int, Any]] = []
        self.released: list[Any] = []
        self.restarted: list[LinkSession] = []
        self.health: list[tuple[int, HealthStatus]] = []

    def on_items(self, peer: int, items: list[Any]) -> None:
        self.items.extend((peer, item) for item in items)

    def on_released(self, peer: int, metas: list[Any]) -> None:
        self.released.extend(metas)


async def start_server(side: Side, key: bytes = SECRET, **kw: Any) -> LinkServer:
    tls = link_tls.server_context(IDENTITY)
    server = LinkServer(key, 7, side.on_items, on_restarted=side.restarted.append, tls=tls, **kw)
    await server.start("127.0.0.1", tempfile.mkdtemp(prefix="rl-test-"))
    return server


def client_for(
    server: LinkServer, side: Side, *, same_node: bool = True, key: bytes = SECRET, **kw: Any
) -> LinkClient:
    async def endpoint(idx: int) -> tuple[dict[str, Any], bool]:
        return {"unix": server.unix_path, "host": server.host, "port": server.port}, same_node

    return LinkClient(
        key,
        3,
        side.on_items,
        endpoint=endpoint,
        on_released=side.on_released,
        on_restarted=side.restarted.append,
        on_health=lambda idx, h: side.health.append((idx, h.status)),
        tls=link_tls.client_context(IDENTITY),
        **kw,
    )


@pytest.fixture
async def linked() -> AsyncIterator[tuple[LinkServer, Side, LinkClient, Side]]:
    s_side, c_side = Side(), Side()
    server = await start_server(s_side)
    client = client_for(server, c_side)
    client.ensure(7)
    await until(lambda: client.connected(7), what="link up")
    yield server, s_side, client, c_side
    await client.aclose()
    await server.aclose()


@pytest.mark.parametrize("same_node", [True, False], ids=["unix", "tls"])
async def test_items_round_trip_in_order_and_acks_release_metas(same_node: bool) -> None:
    s_side, c_side = Side(), Side()
    server = await start_server(s_side)
    client = client_for(server, c_side, same_node=same_node)
    client.ensure(7)
    for i in range(500):
        client.send(7, ["event", i], f"ack-{i}")
    await until(lambda: len(s_side.items) == 500, what="500 items delivered")
    assert [item for _, item in s_side.items] == [["event", i] for i in range(500)]
    # Released only once the server acknowledged them, each once, in order.
    await until(lambda: len(c_side.released) == 500, what="acks")
    assert c_side.released == [f"ack-{i}" for i in range(500)]
    server.send(3, ["req", "r1", "calling.answer", {"call_id": "c"}])
    await until(lambda: c_side.items == [(7, ["req", "r1", "calling.answer", {"call_id": "c"}])])
    wire = client.wires[7]
    assert isinstance(wire.transport.get_extra_info("sslcontext"), type(None)) is same_node
    await client.aclose()
    await server.aclose()


async def test_one_loop_iteration_is_one_frame(linked: tuple[LinkServer, Side, LinkClient, Side]) -> None:
    _, s_side, client, _ = linked
    before = client.sessions[7].frames_out
    for i in range(100):
        client.send(7, ["event", i])
    await until(lambda: len(s_side.items) == 100)
    assert client.sessions[7].frames_out - before == 1


async def test_an_answer_carries_the_ack_and_a_lone_event_is_acked_after_the_delay(
    linked: tuple[LinkServer, Side, LinkClient, Side],
) -> None:
    """Request/answer traffic writes no bare ACK (each side's DATA acknowledges the
    other's); an event nothing answers is acknowledged by one bare ACK, ``ack_delay`` later."""
    server, s_side, client, c_side = linked
    served = server.sessions[3]
    for i in range(20):  # an offer, its answer request, the request's result...
        client.send(7, ["event", i], f"ack-{i}")
        await until(lambda i=i: len(s_side.items) == i + 1, what="event delivered")
        server.send(3, ["req", i])
        await until(lambda i=i: len(c_side.items) == i + 1, what="request delivered")
    await until(lambda: len(c_side.released) == 20, what="events acknowledged")
    assert served.acks_out == 0  # every acknowledgement rode on a request
    loop = asyncio.get_running_loop()
    client.send(7, ["event", "lone"], "ack-lone")
    sent = loop.time()
    await until(lambda: len(c_side.released) == 21, what="the lone event acknowledged")
    assert loop.time() - sent >= served.limits.ack_delay * 0.9
    assert served.acks_out == 1


async def test_enough_items_leave_at_once_linger_or_not() -> None:
    s_side, c_side = Side(), Side()
    server = await start_server(s_side, linger=1.0)
    client = client_for(server, c_side, linger=1.0)
    client.ensure(7)
    await until(lambda: client.connected(7), what="link up")
    await until(lambda: not client.sessions[7].pending and not client._flush_scheduled, what="quiet link")
    loop = asyncio.get_running_loop()
    start = loop.time()
    client.send(7, ["event", -1])  # alone: would wait the whole second
    for i in range(actor_link.LINGER_ENOUGH):
        client.send(7, ["event", i])
    await until(lambda: len(s_side.items) == actor_link.LINGER_ENOUGH + 1, timeout=0.5, what="a full batch")
    assert loop.time() - start < 0.5
    assert [item for _, item in s_side.items] == [["event", i] for i in range(-1, actor_link.LINGER_ENOUGH)]
    await client.aclose()
    await server.aclose()


async def test_a_linger_gathers_items_of_separate_iterations_into_one_frame() -> None:
    s_side, c_side = Side(), Side()
    server = await start_server(s_side, linger=0.05)
    client = client_for(server, c_side, linger=0.05)
    client.ensure(7)
    await until(lambda: client.connected(7), what="link up")
    await until(lambda: not client.sessions[7].pending and not client._flush_scheduled, what="quiet link")
    before = client.sessions[7].frames_out
    # After a quiet spell the first item leaves at once: a linger costs no latency when idle.
    client.send(7, ["event", 0])
    await until(lambda: len(s_side.items) == 1, what="the first item delivered")
    assert client.sessions[7].frames_out - before == 1
    first_write = client._last_write
    for i in range(1, 5):  # four loop iterations, within the linger after that write
        client.send(7, ["event", i])
        await asyncio.sleep(0)
    await until(lambda: len(s_side.items) == 5, what="5 items delivered")
    assert [item for _, item in s_side.items] == [["event", i] for i in range(5)]
    assert client.sessions[7].frames_out - before == 2
    # Held until a linger after the first write, not sent at once.
    assert client._last_write - first_write >= 0.049, client._last_write - first_write
    # The answer lingers on the server's side too, then arrives whole.
    for i in range(3):
        server.send(3, ["result", i])
        await asyncio.sleep(0)
    await until(lambda: len(c_side.items) == 3, what="3 results delivered")
    assert [item for _, item in c_side.items] == [["result", i] for i in range(3)]
    await client.aclose()
    await server.aclose()


async def test_the_unix_socket_is_private_and_tcp_is_not_on_a_wildcard_address(
    linked: tuple[LinkServer, Side, LinkClient, Side],
) -> None:
    server, *_ = linked
    mode = os.stat(server.unix_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(server.unix_path)).st_mode) == 0o700
    listening = [
        c
        for c in psutil.Process().net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == server.port
    ]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)
    with pytest.raises(ValueError, match="wildcard"):
        await LinkServer(SECRET, 1, lambda p, i: None).start("0.0.0.0")


async def raw(server: LinkServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(server.unix_path)


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything the peer sends until it closes (fails if it does not close in time)."""
    return await asyncio.wait_for(reader.read(), timeout)


async def test_a_pickle_that_would_create_a_file_never_runs(
    linked: tuple[LinkServer, Side, LinkClient, Side],
) -> None:
    server, *_ = linked
    target = Path(tempfile.mkdtemp()) / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(target), "w"))

    blob = pickle.dumps(("hello", b"x" * 32, Evil()))
    reader, writer = await raw(server)
    writer.write(struct.pack("!I", len(blob)) + blob)  # the old link's framing
    await writer.drain()
    await closed_by_peer(reader)
    assert not target.exists()
    assert server.counters["link_refused"] >= 1
    writer.close()


async def test_a_256_mib_length_header_is_refused_at_once_without_allocation(
    linked: tuple[LinkServer, Side, LinkClient, Side],
) -> None:
    server, *_ = linked
    rss = psutil.Process().memory_info().rss
    reader, writer = await raw(server)
    writer.write(struct.pack("!IB", 256 * 1024 * 1024, lp.HELLO))
    await writer.drain()
    assert await closed_by_peer(reader, timeout=1.0) == b""
    assert psutil.Process().memory_info().rss - rss < 32 * 1024 * 1024
    writer.close()


async def test_wrong_secret_peers_are_refused_and_counted() -> None:
    s_side, c_side = Side(), Side()
    server = await start_server(s_side)
    intruder = client_for(server, c_side, key=os.urandom(32))
    intruder.ensure(7)
    await until(lambda: intruder.counters["link_connect_failures"] >= 2, what="refused twice")
    assert not intruder.connected(7) and not server.wires
    # The intruder refused the server's proof first (it cannot check it); with the
    # server's own check: a client proof made with the wrong key.
    conn = lp.LinkConnection(
        lp.Role.CLIENT, os.urandom(32), 3, b"i" * 16, lambda p, i: (LinkSession(p, i), None)
    )
    reader, writer = await raw(server)
    conn.initiate()
    writer.write(conn.data_to_send())
    await reader.readexactly(lp.HEADER.size + 73)  # the challenge
    writer.write(struct.pack("!IB", 40, lp.PROOF) + b"\0" * 40)
    await closed_by_peer(reader)
    assert server.counters["link_refused"] >= 1
    await intruder.aclose()
    await server.aclose()


async def test_a_fake_server_obtains_no_proof_that_works_against_a_real_one() -> None:
    """A listener that is not the app's answers our client's HELLO with whatever it
    can: the client proves nothing to it, and nothing it recorded opens a real link."""
    recorded = bytearray()

    async def fake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        recorded.extend(await reader.read(200))
        challenge = struct.pack("!4sBI16s16s32s", lp.MAGIC, 2, 7, b"f" * 16, b"n" * 16, os.urandom(32))
        writer.write(struct.pack("!IB", len(challenge), lp.CHALLENGE) + challenge)
        await writer.drain()
        recorded.extend(await reader.read())  # until the client gives up
        writer.close()

    d = tempfile.mkdtemp(prefix="rl-fake-")
    path = os.path.join(d, "fake.sock")
    fake_server = await asyncio.start_unix_server(fake, path)
    side = Side()

    async def endpoint(idx: int) -> tuple[dict[str, Any], bool]:
        return {"unix": path}, True

    client = LinkClient(SECRET, 3, side.on_items, endpoint=endpoint, tls=None)
    client.ensure(7)
    await until(lambda: client.counters["link_connect_failures"] >= 1)
    await client.aclose()
    fake_server.close()
    assert len(recorded) == lp.HEADER.size + 41  # the HELLO, and nothing after it
    # Replayed to a real CallActor's listener, the recording authenticates nothing.
    real_side = Side()
    real = await start_server(real_side)
    reader, writer = await raw(real)
    writer.write(bytes(recorded))
    await reader.readexactly(lp.HEADER.size + 73)
    writer.write(struct.pack("!IB", 40, lp.PROOF) + b"\0" * 40)
    await closed_by_peer(reader)
    assert not real.wires
    await real.aclose()


async def test_a_thousand_half_open_handshakes_do_not_keep_an_honest_peer_out() -> None:
    s_side, c_side = Side(), Side()
    server = await start_server(s_side)
    socks = []
    try:
        for _ in range(1000):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", server.port))
            except BlockingIOError:
                pass
            socks.append(s)
        await until(lambda: server.counters["link_accepted"] >= 1000, timeout=30.0, what="the flood accepted")
        assert server.counters["handshakes_evicted"] >= 1000 - actor_link.MAX_HANDSHAKES
        assert server.handshakes_in_progress <= actor_link.MAX_HANDSHAKES
        client = client_for(server, c_side, same_node=False)
        client.ensure(7)
        await until(lambda: client.connected(7), timeout=10.0, what="honest link up during the flood")
        client.send(7, ["event", 1])
        await until(lambda: s_side.items == [(3, ["event", 1])])
        await client.aclose()
    finally:
        for s in socks:
            s.close()
        await server.aclose()


async def test_a_reset_socket_is_reconnected_and_nothing_is_lost_or_repeated(
    linked: tuple[LinkServer, Side, LinkClient, Side],
) -> None:
    server, s_side, client, c_side = linked
    for round_ in range(5):
        for i in range(200):
            client.send(7, ["event", round_ * 200 + i], round_ * 200 + i)
            server.send(3, ["req", round_ * 200 + i])
        # Reset the socket while frames are in flight.
        old = client.wires[7]
        old.transport.abort()
        await until(lambda old=old: client.connected(7) and client.wires[7] is not old, what="reconnected")
    await until(lambda: len(s_side.items) == 1000 and len(c_side.items) == 1000, what="everything delivered")
    assert [item[1] for _, item in s_side.items] == list(range(1000))
    assert [item[1] for _, item in c_side.items] == list(range(1000))
    await until(lambda: len(c_side.released) == 1000)
    assert c_side.released == list(range(1000))
    assert client.counters["links_authenticated"] >= 6
    assert not c_side.restarted and not s_side.restarted


async def test_a_restarted_peer_is_recognised_and_its_unacknowledged_items_returned() -> None:
    s_side, c_side = Side(), Side()
    server = await start_server(s_side)
    client = client_for(server, c_side)
    client.ensure(7)
    await until(lambda: client.connected(7))
    path = server.unix_path
    await server.aclose()  # the CallActor dies...
    await until(lambda: not client.connected(7))
    client.send(7, ["offer", "c1", {}, "e1"], "e1")
    restarted = await start_server(Side())  # ...and comes back, a new incarnation
    client._endpoint = client_for(restarted, Side())._endpoint
    await until(lambda: client.connected(7), what="linked to the new incarnation")
    assert len(c_side.restarted) == 1
    assert c_side.restarted[0].unacknowledged() == [(["offer", "c1", {}, "e1"], "e1")]
    assert path != restarted.unix_path
    await client.aclose()
    await restarted.aclose()


async def watched_link(slow_after: float) -> tuple[LinkServer, LinkClient, Side, LinkHub]:
    """A link up under a hub that reports its health every 50 ms."""
    s_side, c_side = Side(), Side()
    limits = LinkLimits(slow_after=slow_after, heartbeat=0.1, dead_after=30.0)
    server = await start_server(s_side, limits=limits)
    client = client_for(server, c_side, limits=limits)
    hub = LinkHub(client, interval=0.05)
    hub.start()
    client.ensure(7)
    await until(lambda: client.connected(7))
    return server, client, c_side, hub


async def test_a_peer_whose_loop_is_blocked_turns_slow_and_back() -> None:
    server, client, c_side, hub = await watched_link(slow_after=0.3)
    # Stop the server reading (what a blocked event loop looks like from outside).
    server.wires[3].transport.pause_reading()
    client.send(7, ["offer", "c1"], "e1")
    await until(lambda: client.status(7) is HealthStatus.SLOW, what="slow")
    assert c_side.released == []  # not acknowledged: not acked to RELAY either
    server.wires[3].transport.resume_reading()
    await until(lambda: client.status(7) is HealthStatus.OK, what="ok again")
    assert c_side.released == ["e1"]
    assert [s for _, s in c_side.health] == [HealthStatus.OK, HealthStatus.SLOW, HealthStatus.OK]
    await hub.aclose()
    await client.aclose()
    await server.aclose()


async def test_items_waiting_behind_a_full_window_leave_when_it_opens() -> None:
    """With a window of one frame, every frame waits for the previous one's
    acknowledgement: what waits must leave when it comes, in both directions."""
    s_side, c_side = Side(), Side()
    limits = LinkLimits(window=1)
    server = await start_server(s_side, limits=limits)
    client = client_for(server, c_side, limits=limits)
    client.ensure(7)
    await until(lambda: client.connected(7))
    for i in range(50):
        client.send(7, ["event", i])
        server.send(3, ["req", i])
        await asyncio.sleep(0)  # one frame per loop iteration: most wait behind the window
    await until(lambda: len(s_side.items) == 50 and len(c_side.items) == 50, what="everything delivered")
    assert [item[1] for _, item in s_side.items] == list(range(50))
    assert [item[1] for _, item in c_side.items] == list(range(50))
    await client.aclose()
    await server.aclose()


async def test_a_peer_slow_before_its_reset_is_reported_ok_after_it() -> None:
    """A CallActor killed is first unreachable (slow), then found lost and its link reset:
    the owner must hear the fresh link is OK, or it never gives that actor work again."""
    server, client, c_side, hub = await watched_link(slow_after=0.2)
    limits = client.limits
    await server.aclose()  # the CallActor dies; its restart takes longer than slow_after
    await until(lambda: c_side.health[-1:] == [(7, HealthStatus.SLOW)], what="reported slow")
    restarted = await start_server(Side(), limits=limits)
    client._endpoint = client_for(restarted, Side())._endpoint
    client.reset(7)  # what the lost-actor policy does
    await until(lambda: client.connected(7), what="linked to the new incarnation")
    await until(lambda: c_side.health[-1:] == [(7, HealthStatus.OK)], what="reported OK again")
    assert client.status(7) is HealthStatus.OK
    await hub.aclose()
    await client.aclose()
    await restarted.aclose()
