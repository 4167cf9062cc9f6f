"""The HTTP control API, end to end over HTTP."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import pytest

from relay_actors.emulator import Emulator, EmulatorProcess
from relay_actors.emulator.control import allowed_host, check_control_bind
from relay_actors.emulator.load import run_load
from relay_actors.emulator.testing import RawClient, wait_until
from relay_actors.errors import ConfigError


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


# --- guards: bind, token, Host, JSON bodies ------------------------------------------------------


@pytest.mark.parametrize(
    "kw", [{"host": "0.0.0.0"}, {"control_host": "0.0.0.0"}, {"control_host": "192.0.2.7"}]
)
def test_non_loopback_control_bind_without_a_token_is_refused(kw: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        Emulator(**kw)
    assert "--control-token" in str(info.value) and "RELAY_EMULATOR_CONTROL_TOKEN" in str(info.value)
    # With a token it is allowed (checked here without listening beyond loopback).
    Emulator(**kw, control_token="s3cret")
    check_control_bind("127.0.0.1", None)
    check_control_bind("localhost", None)


def test_cli_refuses_a_non_loopback_control_bind_without_a_token() -> None:
    with pytest.raises(RuntimeError, match="not loopback"):
        EmulatorProcess(["--host", "0.0.0.0"]).start()


@pytest.mark.parametrize(
    ("header", "bind", "allowed"),
    [
        ("127.0.0.1:8080", "127.0.0.1", True),
        ("localhost:8080", "127.0.0.1", True),
        ("[::1]:8080", "127.0.0.1", True),
        ("10.1.2.3:8080", "10.1.2.3", True),  # the bound address
        ("10.1.2.4:8080", "10.1.2.3", False),
        ("10.1.2.4:8080", "0.0.0.0", True),  # any IP literal when bound to all addresses
        ("rebind.attacker.example:8080", "0.0.0.0", False),
        ("rebind.attacker.example", "127.0.0.1", False),
        ("127.0.0.1.nip.io", "127.0.0.1", False),
        ("", "127.0.0.1", False),
    ],
)
def test_allowed_hosts(header: str, bind: str, allowed: bool) -> None:
    assert allowed_host(header, bind) is allowed


async def test_host_header_is_checked(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """Old code: answered any Host, so a page on a rebound DNS name could drive it."""
    for host in ("rebind.attacker.example", f"evil.example:{emulator.port}", "127.0.0.1.nip.io"):
        async with http.get("/info", headers={"Host": host}) as response:
            assert response.status == 403
            body = await response.json()
            assert "not allowed" in body["error"] and emulator.token not in str(body)
        async with http.post("/calls", json={"context": "x"}, headers={"Host": host}) as response:
            assert response.status == 403
    assert emulator.core.stats()["call_state_transitions"].get("created", 0) == 0
    port = emulator.control_url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]"):
        async with http.get("/health", headers={"Host": host}) as response:
            assert response.status == 200


@pytest.mark.parametrize(
    ("data", "headers", "status"),
    [
        (b'{"context": "x"}', {"Content-Type": "text/plain"}, 415),
        (b"context=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        (b'{"context": "x"}', {}, 415),
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b'["x"]', {"Content-Type": "application/json"}, 400),
        (b'"x"', {"Content-Type": "application/json"}, 400),
    ],
)
async def test_post_bodies_must_be_json_objects(
    emulator: Emulator, http: aiohttp.ClientSession, data: bytes, headers: dict[str, str], status: int
) -> None:
    """Old code: a text/plain body (what a cross-site form can send without a preflight) was taken."""
    async with http.post("/calls", data=data, headers=headers) as response:
        assert response.status == status
        assert response.content_type == "application/json"
        message = (await response.json())["error"]
        assert ("application/json" in message) if status == 415 else ("JSON" in message)
    assert emulator.core.stats()["call_state_transitions"].get("created", 0) == 0
    # A JSON object is taken, and so is an empty JSON body on operations with optional fields.
    async with http.post("/calls", json={"context": "x"}) as response:
        assert response.status == 200
    async with http.post("/handshakes/refuse", data=b"", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200 and (await r.json()) == {"refuse_handshakes": 1}


async def test_token_required_as_bearer_when_set() -> None:
    token = "ctl-" + "x" * 20
    async with (
        Emulator(ping_interval=0, control_token=token) as emu,
        aiohttp.ClientSession(base_url=emu.control_url) as http,
    ):
        assert emu.info()["control_token"] == token
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": token},
            {"Authorization": f"Basic {token}"},
        ):
            async with http.get("/info", headers=headers) as response:
                assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
                assert token not in await response.text()
            async with http.post("/calls", json={"context": "x"}, headers=headers) as response:
                assert response.status == 401
        assert emu.core.stats()["call_state_transitions"].get("created", 0) == 0
        auth = {"Authorization": f"Bearer {token}"}
        async with http.get("/stats", headers=auth) as response:
            assert response.status == 200
        # The Host check comes first, even with the right token.
        async with http.get("/stats", headers={**auth, "Host": "rebind.attacker.example"}) as response:
            assert response.status == 403
        # The load generator takes the token (nobody subscribes to "load": calls end at once).
        out = io.StringIO()
        counts = await run_load(
            emu.control_url, rate=100, total=3, context="load", timeout=10, control_token=token, out=out
        )
        assert counts["created"] == 3 and counts["ended"] == 3
        with pytest.raises(aiohttp.ClientResponseError) as info:
            await run_load(emu.control_url, rate=100, total=1, context="load", timeout=5, out=out)
        assert info.value.status == 401
    # Without a token, loopback needs none (the default the test helpers use).
    assert Emulator().control_token is None
