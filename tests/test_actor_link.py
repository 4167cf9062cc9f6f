"""The direct actor link: framing, group-commit writes, authentication, closing."""

from __future__ import annotations

import asyncio

import pytest

from relay_actors import actor_link
from relay_actors.actor_link import LinkClosed, LinkServer


async def start_server(secret: str, inbox: list[object]) -> tuple[LinkServer, list[actor_link.Link]]:
    links: list[actor_link.Link] = []

    async def on_link(link: actor_link.Link, hello: object) -> None:
        links.append(link)
        inbox.append(("hello", hello))
        try:
            while True:
                message = await link.recv()
                inbox.append(message)
                link.send(("echo", message))
        except LinkClosed:
            inbox.append("closed")

    server = LinkServer(secret, on_link)
    await server.start("127.0.0.1")
    return server, links


async def until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_messages_round_trip_in_order_and_one_iteration_is_one_write() -> None:
    secret = actor_link.new_secret()
    inbox: list[object] = []
    server, _ = await start_server(secret, inbox)
    link = await actor_link.connect("127.0.0.1", server.port, secret, ("shard", 3))
    for i in range(100):
        link.send(("item", i, {"payload": "x" * i}))
    writes_before = link.writes
    await until(lambda: len(inbox) == 101)
    assert inbox[0] == ("hello", ("shard", 3))
    assert [m[1] for m in inbox[1:]] == list(range(100))  # type: ignore[index]
    assert link.writes - writes_before == 1  # 100 messages, one write
    echoes = [await link.recv() for _ in range(100)]
    assert echoes[-1] == ("echo", ("item", 99, {"payload": "x" * 99}))
    link.close()
    await until(lambda: "closed" in inbox)
    await server.close()


async def test_a_peer_without_the_secret_is_refused() -> None:
    inbox: list[object] = []
    server, links = await start_server(actor_link.new_secret(), inbox)
    intruder = await actor_link.connect("127.0.0.1", server.port, actor_link.new_secret(), ("shard", 0))
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(intruder.recv(), 5)
    assert links == [] and inbox == []
    # Not even a frame of ours: raw bytes are dropped too.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n" * 10)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)  # the challenge, then the server hangs up
    assert len(data) > 4 and reader.at_eof()
    writer.close()
    assert links == []
    await server.close()


async def test_send_after_close_raises_and_recv_sees_the_close() -> None:
    secret = actor_link.new_secret()
    inbox: list[object] = []
    server, links = await start_server(secret, inbox)
    link = await actor_link.connect("127.0.0.1", server.port, secret, ("shard", 1))
    await until(lambda: links)
    links[0].close()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(link.recv(), 5)
    with pytest.raises(LinkClosed):
        link.send(("late",))
    await server.close()
