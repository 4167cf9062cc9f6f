"""The Ray runtime end to end: real Ray, the emulator over real WebSockets on 127.0.0.1.

Handlers run in CallActors; what they see is reported to a Recorder test actor and
compared with what the emulator sent (its journal).
"""

from __future__ import annotations

from typing import Any

import ray
import ray_helpers as helpers
from ray_helpers import eventually, relay_actor_names

from relay_actors.errors import RelayError
from relay_actors.ray_runtime import kvstore

PHONE = {"type": "phone", "params": {"from_number": "+15550000001", "to_number": "+15550000002"}}

#: The module-level client the handlers below refer to: inside a CallActor it is the proxy.
client: Any = None


async def _recorded(rec: Any) -> dict[str, Any]:
    return await rec.dump.remote()


async def test_inbound_calls_run_in_call_actors(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client(on_call=helpers.recording_handler(rec_name, plays=2))
    assert relay.relay_protocol.startswith("signalwire_")
    call_ids = emulator.core.inject_calls("office", 10)

    async def all_done() -> Any:
        dump = await _recorded(rec)
        return dump if set(dump["done"]) == set(call_ids) else None

    dump = await eventually(all_done, 20, what="10 handlers finished")
    # Each handler ran once, in a CallActor process (not the driver), and both actors got calls.
    assert all(len(dump["started"][cid]) == 1 for cid in call_ids)
    pids = {dump["started"][cid][0]["pid"] for cid in call_ids}
    stats = await relay.ray_stats()
    assert pids == {a["pid"] for a in stats["call_actors"]}, "calls should spread over both CallActors"
    # Every event the emulator sent reached its handler exactly once, in order.
    sent = helpers.sent_events(emulator)
    for cid in call_ids:
        assert dump["events"][cid] == sent[cid], cid
        assert ("calling.call.state", "answered") in sent[cid]
        assert sent[cid].count(("calling.call.play", "finished")) == 2
    assert not dump["errors"]
    await eventually(lambda: _no_live_calls(emulator), 10, what="calls ended")
    assert all(c["end_reason"] == "hangup" for c in emulator.core.list_calls())
    await eventually(lambda: _router_idle(relay), 10, what="router back to 0 calls")
    shard = stats["connections"][0]
    assert shard["offers_admitted"] == 10
    assert sum(a.get("duplicate_events", 0) for a in stats["call_actors"]) == 0


async def _no_live_calls(emulator: Any) -> bool:
    return not helpers.live_calls(emulator)


async def _router_idle(relay: Any) -> bool:
    stats = await relay.ray_stats()
    return stats["router"]["calls"] == 0 and all(s["active_calls"] == 0 for s in stats["connections"])


def _proxy_handler(rec_name: str) -> Any:
    async def handler(call: Any) -> None:
        rec = helpers.recorder(rec_name)
        await call.answer()
        rec.note.remote(("client", type(client).__name__))
        leg = await client.dial([[PHONE]])
        rec.note.remote(("leg", leg.call_id, leg.state))
        message = await client.send_message(to_number="+15550000009", from_number="+15550000001", body="hi")
        await message.wait(5)
        rec.note.remote(("message", message.message_id, message.state))
        await leg.hangup()
        await call.hangup()
        rec.finish.remote(call.call_id)

    return handler


async def test_handler_dials_and_messages_through_the_proxy(make_client, emulator, recorder) -> None:
    global client
    rec_name, rec = recorder
    client = await make_client(connect=False, on_call=_proxy_handler(rec_name))
    try:
        await client.connect()
        (call_id,) = emulator.core.inject_calls("office", 1)
        dump = await eventually(
            lambda: _done_with(rec, call_id), 15, what="handler with dial and message finished"
        )
    finally:
        client = None
    notes = dict((n[0], n[1:]) for n in dump["notes"])
    assert notes["client"] == ("ActorSideClient",)
    leg_id, leg_state = notes["leg"]
    assert leg_state == "answered"
    assert notes["message"][1] == "delivered"
    calls = {c["call_id"]: c for c in emulator.core.list_calls()}
    assert calls[leg_id]["direction"] == "outbound"
    await eventually(lambda: _no_live_calls(emulator), 10, what="both legs ended")
    assert len(helpers.sent_requests(emulator, "calling.dial")) == 1
    assert len(helpers.sent_requests(emulator, "messaging.send")) == 1


async def _done_with(rec: Any, call_id: str) -> Any:
    dump = await rec.dump.remote()
    return dump if call_id in dump["done"] else None


async def test_driver_dial_with_handler(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client()
    remote = await relay.dial([[PHONE]], handler=helpers.recording_handler(rec_name, plays=1, hangup=False))
    dump = await eventually(lambda: _done_with(rec, remote.call_id), 15, what="dial handler finished")
    assert dump["started"][remote.call_id][0]["pid"] in {
        a["pid"] for a in (await relay.ray_stats())["call_actors"]
    }
    assert ("calling.call.play", "finished") in dump["events"][remote.call_id]
    result = await remote.hangup()
    assert result["code"] == "200"
    await eventually(lambda: _no_live_calls(emulator), 10, what="dialled call ended")
    # A verb for a call that has ended fails as a RelayError from the service.
    try:
        silence = [{"type": "silence", "params": {"duration": 1}}]
        await remote.execute("play", {"control_id": "x", "play": silence})
    except RelayError:
        pass
    else:
        raise AssertionError("a verb on an ended call should fail")


def _message_handler(rec_name: str) -> Any:
    async def on_message(message: Any) -> None:
        helpers.recorder(rec_name).note.remote(("message", message.message_id, message.body))

    return on_message


async def test_inbound_message_and_receive_unreceive(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client(
        on_call=helpers.recording_handler(rec_name, plays=0), on_message=_message_handler(rec_name)
    )
    message_id = emulator.core.messaging.inject("office", body="hello actors")
    assert message_id

    async def got_message() -> Any:
        return [n for n in (await rec.dump.remote())["notes"] if n[0] == "message"]

    (note,) = await eventually(got_message, 10, what="on_message ran")
    assert note[1:] == (message_id, "hello actors")

    # A context received later reaches the handlers; after unreceive nobody gets it.
    assert emulator.core.inject_calls("sales", 1)
    await relay.receive(["sales"])
    (sales_call,) = emulator.core.inject_calls("sales", 1)
    await eventually(lambda: _done_with(rec, sales_call), 10, what="sales call handled")
    await relay.unreceive(["sales"])
    (late,) = emulator.core.inject_calls("sales", 1)
    await eventually(lambda: _ended(emulator, late), 5, what="unreceived context refused")
    assert late not in (await rec.dump.remote())["started"]
    session = emulator.core.list_sessions()[0]
    assert "sales" not in session["contexts"]


async def _ended(emulator: Any, call_id: str) -> bool:
    return any(c["call_id"] == call_id and c["state"] == "ended" for c in emulator.core.list_calls())


async def test_two_shards_share_the_offers(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client(
        on_call=helpers.recording_handler(rec_name, plays=1), ray_options={"connections": 2}
    )
    sessions = emulator.core.list_sessions()
    assert len([s for s in sessions if s["attached"]]) == 2
    call_ids = emulator.core.inject_calls("office", 20)

    async def all_done() -> Any:
        dump = await rec.dump.remote()
        return dump if set(dump["done"]) >= set(call_ids) else None

    dump = await eventually(all_done, 20, what="20 handlers finished")
    by_session = {c["session"] for c in emulator.core.list_calls()}
    assert len(by_session) == 2, "offers should go to both sessions"
    stats = await relay.ray_stats()
    offers = [s.get("offers_admitted", 0) for s in stats["connections"]]
    assert sorted(offers) == [10, 10]
    sent = helpers.sent_events(emulator)
    assert all(dump["events"][cid] == sent[cid] for cid in call_ids)
    await eventually(lambda: _router_idle(relay), 10, what="router back to 0 calls")


async def test_disconnect_stops_every_actor_and_deletes_credentials(make_client, app_name) -> None:
    relay = await make_client(ray_options={"connections": 2})
    names = relay_actor_names(app_name)
    assert sorted(names) == sorted(
        [f"relay:{app_name}:router", f"relay:{app_name}:connection:0", f"relay:{app_name}:connection:1"]
        + [f"relay:{app_name}:call:{i}" for i in range(2)]
    )
    secrets = kvstore.secrets_namespace(kvstore.get_sync(kvstore.record_key(app_name)))
    assert kvstore.get_sync("credentials", namespace=secrets)
    assert {"shard/0/resume", "shard/1/resume"} <= set(kvstore.keys_sync("shard/", namespace=secrets))
    await relay.disconnect()
    assert relay_actor_names(app_name) == []
    assert kvstore.get_sync(kvstore.record_key(app_name)) is None
    assert kvstore.keys_sync("", namespace=secrets) == []
    assert ray.is_initialized()
