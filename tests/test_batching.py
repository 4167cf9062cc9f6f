"""The adaptive batcher: group commit per loop iteration, coalescing while in flight, no timers."""

from __future__ import annotations

import asyncio

import pytest

from relay_actors.ray_runtime.batching import Batcher


class Link:
    """A fake peer whose sends complete when the test says so (a real hop is a Ray call)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gates: list[asyncio.Future[None]] = []

    async def send(self, batch: list[int]) -> None:
        self.batches.append(batch)
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        await gate

    def release(self) -> None:
        for gate in self.gates:
            if not gate.done():
                gate.set_result(None)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_items_of_one_iteration_leave_together_and_at_once() -> None:
    link = Link()
    batcher: Batcher[int] = Batcher(link.send)
    for i in range(3):
        batcher.put(i)
    assert link.batches == []  # not yet: the end of this iteration
    await settle()
    assert link.batches == [[0, 1, 2]]
    link.release()
    await batcher.drain(1)


async def test_items_arriving_while_in_flight_coalesce_in_order() -> None:
    link = Link()
    batcher: Batcher[int] = Batcher(link.send)
    batcher.put(0)
    await settle()
    for i in range(1, 50):
        batcher.put(i)
        await asyncio.sleep(0)  # separate iterations: still one next batch
    assert link.batches == [[0]]
    link.release()
    await settle()
    assert link.batches == [[0], list(range(1, 50))]
    link.release()
    await batcher.drain(1)
    assert batcher.stats()["items"] == 50 and batcher.stats()["sends"] == 2


async def test_max_batch_splits_and_keeps_order() -> None:
    sent: list[list[int]] = []

    async def send(batch: list[int]) -> None:
        sent.append(batch)

    batcher: Batcher[int] = Batcher(send, max_batch=10)
    batcher.extend(list(range(25)))
    await batcher.drain(1)
    assert [len(b) for b in sent] == [10, 10, 5]
    assert [i for b in sent for i in b] == list(range(25))


async def test_a_failed_send_reaches_on_error_with_its_batch_and_the_next_goes_on() -> None:
    failures: list[tuple[str, list[int]]] = []
    sent: list[list[int]] = []

    async def send(batch: list[int]) -> None:
        if batch[0] == 0:
            raise RuntimeError("peer died")
        sent.append(batch)

    batcher: Batcher[int] = Batcher(send, on_error=lambda exc, batch: failures.append((str(exc), batch)))
    batcher.put(0)
    await settle()
    batcher.put(1)
    await batcher.drain(1)
    assert failures == [("peer died", [0])] and sent == [[1]]


async def test_linger_delays_and_gathers() -> None:
    sent: list[tuple[float, list[int]]] = []
    loop = asyncio.get_running_loop()

    async def send(batch: list[int]) -> None:
        sent.append((loop.time(), batch))

    batcher: Batcher[int] = Batcher(send, linger=0.05)
    start = loop.time()
    batcher.put(1)
    await asyncio.sleep(0.01)
    batcher.put(2)
    await batcher.drain(1)
    assert [b for _, b in sent] == [[1, 2]]
    assert sent[0][0] - start >= 0.045


async def test_close_returns_what_was_never_sent() -> None:
    link = Link()
    batcher: Batcher[int] = Batcher(link.send)
    batcher.put(1)
    await settle()
    batcher.put(2)
    left = await batcher.close(drain=False)
    assert left == [2]
    with pytest.raises(RuntimeError):
        batcher.put(3)
