"""The CallActor's event streams to the driver (driver-sent messages, driver-dialled
calls): fetched by number, trimmed by the next fetch, bounded. No Ray needed."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from relay_actors.ray_runtime.call_actor_core import EventStream, forget_oldest


async def test_fetch_by_number_trims_what_was_fetched() -> None:
    stream = EventStream()
    stream.add("a")
    stream.add("b")
    assert await stream.fetch(0, 1.0) == (2, ["a", "b"])
    stream.add("c", done=True)
    assert await stream.fetch(2, 1.0) == (3, ["c"])
    assert stream.events == ["c"] and stream.base == 2
    # Done: a fetch returns at once, even with nothing new.
    assert await asyncio.wait_for(stream.fetch(3, 30.0), 1.0) == (3, [])


async def test_fetch_waits_for_the_next_event() -> None:
    stream = EventStream()
    # Added once the fetch is waiting (the first time it yields to the loop).
    asyncio.get_running_loop().call_soon(stream.add, "x")
    assert await asyncio.wait_for(stream.fetch(0, 30.0), 1.0) == (1, ["x"])
    assert await stream.fetch(1, 0.01) == (1, [])  # a timeout is an empty answer


async def test_bounded_the_oldest_go_and_the_numbers_stay_right() -> None:
    stream = EventStream(keep=3)
    for item in "abcde":
        stream.add(item)
    assert stream.dropped == 2
    # A driver that had none gets what is left, and the right number to go on from.
    assert await stream.fetch(0, 1.0) == (5, ["c", "d", "e"])
    streams = {f"m{i}": EventStream() for i in range(5)}
    ordered = OrderedDict(streams)
    assert forget_oldest(ordered, 3) == 2
    assert list(ordered) == ["m2", "m3", "m4"]
