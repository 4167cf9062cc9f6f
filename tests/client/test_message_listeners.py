"""Message listeners in the SDK's order (found by the migration test, tests/ray/test_ray_migration.py).

The official SDK awaits a Message's async listener before the message's next state reaches
the listeners, before ``on_completed`` and before ``wait()`` returns; an app that records the
states in an async listener can read them once ``wait()`` is done.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relay_actors import RelayEvent

from .conftest import Harness

pytestmark = pytest.mark.timeout(30)


async def test_async_listener_finishes_before_the_next_state_and_completion(harness: Harness) -> None:
    seen: list[Any] = []
    message = await harness.client.send_message(
        to_number="+15550009999",
        from_number="+15550000001",
        body="hi",
        on_completed=lambda event: seen.append("completed"),
    )

    async def slow(event: RelayEvent) -> None:
        seen.append(("start", event.params["message_state"]))
        for _ in range(3):  # other events of the socket are handled meanwhile
            await asyncio.sleep(0.01)
        seen.append(("end", event.params["message_state"]))

    message.on(slow)
    message.on(lambda event: seen.append(("plain", event.params["message_state"])))
    final = await message.wait(timeout=10)
    assert final.params["message_state"] == "delivered"
    states = ["queued", "initiated", "sent", "delivered"]
    expected: list[Any] = []
    for state in states:
        expected += [("start", state), ("end", state), ("plain", state)]
    assert seen == [*expected, "completed"]
    assert message.state == "delivered" and message.is_done


async def test_a_failing_async_listener_does_not_stop_the_others(harness: Harness) -> None:
    seen: list[str] = []
    message = await harness.client.send_message(
        to_number="+15550009999", from_number="+15550000001", body="hi"
    )

    async def broken(event: RelayEvent) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("listener failure on purpose")

    message.on(broken)
    message.on(lambda event: seen.append(event.params["message_state"]))
    await message.wait(timeout=10)
    assert seen == ["queued", "initiated", "sent", "delivered"]
