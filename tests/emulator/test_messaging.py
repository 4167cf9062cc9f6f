"""messaging.send state progressions, the states-before-result option, inbound messages."""

from __future__ import annotations

import pytest

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import RawClient

SEND = {"to_number": "+15551110001", "from_number": "+15557650002", "body": "hi"}


@pytest.mark.parametrize(
    ("outcome", "states"),
    [
        ("delivered", ["queued", "initiated", "sent", "delivered"]),
        ("undelivered", ["queued", "initiated", "undelivered"]),
        ("failed", ["queued", "initiated", "failed"]),
    ],
)
async def test_send_state_progression(emulator: Emulator, client: RawClient, outcome, states) -> None:
    emulator.core.set_config({"message_outcomes": {"+15551110001": outcome}})
    result = await client.request("messaging.send", {"context": "office", **SEND})
    assert result["code"] == "200"
    message_id = result["message_id"]
    last = await client.wait_event("messaging.state", message_id=message_id, message_state=states[-1])
    assert [e["message_state"] for e in client.events("messaging.state")] == states
    assert ("reason" in last) == (outcome != "delivered")


async def test_own_protocol_is_a_context(emulator: Emulator, client: RawClient, client_factory) -> None:
    bystander = await client_factory(contexts=["elsewhere"])
    result = await client.request("messaging.send", {"context": client.protocol, **SEND})
    await client.wait_event("messaging.state", message_id=result["message_id"], message_state="delivered")
    assert bystander.events("messaging.state") == []


async def test_states_before_result_option(emulator: Emulator, client: RawClient) -> None:
    emulator.core.set_config({"message_states_before_result": True})
    answer = await client.call("messaging.send", {"context": "office", **SEND})
    answer_index = client.frames.index(answer)
    states = [
        i for i, f in enumerate(client.frames) if f.get("params", {}).get("event_type") == "messaging.state"
    ]
    assert len(states) == 4
    assert max(states) < answer_index


async def test_inbound_message(emulator: Emulator, client: RawClient) -> None:
    message_id = emulator.core.messaging.inject("office", body="photo", media=["https://m.invalid/1.jpg"])
    event = await client.wait_event("messaging.receive", message_id=message_id)
    assert event["message_state"] == "received"
    assert event["direction"] == "inbound"
    assert event["media"] == ["https://m.invalid/1.jpg"]
    assert emulator.core.messaging.inject("nobody-listens") is None
