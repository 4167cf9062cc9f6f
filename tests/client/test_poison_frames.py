"""Poison frames pushed raw through the emulator's HTTP control API: the client answers
every one that has an id (read back from the emulator's journal) and carries on."""

from __future__ import annotations

from typing import Any

import aiohttp

from relay_actors.emulator.testing import wait_until

from .conftest import Harness


def _event_frame(frame_id: str, outer: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": frame_id, "method": "signalwire.event", "params": outer}


async def test_poison_frames_are_answered_and_the_client_goes_on(harness: Harness) -> None:
    client, emulator = harness.client, harness.emulator
    call = await harness.answered()
    protocol = client.relay_protocol
    poison = {
        # Outer params unreadable: the old decoder raised before the ack was built.
        "sw-poison-null": _event_frame("sw-poison-null", None),
        "sw-poison-list": _event_frame("sw-poison-list", [{"event_type": "calling.call.state"}]),
        "sw-poison-str": _event_frame("sw-poison-str", "calling.call.state"),
        # A state event for the live call with a list as call_state and a number as node_id.
        "sw-poison-state": _event_frame(
            "sw-poison-state",
            {
                "event_type": "calling.call.state",
                "params": {"call_id": call.call_id, "call_state": ["ended"], "node_id": 5},
            },
        ),
        "sw-poison-method": {"jsonrpc": "2.0", "id": "sw-poison-method", "method": 7, "params": {}},
    }
    async with aiohttp.ClientSession(base_url=emulator.control_url) as http:
        for frame in poison.values():
            async with http.post(f"/sessions/{protocol}/raw", json={"frame": frame}) as response:
                assert response.status == 200, await response.text()

    def answers() -> dict[str, dict[str, Any]]:
        """What the client sent back, by id, from the emulator's journal."""
        return {f.get("id"): f for f in harness.frames("in")}

    await wait_until(lambda: set(poison) <= set(answers()))
    found = answers()
    for frame_id in ("sw-poison-null", "sw-poison-list", "sw-poison-str", "sw-poison-state"):
        assert found[frame_id] == {"jsonrpc": "2.0", "id": frame_id, "result": {}}
    assert found["sw-poison-method"]["error"]["code"] == -32600
    stats = client.stats()
    assert stats["violation.invalid_params"] == 3 and stats["violation.invalid_field"] == 2
    assert stats["violation.invalid_frame"] == 1
    # Same socket, same session, and the call still works: the bad state did not end it.
    assert client.connected and client.relay_protocol == protocol and stats["reconnects"] == 0
    assert call.state == "answered" and call.node_id and isinstance(call.node_id, str)
    assert (await (await call.play_tts("still here")).wait(timeout=5)).params["state"] == "finished"
    assert (await call.hangup())["code"] == "200"
    second = await harness.answered()
    assert (await second.hangup())["code"] == "200"
