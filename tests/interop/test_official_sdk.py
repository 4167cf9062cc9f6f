"""The official SignalWire SDK (``signalwire-sdk``), unchanged, against the emulator over wss://.

The SDK allows one connected client per process: every test disconnects its client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from signalwire.relay import RelayClient
from signalwire.relay.client import RelayError

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def make_client(wss_emulator: Emulator) -> AsyncIterator[Callable[..., RelayClient]]:
    clients: list[RelayClient] = []

    def make(**kw: object) -> RelayClient:
        kw.setdefault("project", wss_emulator.project)
        kw.setdefault("token", wss_emulator.token)
        client = RelayClient(host=wss_emulator.host, **kw)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.disconnect()


def _session(emu: Emulator, client: RelayClient):
    return emu.core.session(client.relay_protocol)


async def test_connect_with_token_and_with_jwt(wss_emulator: Emulator, make_client) -> None:
    client = make_client(contexts=["office"])
    await client.connect()
    assert client.relay_protocol.startswith("signalwire_")
    assert _session(wss_emulator, client).contexts == {"office"}
    await client.disconnect()
    jwt_client = make_client(project=None, token=None, jwt_token=wss_emulator.jwt)
    await jwt_client.connect()
    assert jwt_client.relay_protocol.startswith("signalwire_")


async def test_bad_token_is_rejected(wss_emulator: Emulator, make_client) -> None:
    client = make_client(token="PTwrong")
    with pytest.raises(RelayError) as info:
        await client.connect()
    assert info.value.code == -32000


async def test_inbound_answer_play_hangup(wss_emulator: Emulator, make_client) -> None:
    client = make_client(contexts=["office"])
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @client.on_call
    async def handle(call) -> None:
        await call.answer()
        action = await call.play_tts("Welcome")
        event = await action.wait(timeout=5)
        await call.hangup()
        ended = await call.wait_for_ended(timeout=5)
        done.set_result(f"{event.params['state']}/{ended.params['end_reason']}")

    await client.connect()
    wss_emulator.core.inject_calls("office")
    assert await asyncio.wait_for(done, 10) == "finished/hangup"


async def test_dial_answered_and_failed(wss_emulator: Emulator, make_client) -> None:
    wss_emulator.core.set_config({"dial_outcomes": {"+15550000002": "busy"}})
    client = make_client()
    await client.connect()
    call = await client.dial(
        [[{"type": "phone", "params": {"from_number": "+15551110000", "to_number": "+15550000001"}}]],
        dial_timeout=10,
    )
    assert call.state == "answered"
    assert call.call_id in wss_emulator.core.calls.calls
    await call.hangup()
    await call.wait_for_ended(timeout=5)
    with pytest.raises(RelayError, match="Dial failed"):
        await client.dial(
            [[{"type": "phone", "params": {"from_number": "+15551110000", "to_number": "+15550000002"}}]],
            dial_timeout=10,
        )


async def test_play_and_collect_digits_and_record(wss_emulator: Emulator, make_client) -> None:
    client = make_client()
    await client.connect()
    call = await client.dial([[{"type": "phone", "params": {"from_number": "+1555", "to_number": "+1666"}}]])
    collect = await call.prompt_tts("Enter PIN", {"digits": {"max": 4, "terminators": "#"}})
    event = await collect.wait(timeout=5)
    assert event.params["result"]["type"] == "digit"
    assert event.params["result"]["params"]["digits"] == "1234"
    record = await call.record({"format": "wav"})
    recorded = await record.wait(timeout=5)
    assert recorded.params["state"] == "finished"
    assert recorded.params["record"]["url"].endswith(".wav")
    fax = await call.send_fax("https://example.invalid/doc.pdf")
    assert (await fax.wait(timeout=5)).params["fax"]["type"] == "finished"
    await call.hangup()


async def test_send_message_delivered_and_inbound_message(wss_emulator: Emulator, make_client) -> None:
    client = make_client(contexts=["office"])
    inbound: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @client.on_message
    async def on_message(message) -> None:
        inbound.set_result(message.body)

    await client.connect()
    message = await client.send_message(to_number="+15551110001", from_number="+15557650002", body="hi")
    event = await message.wait(timeout=5)
    assert event.params["message_state"] == "delivered"
    wss_emulator.core.messaging.inject("office", body="hello there")
    assert await asyncio.wait_for(inbound, 5) == "hello there"


async def test_resume_after_abrupt_drop(wss_emulator: Emulator, make_client) -> None:
    client = make_client(contexts=["office"])
    runner = asyncio.get_running_loop().create_task(client._run_forever())
    try:
        await wait_until(lambda: client.relay_protocol, timeout=5)
        protocol = client.relay_protocol
        call_holder: list = []

        @client.on_call
        async def handle(call) -> None:
            await call.answer()
            call_holder.append(call)

        wss_emulator.core.inject_calls("office")
        await wait_until(lambda: call_holder and call_holder[0].state == "answered", timeout=5)
        assert wss_emulator.core.drop(protocol)
        await wait_until(lambda: not wss_emulator.core.session(protocol).attached, timeout=5)
        # An event produced while detached is queued and redelivered after the resume.
        call = call_holder[0]
        wss_emulator.core.push_event(
            protocol,
            "calling.call.state",
            {
                "call_id": call.call_id,
                "node_id": call.node_id,
                "tag": "",
                "call_state": "answered",
                "direction": "inbound",
                "device": call.device,
            },
        )
        await wait_until(lambda: wss_emulator.core.session(protocol).attached, timeout=10)
        assert client.relay_protocol == protocol
        assert wss_emulator.core.stats_counters["resumes"] == 1
        await wait_until(lambda: not wss_emulator.core.session(protocol).unacked, timeout=5)
        action = await call.play_tts("still here")
        assert (await action.wait(timeout=5)).params["state"] == "finished"
        await call.hangup()
    finally:
        await client.disconnect()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_disconnect_with_restart_gives_a_new_protocol(wss_emulator: Emulator, make_client) -> None:
    client = make_client(contexts=["office"])
    runner = asyncio.get_running_loop().create_task(client._run_forever())
    try:
        await wait_until(lambda: client.relay_protocol, timeout=5)
        first = client.relay_protocol
        assert await wss_emulator.core.disconnect(first, restart=False)
        await wait_until(lambda: wss_emulator.core.stats_counters["resumes"] == 1, timeout=10)
        # The server resumed; wait until the SDK has read the result too (it starts its ping
        # task after). A restart sent while its connect is in flight is undone by the result
        # (the SDK sets the protocol from it after clearing it), and the SDK then resumes the
        # retired protocol forever: an SDK 3.7.5 race, not this test's subject (ours falls
        # back to a fresh session when a resume is refused: tests/protocol/test_reconnect.py).
        await wait_until(lambda: client._ping_task is not None, timeout=10)
        assert client.relay_protocol == first
        assert await wss_emulator.core.disconnect(first, restart=True)
        await wait_until(lambda: client.relay_protocol and client.relay_protocol != first, timeout=10)
        assert first in wss_emulator.core.retired_protocols
        assert wss_emulator.core.session(client.relay_protocol).contexts == {"office"}
    finally:
        await client.disconnect()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
