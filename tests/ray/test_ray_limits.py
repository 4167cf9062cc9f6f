"""The cluster-wide ``max_active_calls`` under a burst of 10x the limit, sampled throughout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import ray_helpers as helpers
from ray_helpers import eventually

LIMIT = 20
BURST = 200


def _stay_until_ended(rec_name: str) -> Any:
    async def handler(call: Any) -> None:
        await call.answer()
        await call.wait_for_ended(timeout=30)
        helpers.recorder(rec_name).finish.remote(call.call_id)

    return handler


_samplers: list[Any] = []


@pytest.fixture(autouse=True)
async def _stop_samplers() -> Any:
    yield
    while _samplers:
        sampler = _samplers.pop()
        sampler._task.cancel()
        await asyncio.gather(sampler._task, return_exceptions=True)


class Sampler:
    """Samples the router's counts and the emulator's answered calls until stopped."""

    def __init__(self, relay: Any, emulator: Any) -> None:
        _samplers.append(self)
        self.router = relay._ray.router
        self.emulator = emulator
        self.samples: list[dict[str, int]] = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            active = await self.router.active.remote()
            self.samples.append(
                {
                    "router_calls": active["calls"],
                    "leased": active["leased"],
                    "answered": helpers.answered_calls(self.emulator),
                }
            )
            await asyncio.sleep(0.02)

    async def stop(self) -> dict[str, int]:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return {key: max(s[key] for s in self.samples) for key in self.samples[0]}


async def _shard_totals(relay: Any) -> dict[str, int]:
    stats = await relay.ray_stats()
    keys = ("offers", "offers_admitted", "offers_dropped", "offers_passed", "offers_no_capacity")
    return {k: sum(s.get(k, 0) for s in stats["connections"]) for k in keys}


async def _idle(relay: Any) -> bool:
    stats = await relay.ray_stats()
    return stats["router"]["calls"] == 0 and all(s["active_calls"] == 0 for s in stats["connections"])


@pytest.mark.parametrize("shards", [1, 2])
async def test_burst_of_ten_times_the_limit(make_client, emulator, recorder, shards) -> None:
    rec_name, rec = recorder
    relay = await make_client(
        max_active_calls=LIMIT,
        on_call=_stay_until_ended(rec_name),
        ray_options={"connections": shards},
    )
    sampler = Sampler(relay, emulator)
    emulator.core.inject_calls("office", BURST, hangup_after=1.5, ring_timeout=2.0)

    async def offers_seen() -> Any:
        totals = await _shard_totals(relay)
        return totals if totals["offers"] >= BURST else None

    await eventually(offers_seen, 20, what="every offer seen")
    await eventually(lambda: _no_live(emulator), 20, what="burst over")
    peak = await sampler.stop()
    totals = await _shard_totals(relay)
    assert peak["answered"] <= LIMIT and peak["router_calls"] <= LIMIT and peak["leased"] <= LIMIT, peak
    assert peak["answered"] >= LIMIT // 2, f"the limit should be used, peak {peak}"
    assert totals["offers_admitted"] + totals["offers_dropped"] + totals["offers_no_capacity"] == BURST
    assert totals["offers_dropped"] == BURST - totals["offers_admitted"]
    answered = {c["call_id"] for c in emulator.core.list_calls() if c["end_reason"] == "hangup"}
    assert len(answered) == totals["offers_admitted"]
    await eventually(lambda: _idle(relay), 10, what="router and shards back to 0")

    # Slots are reused after the calls ended: a second wave of LIMIT calls is admitted in full,
    # whichever shard the emulator offers them to.
    sampler = Sampler(relay, emulator)
    wave = emulator.core.inject_calls("office", LIMIT, hangup_after=0.5, ring_timeout=2.0)

    async def wave_done() -> Any:
        done = (await rec.dump.remote())["done"]
        return all(cid in done for cid in wave)

    await eventually(wave_done, 20, what=f"second wave of {LIMIT} handled")
    peak = await sampler.stop()
    assert peak["leased"] <= LIMIT and peak["router_calls"] <= LIMIT
    assert (await _shard_totals(relay))["offers_admitted"] == totals["offers_admitted"] + LIMIT
    await eventually(lambda: _idle(relay), 10, what="router and shards back to 0")


async def _no_live(emulator: Any) -> bool:
    return not helpers.live_calls(emulator)


async def test_over_limit_pass(make_client, emulator, recorder) -> None:
    rec_name, _rec = recorder
    relay = await make_client(max_active_calls=LIMIT, over_limit="pass", on_call=_stay_until_ended(rec_name))
    sampler = Sampler(relay, emulator)
    emulator.core.inject_calls("office", BURST, hangup_after=1.0, ring_timeout=5.0)

    async def settled() -> Any:
        totals = await _shard_totals(relay)
        return totals if totals["offers_admitted"] + totals["offers_passed"] >= BURST else None

    totals = await eventually(settled, 20, what="every offer admitted or passed")
    await eventually(lambda: _no_live(emulator), 20, what="burst over")
    peak = await sampler.stop()
    assert peak["answered"] <= LIMIT and peak["leased"] <= LIMIT, peak
    assert totals["offers_dropped"] == 0
    assert totals["offers_passed"] == BURST - totals["offers_admitted"] > 0
    assert len(helpers.sent_requests(emulator, "calling.pass")) == totals["offers_passed"]
    ends = [c["end_reason"] for c in emulator.core.list_calls()]
    assert ends.count("hangup") == totals["offers_admitted"]
    await eventually(lambda: _idle(relay), 10, what="router and shards back to 0")


def _pass_every_call() -> Any:
    async def handler(call: Any) -> None:
        await call.pass_()

    return handler


async def test_passed_calls_free_their_slots(make_client, emulator, recorder) -> None:
    """A passed call belongs to another consumer: its slot must come back at once,
    or each pass would leak one of the ``max_active_calls`` slots for good."""
    relay = await make_client(max_active_calls=LIMIT, on_call=_pass_every_call())
    emulator.core.inject_calls("office", LIMIT, ring_timeout=30.0)
    await eventually(lambda: _passes_done(emulator, LIMIT), 20, what="every call passed by its handler")
    await eventually(lambda: _idle(relay), 10, what="router and shards back to 0 after the passes")
    stats = await relay.ray_stats()
    assert sum(a["calls"] for a in stats["call_actors"]) == 0
    assert sum(s.get("calls_passed", 0) for s in stats["connections"]) == LIMIT
    # The freed slots are usable: a second wave of LIMIT calls is admitted in full.
    before = (await _shard_totals(relay))["offers_admitted"]
    emulator.core.inject_calls("office", LIMIT, ring_timeout=30.0)

    async def admitted() -> bool:
        return (await _shard_totals(relay))["offers_admitted"] - before == LIMIT

    await eventually(admitted, 20, what="the second wave admitted")


async def _passes_done(emulator: Any, count: int) -> bool:
    return len(helpers.sent_requests(emulator, "calling.pass")) >= count
