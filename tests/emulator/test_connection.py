"""Connect/auth, authorization state, resume with redelivery, disconnect, pings, half-open, contexts."""

from __future__ import annotations

import asyncio

import pytest

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import RawClient, RpcError, wait_until

AUTH_REQUIRED = {"signalwire_error_code": "AUTH_REQUIRED"}


async def test_connect_result_shape_and_authorization_state(emulator: Emulator, client_factory) -> None:
    client = await client_factory(connect=False)
    result = await client.connect(emulator.project, emulator.token, contexts=["office"])
    assert result["protocol"].startswith("signalwire_")
    assert {"identity", "session_restored", "nodeid", "master_nodeid", "authorization"} <= result.keys()
    assert "code" not in result
    assert result["session_restored"] is False
    event = await client.wait_event("signalwire.authorization.state")
    state = event["authorization_state"]
    left, sep, right = state.partition(":")
    assert sep and left and right
    assert emulator.core.credentials.check_authorization_state(state) == result["protocol"]


@pytest.mark.parametrize(
    "auth",
    [
        {"project": "p", "token": "wrong"},
        {"project": "", "token": ""},
        {"jwt_token": "not.a.jwt"},
        {"jwt_token": ""},
        None,
    ],
)
async def test_bad_credentials_are_rejected_then_closed(emulator: Emulator, client_factory, auth) -> None:
    client = await client_factory(connect=False)
    answer = await client.call("signalwire.connect", {"version": {}, "agent": "t", "authentication": auth})
    assert answer["error"]["code"] == -32000
    assert answer["error"]["message"] == "Authentication failed"
    assert answer["error"]["data"] == AUTH_REQUIRED
    await asyncio.wait_for(client.closed.wait(), 5)


async def test_jwt_accepted_and_tampered_jwt_rejected(emulator: Emulator, client_factory) -> None:
    client = await client_factory(connect=False)
    result = await client.connect(jwt=emulator.jwt)
    assert emulator.core.session(result["protocol"]).project == emulator.project
    header, payload, signature = emulator.jwt.split(".")
    forged = f"{header}.{payload}.{signature[:-2]}AA"
    other = await client_factory(connect=False)
    with pytest.raises(RpcError) as info:
        await other.connect(jwt=forged)
    assert info.value.error["data"] == AUTH_REQUIRED


async def test_request_before_connect_is_an_error(client_factory) -> None:
    client = await client_factory(connect=False)
    answer = await client.call("calling.answer", {"call_id": "x"})
    assert answer["error"]["code"] == -32000
    assert not client.closed.is_set()


async def test_resume_redelivers_unacked_and_queued_events_in_order(
    emulator: Emulator, client_factory
) -> None:
    first = await client_factory(contexts=["office"], auto_ack=False)
    protocol = first.protocol
    # Two events the client never acks, then a drop; two more while detached.
    emulator.core.push_event(protocol, "calling.call.play", {"n": 1})
    emulator.core.push_event(protocol, "calling.call.play", {"n": 2})
    await first.wait_event("calling.call.play", n=2)
    assert emulator.core.drop(protocol)
    await wait_until(lambda: not emulator.core.session(protocol).attached)
    emulator.core.push_event(protocol, "calling.call.play", {"n": 3})
    emulator.core.push_event(protocol, "calling.call.play", {"n": 4})
    second = await client_factory(connect=False)
    result = await second.connect(
        emulator.project, emulator.token, protocol=protocol, authorization_state=first.authorization_state
    )
    assert result["protocol"] == protocol
    assert result["session_restored"] is True
    await second.wait_event("calling.call.play", n=4)
    numbers = [e["n"] for e in second.events("calling.call.play")]
    assert numbers == [1, 2, 3, 4]
    await wait_until(lambda: not emulator.core.session(protocol).unacked)


async def test_resume_with_unknown_protocol_is_refused(emulator: Emulator, client_factory) -> None:
    client = await client_factory(connect=False)
    with pytest.raises(RpcError) as info:
        await client.connect(emulator.project, emulator.token, protocol="signalwire_nope")
    assert info.value.error["data"] == AUTH_REQUIRED


async def test_invalid_authorization_state_is_ignored(emulator: Emulator, client_factory) -> None:
    first = await client_factory()
    protocol = first.protocol
    await first.close()
    second = await client_factory(connect=False)
    result = await second.connect(
        emulator.project, emulator.token, protocol=protocol, authorization_state="bad:state"
    )
    assert result["session_restored"] is True
    assert emulator.core.stats_counters["invalid_authorization_states"] == 1


@pytest.mark.parametrize("restart", [False, True])
async def test_server_disconnect(emulator: Emulator, client_factory, restart: bool) -> None:
    client = await client_factory(contexts=["office"])
    protocol = client.protocol
    [call_id] = emulator.core.inject_calls("office")
    acked = await emulator.core.disconnect(protocol, restart=restart)
    assert acked is True
    frame = await client.wait_frame(lambda f: f.get("method") == "signalwire.disconnect")
    assert frame["params"] == {"restart": restart}
    await asyncio.wait_for(client.closed.wait(), 5)
    again = await client_factory(connect=False)
    if restart:
        with pytest.raises(RpcError):
            await again.connect(emulator.project, emulator.token, protocol=protocol)
        assert emulator.core.calls.calls[call_id].ended
    else:
        result = await again.connect(emulator.project, emulator.token, protocol=protocol)
        assert result["session_restored"] is True
        assert not emulator.core.calls.calls[call_id].ended


async def test_client_ping_answered_with_timestamp(client: RawClient) -> None:
    result = await client.request("signalwire.ping", {})
    assert isinstance(result["timestamp"], float)


async def test_server_pings_are_sent_and_acked(emulator: Emulator, client: RawClient) -> None:
    emulator.core.set_config({"ping_interval": 0.05})
    frame = await client.wait_frame(lambda f: f.get("method") == "signalwire.ping")
    assert frame["id"].startswith("sw-")
    await wait_until(lambda: emulator.core.stats_counters["pings_sent"] >= 2)
    await wait_until(lambda: len(emulator.core.session(client.protocol).pending_requests) <= 1)


async def test_half_open_stops_pings_and_everything(emulator: Emulator, client: RawClient) -> None:
    protocol = client.protocol
    emulator.core.set_half_open(protocol, answer_pings=False)
    with pytest.raises(asyncio.TimeoutError):
        await client.call("signalwire.ping", {}, timeout=0.3)
    emulator.core.set_half_open(protocol, answer_pings=True, silent=True)
    emulator.core.push_event(protocol, "calling.call.play", {"n": "silent"})
    with pytest.raises(TimeoutError):
        await client.wait_event("calling.call.play", timeout=0.3)
    assert not client.closed.is_set()
    emulator.core.set_half_open(protocol, silent=False)
    await client.wait_event("calling.call.play", n="silent")


async def test_receive_unreceive_and_402(emulator: Emulator, client: RawClient) -> None:
    session = emulator.core.session(client.protocol)
    result = await client.request("signalwire.receive", {"contexts": ["sales", "billing"]})
    assert result == {"code": "200", "message": "Receiving events"}
    assert session.contexts == {"office", "sales", "billing"}
    emulator.core.inject_calls("sales")
    await client.wait_event("calling.call.receive", context="sales")
    result = await client.request("signalwire.unreceive", {"contexts": ["sales"]})
    assert result == {"code": "200", "message": "Unreceiving events"}
    assert "sales" not in session.contexts
    emulator.core.set_config({"receive_402": ["premium"]})
    result = await client.request("signalwire.receive", {"contexts": ["premium"]})
    assert result["code"] == "402"
    assert "premium" not in session.contexts
