"""The SDK's client surface on Ray (issue 9): from the driver, and inside a handler.

An app written for the official SDK runs on Ray by changing its import: the driver's
``RelayClient(runtime="ray")`` and the handlers' ``client`` (the proxy in a CallActor)
answer the same questions and keep the same promises as the in-process client.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import ray_helpers as helpers
from ray_helpers import eventually

from relay_actors import RelayClient
from relay_actors.backoff import Backoff
from relay_actors.errors import ArgumentError, RelayError
from relay_actors.protocol import constants as c

PHONE = {"type": "phone", "params": {"from_number": "+15550000001", "to_number": "+15550000002"}}

#: The module-level client the handlers below refer to: inside a CallActor it is the proxy.
client: Any = None


def _session_of(emulator: Any, protocol: str) -> dict[str, Any]:
    (session,) = [s for s in emulator.core.list_sessions() if s["protocol"] == protocol]
    return session


async def _notes(rec: Any) -> dict[str, Any]:
    return {n[0]: n[1] for n in (await rec.dump.remote())["notes"]}


# --- the driver ------------------------------------------------------------------------


async def test_driver_send_message_returns_at_once_and_reports_every_state(make_client, emulator) -> None:
    # Each state 0.4 s after the previous one: delivered ~1.6 s after the send.
    emulator.core.config.durations["message"] = 0.4
    relay = await make_client()
    started = time.monotonic()
    completed = asyncio.Event()
    message = await relay.send_message(
        to_number="+15550000009",
        from_number="+15550000001",
        body="hi",
        on_completed=lambda e: completed.set(),
    )
    # Like the SDK: the send's result, not the delivery, is what send_message waits for.
    assert message.state not in c.MESSAGE_TERMINAL_STATES, "send_message waited for the delivery"
    assert time.monotonic() - started < 1.5
    seen: list[str] = []
    message.on(lambda event: seen.append(event.params["message_state"]))
    final = await message.wait(15)
    assert final.params["message_state"] == "delivered"
    assert message.state == "delivered"
    assert message.is_done
    await asyncio.wait_for(completed.wait(), 5)
    assert seen[-1] == "delivered"
    assert "sent" in seen  # the states in between reach the driver too
    assert relay.stats()["tracked_messages"] == 0


async def test_driver_session_view_follows_the_shards(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client(on_call=helpers.recording_handler(rec_name, plays=0, stay=True, hangup=False))
    assert relay.connected
    protocol = relay.relay_protocol
    assert _session_of(emulator, protocol)["contexts"] == ["office"]
    assert relay.contexts == ["office"]

    # A str is one context, as in the SDK; contexts shows what the shards receive.
    await relay.receive("sales")
    assert relay.contexts == ["office", "sales"]
    assert _session_of(emulator, protocol)["contexts"] == ["office", "sales"]
    await relay.unreceive(["sales"])
    assert relay.contexts == ["office"]

    # stats() counts the app's calls (the shards'), not the driver's own.
    (call_id,) = emulator.core.inject_calls("office", 1)
    await eventually(lambda: _started(rec, call_id), 10, what="handler started")

    async def one_active() -> bool:
        return bool(relay.stats()["active_calls"] == 1)

    await eventually(one_active, 10, what="stats() shows the app's call")
    stats = relay.stats()
    assert stats["connected"] is True and stats["shards_reporting"] == 1
    emulator.core.hangup(call_id)

    # A fresh session (the server retired the old one): the new protocol shows.
    await emulator.core.disconnect(protocol, restart=True)

    async def new_protocol() -> bool:
        return relay.relay_protocol not in ("", protocol) and relay.connected

    await eventually(new_protocol, 20, what="relay_protocol of the new session")
    assert relay.contexts == ["office"]


async def _started(rec: Any, call_id: str) -> bool:
    return call_id in (await rec.dump.remote())["started"]


async def test_backoff_reaches_the_connection_actors(make_client) -> None:
    backoff = Backoff(initial=0.07, factor=3.0, cap=0.9, jitter=0.1)
    relay = await make_client(backoff=backoff)
    (shard,) = (await relay.ray_stats())["connections"]
    expected = {"initial": 0.07, "factor": 3.0, "cap": 0.9, "jitter": 0.1, "first_jitter": 0.05}
    assert shard["backoff"] == expected


async def test_requests_wait_for_connect_and_late_handlers_are_refused(make_client, emulator) -> None:
    relay = await make_client(connect=False)
    # Made before connect(): it waits for the app, as the SDK queues it.
    early = asyncio.create_task(relay.receive(["early"]))
    await relay.connect()
    await asyncio.wait_for(early, 15)
    assert "early" in _session_of(emulator, relay.relay_protocol)["contexts"]

    async def late(call: Any) -> None:
        await call.hangup()

    with pytest.raises(ArgumentError, match="before connect"):
        relay.on_call(late)
    with pytest.raises(ArgumentError, match="before connect"):
        relay.on_message(late)

    emulator.core.config.durations["message"] = 30.0  # still on its way at the disconnect
    pending = await relay.send_message(to_number="+15550000009", from_number="+15550000001", body="late")
    await relay.disconnect()
    with pytest.raises(RelayError) as lost:
        await pending.wait(5)  # fails, rather than waiting for ever
    assert lost.value.failure == "closed"
    with pytest.raises(RelayError) as closed:
        await asyncio.wait_for(relay.execute("signalwire.ping", {}), 5)
    assert closed.value.failure == "closed"

    # Never connected: a clear error after request_timeout, not a hang.
    idle = await make_client(connect=False, request_timeout=0.3)
    with pytest.raises(RelayError, match="connect") as timed_out:
        await idle.execute("signalwire.ping", {})
    assert timed_out.value.failure == "timeout"


async def test_driver_dial_returns_a_full_call(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client(ray_options={"connections": 2})
    remote = await relay.dial([[PHONE]], handler=helpers.recording_handler(rec_name, plays=0, stay=True))
    assert remote.state == "answered" and remote.direction == "outbound"
    seen: list[str] = []
    remote.on("calling.call.play", lambda event: seen.append(event.params["state"]))
    # The SDK's verbs, with actions that resolve on the driver from the streamed events.
    play = await remote.play_tts("hello from the driver")
    finished = await play.wait(10)
    assert finished.params["state"] == "finished"
    assert seen[-1] == "finished"
    (sent,) = helpers.sent_requests(emulator, "calling.play")
    assert sent["control_id"] == play.control_id
    assert sent["play"] == [{"type": "tts", "params": {"text": "hello from the driver"}}]
    digits_done = asyncio.Event()
    result = await remote.send_digits("12", on_completed=lambda event: digits_done.set())
    assert result["code"] == "200"
    await asyncio.wait_for(digits_done.wait(), 10)
    assert [p["digits"] for p in helpers.sent_requests(emulator, "calling.send_digits")] == ["12"]
    # Commands go through the shard that owns the call (each shard has its own session).
    (call,) = [c for c in emulator.core.list_calls() if c["call_id"] == remote.call_id]
    owner = call["session"]
    for method in ("calling.play", "calling.send_digits"):
        assert {e["session"] for e in _requests_with_session(emulator, method)} == {owner}
    await remote.hangup()
    ended = await remote.wait_for_ended(timeout=10)
    assert ended.params["call_state"] == "ended"
    assert remote.state == "ended"
    await eventually(lambda: _done(rec, remote.call_id), 10, what="dial handler saw the end")


def _requests_with_session(emulator: Any, method: str) -> list[dict[str, Any]]:
    found = []
    for protocol, entries in emulator.core.journal.frames().items():
        for entry in entries:
            if entry["dir"] == "in" and entry["frame"].get("method") == method:
                found.append({"session": protocol, **(entry["frame"].get("params") or {})})
    return found


async def _done(rec: Any, call_id: str) -> bool:
    return call_id in (await rec.dump.remote())["done"]


# --- inside a handler ------------------------------------------------------------------


def _surface_handler(rec_name: str, other_settings: dict[str, Any]) -> Any:
    async def handler(call: Any) -> None:
        rec = helpers.recorder(rec_name)
        note = rec.note.remote
        try:
            await call.answer()
            deadline = time.monotonic() + 10
            # The proxy reads the shards' sessions every few seconds: poll, with a deadline.
            while not client.relay_protocol and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            note(("type", type(client).__name__))
            note(("project", client.project))
            note(("host", client.host))
            note(("protocol", client.relay_protocol))
            note(("connected", client.connected))
            note(("repr", repr(client)))
            note(("stats", sorted(client.stats())))
            try:
                client.token  # noqa: B018
                note(("token", "readable"))
            except AttributeError:
                note(("token", "hidden"))
            async with client as same:
                note(("aenter", same is client))
            await client.receive("sales")
            note(("contexts", client.contexts))
            # A client the handler builds itself: real and independent (its own session).
            other = RelayClient(**other_settings)
            async with other:
                note(("other", (type(other).__name__, other.relay_protocol, other.connected, other.contexts)))
            await call.hangup()
        except Exception as exc:
            note(("error", repr(exc)))
        finally:
            rec.finish.remote(call.call_id)

    return handler


async def test_handler_client_has_the_sdk_surface(make_client, emulator, recorder) -> None:
    global client
    rec_name, rec = recorder
    other_settings = {
        "project": emulator.project,
        "token": emulator.token,
        "host": emulator.host,
        "scheme": "ws",
        "contexts": ["elsewhere"],
    }
    client = await make_client(connect=False, on_call=_surface_handler(rec_name, other_settings))
    try:
        await client.connect()
        (call_id,) = emulator.core.inject_calls("office", 1)
        await eventually(lambda: _done(rec, call_id), 30, what="handler finished")
        protocol = client.relay_protocol
    finally:
        client = None
    notes = await _notes(rec)
    assert "error" not in notes, notes["error"]
    assert notes["type"] == "ActorSideClient"
    assert notes["project"] == emulator.project
    assert notes["host"] == emulator.host
    assert notes["protocol"] == protocol
    assert notes["connected"] is True
    assert emulator.token not in notes["repr"]
    assert {"calls", "pending_requests", "handler_tasks"} <= set(notes["stats"])
    assert notes["token"] == "hidden"
    assert notes["aenter"] is True
    # "sales" is one context, not five letters.
    assert notes["contexts"] == ["office", "sales"]
    assert _session_of(emulator, protocol)["contexts"] == ["office", "sales"]
    kind, other_protocol, other_connected, other_contexts = notes["other"]
    assert kind == "RelayClient"
    assert other_connected is True
    assert other_protocol and other_protocol != protocol
    assert other_contexts == ["elsewhere"]
