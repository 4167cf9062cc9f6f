"""Requests and events across a connection-actor restart (kill -9).

* A handler's ``answer`` issued while its connection actor is down (kill -9) reaches
  the server once the actor is back, instead of failing (the chaos suite's rare
  "healthy call ended": the answer, failed with ``connection_lost`` by the link
  handshake of the new incarnation, was resent at once to an actor that had no
  RELAY connection yet, failed twice more within milliseconds, and the handler error
  policy hung up the call).
* A CallActor that cannot say what it holds (``owned()`` fails, by the
  ``fail_owned`` fault hook) when the shard restarts: its calls stay counted
  against the limit and their events are held, then delivered exactly once when
  it answers.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import ray
import ray_helpers as helpers
from ray_helpers import TEST_NAMESPACE, eventually, kill9

from relay_actors.errors import RelayError


class Gate:
    """A test actor the handlers poll: closed until the test opens it."""

    def __init__(self) -> None:
        self.is_open = False

    def open(self) -> None:
        self.is_open = True

    def state(self) -> bool:
        return self.is_open


def _record(call: Any, rec: Any) -> None:
    """Report the handler's start and every state/play event of ``call`` to ``rec``."""

    def seen(event: Any) -> None:
        rec.event.remote(call.call_id, event.event_type, event.params.get("call_state") or "")

    for event_type in helpers.RECORDED_TYPES:
        call.on(event_type, seen)
    rec.start.remote(call.call_id, {"pid": os.getpid(), "recovered": call.recovered})


def gated_handler(rec_name: str, gate_name: str) -> Any:
    """Record the start, wait for the gate, answer (recording a failure), stay until the
    caller hangs up."""

    async def handler(call: Any) -> None:
        rec = helpers.recorder(rec_name)
        gate = ray.get_actor(gate_name, namespace=TEST_NAMESPACE)

        _record(call, rec)
        try:
            for _ in range(3000):  # bounded: 30 s
                if await gate.state.remote():
                    break
                await asyncio.sleep(0.01)
            try:
                await call.answer()
            except RelayError as exc:
                rec.error.remote(call.call_id, f"answer:{exc.failure or exc.code}")
                raise
            await call.wait_for_ended(timeout=60)
        finally:
            rec.finish.remote(call.call_id)

    return handler


async def _all(rec: Any, key: str, call_ids: list[str]) -> bool:
    dump = await rec.dump.remote()
    return all(cid in dump[key] for cid in call_ids)


async def test_answer_issued_while_the_connection_actor_restarts_is_sent_not_failed(
    make_client, emulator, recorder, app_name
) -> None:
    rec_name, rec = recorder
    gate_name = f"gate-{app_name}"
    gate = ray.remote(Gate).options(name=gate_name, namespace=TEST_NAMESPACE, num_cpus=0).remote()
    make_client.recorders.append(gate)  # killed at teardown
    relay = await make_client(on_call=gated_handler(rec_name, gate_name))
    call_ids = emulator.core.inject_calls("office", 6, ring_timeout=60.0)
    await eventually(lambda: _all(rec, "started", call_ids), 20, what="every handler started")
    shard = (await relay.ray_stats())["connections"][0]
    kill9(shard["pid"])
    # The answers leave while the shard is dead: they wait on the links, and reach the
    # new incarnation as soon as it links up — before it has a RELAY connection.
    await gate.open.remote()

    async def answered() -> bool:
        calls = {c["call_id"]: c for c in emulator.core.list_calls()}
        return all(calls[cid]["state"] == "answered" for cid in call_ids)

    try:
        await eventually(answered, 30, what="every call answered")
    finally:
        dump = await rec.dump.remote()
        assert not dump["errors"], dump["errors"]
    # Answered exactly through the server, never ended by the runtime's error policy.
    ends = helpers.sent_requests(emulator, "calling.end")
    assert not [e for e in ends if e.get("call_id") in call_ids], ends
    answers = {p["call_id"] for p in helpers.sent_requests(emulator, "calling.answer")}
    assert set(call_ids) <= answers
    for cid in call_ids:
        emulator.core.hangup(cid)
    await eventually(lambda: _all(rec, "done", call_ids), 20, what="every handler finished")
    stats = await relay.ray_stats()
    assert stats["connections"][0]["pid"] != shard["pid"]


def staying_handler(rec_name: str) -> Any:
    """Answer, record every state/play event, stay until the caller hangs up."""

    async def handler(call: Any) -> None:
        rec = helpers.recorder(rec_name)

        _record(call, rec)
        try:
            await call.answer()
            await call.wait_for_ended(timeout=90)
        finally:
            rec.finish.remote(call.call_id)

    return handler


@pytest.mark.parametrize("hang", [False, True], ids=["fails", "times_out"])
async def test_calls_of_a_call_actor_that_cannot_say_what_it_holds_stay_counted_and_routed(
    make_client, emulator, recorder, app_name, hang
) -> None:
    """A restarted shard whose ``owned()`` call to a CallActor fails (or times out: 10 s)
    keeps asking it; its calls' slots stay counted meanwhile (no more than the limit
    answered), their events are held, not acked as unroutable, and reach their handlers
    once it answers."""
    from relay_actors.ray_runtime.actor_messages import NAMESPACE, actor_name

    limit = 6
    rec_name, rec = recorder
    relay = await make_client(on_call=staying_handler(rec_name), max_active_calls=limit)
    first = emulator.core.inject_calls("office", 4, ring_timeout=60.0)
    await eventually(lambda: _all(rec, "started", first), 20, what="every handler started")

    async def answered(ids: list[str]) -> bool:
        calls = {c["call_id"]: c for c in emulator.core.list_calls()}
        return all(calls[cid]["state"] == "answered" for cid in ids)

    await eventually(lambda: answered(first), 20, what="every call answered")
    stats = await relay.ray_stats()
    dump = await rec.dump.remote()
    pid_of = {a["pid"]: a["index"] for a in stats["call_actors"]}
    on: dict[int, list[str]] = {}
    for cid in first:
        on.setdefault(pid_of[dump["started"][cid][0]["pid"]], []).append(cid)
    victim = max(on, key=lambda idx: len(on[idx]))
    hidden = on[victim]  # the calls the restarted shard cannot learn
    victim_actor = ray.get_actor(actor_name(app_name, "call", victim), namespace=NAMESPACE)
    await victim_actor.fail_owned.remote(120.0, hang)
    shard = stats["connections"][0]
    kill9(shard["pid"])

    async def restarted() -> Any:
        try:
            shards = (await relay.ray_stats())["connections"]
        except Exception:
            return None
        up = shards and shards[0]["pid"] != shard["pid"] and shards[0].get("conn.connected")
        return shards[0] if up else None

    await eventually(restarted, 45, what="shard back")

    # Offers while it is unknown: its calls still count, so at most the limit is answered.
    peak = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, helpers.answered_calls(emulator))
            await asyncio.sleep(0.02)

    sampler = asyncio.get_running_loop().create_task(sample())
    try:
        more = emulator.core.inject_calls("office", 6, ring_timeout=60.0)

        async def decided() -> Any:
            shards = (await relay.ray_stats())["connections"]
            done = shards[0].get("offers_admitted", 0) + shards[0].get("offers_dropped", 0)
            return done >= len(more) and shards[0]

        offers = await eventually(decided, 20, what="every new offer admitted or dropped")
        admitted_now = offers.get("offers_admitted", 0)
        await eventually(
            lambda: _answered_count(emulator, more, admitted_now), 20, what="the admitted ones answered"
        )
        # With the hidden calls not counted, 4 of these were admitted: 8 calls answered.
        assert peak <= limit and admitted_now == limit - len(first), (peak, admitted_now)
        back = (await relay.ray_stats())["connections"][0]
        assert back.get("unknown_call_actors") == 1 and back["held_slots"] >= len(hidden), back
        # An event for a hidden call: held by the shard, not acked as unroutable.
        emulator.core.hangup(hidden[0])

        async def held() -> Any:
            shards = (await relay.ray_stats())["connections"]
            return shards[0].get("held_events", 0) >= 1 and shards[0]

        await eventually(held, 10, what="the hidden call's ended event held")
        assert hidden[0] not in (await rec.dump.remote())["done"]
        await victim_actor.fail_owned.remote(0.0)  # it answers from now on

        async def learned() -> Any:
            shards = (await relay.ray_stats())["connections"]
            return shards[0]["unknown_call_actors"] == 0 and shards[0]

        after = await eventually(learned, 30, what="the CallActor answered the rebuild")
        assert after["held_slots"] == 0 and after["events_held"] >= 1, after
        await eventually(lambda: _all(rec, "done", hidden[:1]), 10, what="the held ended event delivered")
    finally:
        sampling = False
        await sampler
    assert peak <= limit, peak

    for call in helpers.live_calls(emulator):
        emulator.core.hangup(call["call_id"])
    admitted = [cid for cid in first + more if cid in (await rec.dump.remote())["started"]]
    await eventually(lambda: _all(rec, "done", admitted), 20, what="every handler finished")

    async def quiet() -> Any:
        st = await relay.ray_stats()
        counts = (
            st["router"]["calls"],
            sum(s["active_calls"] for s in st["connections"]),
            sum(a["calls"] for a in st["call_actors"]),
        )
        shards = {s["shard"]: s["granted"] for s in st["connections"]}
        agree = st["router"]["unknown_shards"] == 0 and st["router"]["grants"] == shards
        return counts == (0, 0, 0) and agree and not helpers.live_calls(emulator) and st

    st = await eventually(quiet, 20, what="nothing left after quiescence")
    assert st["connections"][0]["held_events"] == 0 and st["connections"][0]["held_slots"] == 0
    # Every event of every handled call reached its handler exactly once, in order.
    sent = helpers.sent_events(emulator)
    dump = await rec.dump.remote()
    for cid in admitted:
        assert dump["events"].get(cid, []) == sent.get(cid, []), (cid, cid in hidden)
        assert len(dump["started"][cid]) == 1


async def _answered_count(emulator: Any, ids: list[str], count: int) -> bool:
    calls = {c["call_id"]: c for c in emulator.core.list_calls()}
    return sum(calls[cid]["state"] == "answered" for cid in ids) >= count
