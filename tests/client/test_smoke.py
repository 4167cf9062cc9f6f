"""End-to-end flows of RelayClient against the emulator over real WebSockets."""

from __future__ import annotations

import asyncio

import pytest

from relay_actors import Call, RelayClient, RelayError
from relay_actors.emulator import Emulator

PHONE = {"type": "phone", "params": {"from_number": "+15550000001", "to_number": "+15550000002"}}


async def test_inbound_answer_play_hangup(emulator: Emulator, make_client) -> None:
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    client: RelayClient = await make_client()

    @client.on_call
    async def handle(call: Call) -> None:
        await call.answer()
        play = await call.play_tts("Hello")
        event = await play.wait(timeout=5)
        await call.hangup()
        ended = await call.wait_for_ended(timeout=5)
        done.set_result(f"{event.params['state']}/{ended.params['end_reason']}/{call.context}")

    (call_id,) = emulator.core.inject_calls("office", 1)
    assert await asyncio.wait_for(done, 5) == "finished/hangup/office"
    assert call_id not in client._host.calls


async def test_dial_and_message(emulator: Emulator, make_client) -> None:
    client: RelayClient = await make_client()
    call = await client.dial([[PHONE]], dial_timeout=5)
    assert call.state == "answered" and call.direction == "outbound" and call.call_id
    await call.hangup()
    await call.wait_for_ended(timeout=5)
    message = await client.send_message(to_number="+15550000002", from_number="+15550000001", body="hi")
    final = await message.wait(timeout=5)
    assert final.params["message_state"] == "delivered" and message.state == "delivered"


async def test_call_gone_is_not_an_error(emulator: Emulator, make_client) -> None:
    client: RelayClient = await make_client()
    call = await client.dial([[PHONE]], dial_timeout=5)
    emulator.core.hangup(call.call_id)
    await call.wait_for_ended(timeout=5)
    assert await call._execute("answer") == {}
    action = await call.play_tts("late")
    assert action.is_done and action.result is not None and action.result.event_type == ""
    # The raw execute() does not hide it: 410 is a RelayError there.
    with pytest.raises(RelayError) as info:
        await client.execute("calling.answer", {"call_id": call.call_id, "node_id": call.node_id})
    assert info.value.call_gone and info.value.code in (404, 410)
