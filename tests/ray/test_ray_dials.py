"""Dials on Ray: a dial nobody takes any more leaves no answered leg and no record."""

from __future__ import annotations

from typing import Any

import pytest
import ray_helpers as helpers
from ray_helpers import eventually

from relay_actors import RelayError


def phone(number: str) -> dict[str, Any]:
    return {"type": "phone", "params": {"to_number": number, "from_number": "+15550000000"}}


async def test_abandoned_serial_dial_leaves_no_orphan_leg(make_client, emulator) -> None:
    """The dial times out in a CallActor during the first group; the server then rings the
    next one, whose leg would be answered and left up if nobody ended it."""
    relay = await make_client(on_call=helpers.recording_handler("unused"))
    emulator.core.set_config({"durations": {"ring": 0.3, "answer": 0.3}})
    with pytest.raises(RelayError) as info:
        await relay.dial([[phone("+1001")], [phone("+1002")]], tag="ser", dial_timeout=0.4)
    assert info.value.failure == "dial_timeout"

    async def all_ended() -> Any:
        legs = [c for c in emulator.core.list_calls() if c["tag"] == "ser"]
        second = any(c["device"] == phone("+1002") for c in legs)
        return second and all(c["state"] == "ended" for c in legs)

    await eventually(all_ended, 15, what="every leg of the abandoned dial ended")
    assert {c["end_reason"] for c in emulator.core.list_calls() if c["tag"] == "ser"} == {"cancel"}

    async def forgotten() -> Any:
        shards = (await relay.ray_stats())["connections"]
        return (
            all(s["pending_dials"] == 0 for s in shards)
            and sum(s.get("dial_orphans_ended", 0) for s in shards) == 1
        )

    await eventually(forgotten, 10, what="the dial forgotten, its late leg ended by the runtime")
