"""The HTTP control API, end to end over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import RawClient, wait_until


@pytest.fixture
async def http(emulator: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=emulator.control_url) as session:
        yield session


async def _post(http: aiohttp.ClientSession, path: str, body: dict | None = None, status: int = 200) -> dict:
    async with http.post(path, json=body or {}) as response:
        assert response.status == status, await response.text()
        return await response.json()


async def _get(http: aiohttp.ClientSession, path: str) -> dict:
    async with http.get(path) as response:
        assert response.status == 200
        return await response.json()


async def test_inject_calls_hangup_and_list(emulator: Emulator, client: RawClient, http) -> None:
    body = await _post(http, "/calls", {"context": "office", "count": 2, "from": "+1999", "to": "+1888"})
    assert len(body["call_ids"]) == 2
    offer = await client.wait_event("calling.call.receive", call_id=body["call_ids"][0])
    assert offer["device"]["params"] == {"from_number": "+1999", "to_number": "+1888"}
    await _post(http, f"/calls/{body['call_ids'][0]}/hangup", {"reason": "hangup"})
    await client.wait_event("calling.call.state", call_id=body["call_ids"][0], call_state="ended")
    await _post(http, "/calls/nope/hangup", status=404)
    calls = await _get(http, "/calls?state=ended")
    assert [c["call_id"] for c in calls["calls"]] == [body["call_ids"][0]]
    await _post(http, "/calls", {"context": "office", "count": 3, "rate": 100})
    await wait_until(lambda: len(client.events("calling.call.receive")) == 5)


async def test_messages_events_raw_frames(emulator: Emulator, client: RawClient, http) -> None:
    body = await _post(http, "/messages", {"context": "office", "body": "yo"})
    await client.wait_event("messaging.receive", message_id=body["message_ids"][0], body="yo")
    protocol = client.protocol
    await _post(
        http, f"/sessions/{protocol}/event", {"event_type": "calling.error", "params": {"code": "500"}}
    )
    await client.wait_event("calling.error", code="500")
    await _post(http, f"/sessions/{protocol}/raw", {"frame": "{not json"})
    await client.wait_frame(lambda f: f.get("unparseable") == "{not json")
    await _post(http, "/sessions/signalwire_unknown/drop", status=404)


async def test_sessions_stats_journal_masks_credentials(emulator: Emulator, client: RawClient, http) -> None:
    sessions = (await _get(http, "/sessions"))["sessions"]
    assert [(s["protocol"], s["contexts"], s["attached"]) for s in sessions] == [
        (client.protocol, ["office"], True)
    ]
    stats = await _get(http, "/stats")
    assert stats["sessions"] == 1
    assert stats["frames_in"] >= 2
    assert stats["unacked"] == {client.protocol: 0}
    journal = (await _get(http, f"/journal?session={client.protocol}"))["sessions"][client.protocol]
    connect = next(e for e in journal if e["frame"].get("method") == "signalwire.connect")
    assert connect["frame"]["params"]["authentication"]["token"] == "***"
    auth_event = next(e for e in journal if "authorization_state" in str(e["frame"]))
    assert auth_event["frame"]["params"]["params"]["authorization_state"] == "***"
    assert emulator.token not in str(journal)
    await _post(http, "/config", {"journal": False})
    await client.request("signalwire.ping", {})
    after = (await _get(http, f"/journal?session={client.protocol}"))["sessions"][client.protocol]
    assert len(after) == len(journal)


async def test_drop_disconnect_refuse_handshakes(emulator: Emulator, client_factory, http) -> None:
    client = await client_factory()
    assert (await _post(http, f"/sessions/{client.protocol}/drop"))["dropped"] is True
    await asyncio.wait_for(client.closed.wait(), 5)
    second = await client_factory()
    assert (await _post(http, f"/sessions/{second.protocol}/disconnect", {"restart": True}))["acked"] is True
    await asyncio.wait_for(second.closed.wait(), 5)
    await _post(http, "/handshakes/refuse", {"count": 1})
    with pytest.raises(Exception, match="503"):
        await client_factory(connect=False)
    await client_factory()  # the next handshake is accepted again


async def test_half_open_and_faults(emulator: Emulator, client: RawClient, http) -> None:
    protocol = client.protocol
    state = await _post(http, f"/sessions/{protocol}/half_open", {"answer_pings": False})
    assert state["answer_pings"] is False
    with pytest.raises(asyncio.TimeoutError):
        await client.call("signalwire.ping", {}, timeout=0.2)
    await _post(http, f"/sessions/{protocol}/half_open", {"answer_pings": True})
    await _post(http, f"/sessions/{protocol}/faults", {"drop_responses": 1})
    with pytest.raises(asyncio.TimeoutError):
        await client.call("signalwire.ping", {}, timeout=0.2)
    await _post(http, f"/sessions/{protocol}/faults", {"duplicate_events": True})
    await _post(http, f"/sessions/{protocol}/event", {"event_type": "calling.call.play", "params": {"n": 1}})
    await wait_until(lambda: len(client.events("calling.call.play")) == 2)
    await _post(http, f"/sessions/{protocol}/faults", {"duplicate_events": False, "reorder_events": True})
    for n in (2, 3):
        await _post(
            http, f"/sessions/{protocol}/event", {"event_type": "calling.call.play", "params": {"n": n}}
        )
    await wait_until(lambda: len(client.events("calling.call.play")) == 4)
    assert [e["n"] for e in client.events("calling.call.play")][2:] == [3, 2]
    await _post(http, f"/sessions/{protocol}/faults", {"reorder_events": False, "response_delay": 0.2})
    loop = asyncio.get_running_loop()
    started = loop.time()
    await client.request("signalwire.ping", {})
    assert loop.time() - started >= 0.15
    await _post(http, f"/sessions/{protocol}/faults", {"bogus": 1}, status=400)


async def test_config_credentials_jwt_and_flood(emulator: Emulator, http) -> None:
    config = await _post(http, "/config", {"durations": {"play": 1.5}, "dial_outcomes": {"+1": "busy"}})
    assert config["durations"]["play"] == 1.5
    assert config["dial_outcomes"] == {"+1": "busy"}
    await _post(http, "/config", {"dial_outcomes": {"+1": "maybe"}}, status=400)
    await _post(http, "/credentials", {"project": "p2", "token": "t2"})
    jwt = (await _post(http, "/jwt", {"project": "p2"}))["jwt"]
    client = await RawClient(emulator.url).open()
    try:
        await client.connect("p2", "t2")
        await client.close()
        client = await RawClient(emulator.url).open()
        result = await client.connect(jwt=jwt)
        await _post(http, f"/sessions/{result['protocol']}/flood", {"count": 500})
        await wait_until(lambda: len(client.events("calling.call.play")) == 500)
        await wait_until(lambda: not emulator.core.session(result["protocol"]).unacked)
    finally:
        await client.close()
