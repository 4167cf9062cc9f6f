"""How the connection engine reads messages: each is handled as its frames are parsed
(no queue behind ``recv()``), fragmented ones joined first, and a handler that raises
costs the socket (reconnect and resume), never the engine. Against a bare websockets
server on 127.0.0.1 that fragments what it sends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from relay_actors.backoff import Backoff
from relay_actors.config import resolve_settings
from relay_actors.connection import Connection
from relay_actors.protocol.events import RelayEvent


def _chunks(frame: dict[str, Any], size: int = 7) -> list[str]:
    text = json.dumps(frame)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _event(event_id: str, call_id: str) -> dict[str, Any]:
    params = {"call_id": call_id, "node_id": "n", "call_state": "answered"}
    return {
        "jsonrpc": "2.0",
        "id": event_id,
        "method": "signalwire.event",
        "params": {"event_type": "calling.call.state", "params": params},
    }


class Server:
    """Answers ``signalwire.connect`` in fragments, then sends what the test queues."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.sockets: list[ServerConnection] = []
        self.port = 0

    async def handler(self, ws: ServerConnection) -> None:
        self.sockets.append(ws)
        async for message in ws:
            frame = orjson.loads(message)
            self.received.append(frame)
            if frame.get("method") == "signalwire.connect":
                result = {"protocol": "p1", "identity": "i", "authorization": {}}
                await ws.send(_chunks({"jsonrpc": "2.0", "id": frame["id"], "result": result}))


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    async with serve(srv.handler, "127.0.0.1", 0) as ws_server:
        srv.port = ws_server.sockets[0].getsockname()[1]
        yield srv


async def until(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def connection(server: Server, on_event: Any) -> Connection:
    host = f"127.0.0.1:{server.port}"
    settings = resolve_settings("proj", "tok", None, host, ["office"], scheme="ws", env={})
    return Connection(settings, on_event=on_event, backoff=Backoff(initial=0.02, cap=0.1))


async def test_fragmented_and_batched_messages_are_handled_in_order_and_acked(server: Server) -> None:
    events: list[RelayEvent] = []
    conn = connection(server, lambda event, ack: events.append(event))
    connected = await asyncio.wait_for(conn.connect(), 10)  # its result came in 5+ fragments
    assert connected.protocol == "p1"
    ws = server.sockets[0]
    await ws.send(_chunks(_event("sw-1", "c1")))  # fragmented
    for i in range(2, 6):  # whole, several in one read
        await ws.send(json.dumps(_event(f"sw-{i}", f"c{i}")))
    await until(lambda: len(events) == 5)
    assert [e.call_id for e in events] == ["c1", "c2", "c3", "c4", "c5"]
    await until(lambda: len([f for f in server.received if "result" in f]) == 5)
    assert [f["id"] for f in server.received if "result" in f] == [f"sw-{i}" for i in range(1, 6)]
    await conn.close()


async def test_a_failing_event_handler_costs_the_socket_not_the_engine(server: Server) -> None:
    seen: list[str] = []

    def on_event(event: RelayEvent, ack: str | None) -> None:
        seen.append(event.call_id)
        if event.call_id == "boom":
            raise RuntimeError("a bug in the consumer")

    conn = connection(server, on_event)
    await asyncio.wait_for(conn.connect(), 10)
    # The engine contains on_event's errors itself (logged): the socket stays.
    await server.sockets[0].send(json.dumps(_event("sw-1", "boom")))
    await server.sockets[0].send(json.dumps(_event("sw-2", "after")))
    await until(lambda: seen == ["boom", "after"])
    assert conn.connected and conn.reconnects == 0
    # A failure inside the message path itself (here: the session's decoder) drops the
    # socket, and the engine reconnects and resumes.
    original = conn.session.receive

    def broken(data: bytes) -> Any:
        conn.session.receive = original  # type: ignore[method-assign]
        raise RuntimeError("decoder bug")

    conn.session.receive = broken  # type: ignore[method-assign]
    await server.sockets[0].send(json.dumps(_event("sw-3", "lost-with-the-socket")))
    await until(lambda: len(server.sockets) == 2 and conn.connected)
    assert conn.reconnects == 1
    await server.sockets[1].send(json.dumps(_event("sw-4", "on-the-new-socket")))
    await until(lambda: seen[-1] == "on-the-new-socket")
    await conn.close()
