"""What the chaos suite found, each as a focused test: a call record the router kept
after a shard was killed right after the call ended, the events of an offer that
its (killed) CallActor never saw, lost when the offer was placed elsewhere, and healthy
calls hung up by a shard that restarted after a CallActor did and heard of that
CallActor's loss late."""

from __future__ import annotations

from typing import Any

import ray
import ray_helpers as helpers
from ray_helpers import eventually, kill9

from relay_actors.ray_runtime.actor_messages import NAMESPACE, actor_name


async def _counts(relay: Any) -> tuple[int, int, int]:
    stats = await relay.ray_stats()
    return (
        stats["router"]["calls"],
        sum(s["active_calls"] for s in stats["connections"]),
        sum(a["calls"] for a in stats["call_actors"]),
    )


async def _none_left(relay: Any, emulator: Any) -> Any:
    try:
        counts = await _counts(relay)
    except Exception:
        return None
    return counts == (0, 0, 0) and not helpers.live_calls(emulator)


async def test_router_forgets_calls_that_ended_just_before_a_shard_kill9(
    make_client, emulator, recorder
) -> None:
    rec_name, rec = recorder
    relay = await make_client(on_call=helpers.recording_handler(rec_name, stay=True, hangup=False))
    call_ids = emulator.core.inject_calls("office", 6)
    await eventually(lambda: _all(rec, "started", call_ids), 15, what="handlers started")
    await eventually(lambda: _router_calls(relay, 6), 10, what="router knows the 6 calls")
    shard = (await relay.ray_stats())["connections"][0]
    for cid in call_ids:
        emulator.core.hangup(cid)
    # The shard reports the ends to the router in a batch that lingers 0.2 s: killed now,
    # the report dies with it; the restarted shard must still clear the router's records.
    await eventually(lambda: _all(rec, "done", call_ids), 10, interval=0.01, what="handlers finished")
    kill9(shard["pid"])
    await eventually(lambda: _none_left(relay, emulator), 30, what="no record left after the restart")


async def test_events_of_an_offer_replaced_after_a_call_actor_kill9(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client(on_call=helpers.recording_handler(rec_name, stay=True, hangup=False))
    victim = (await relay.ray_stats())["call_actors"][0]
    kill9(victim["pid"])
    # Offers go to both CallActors (least loaded first). On the dead one they wait; their
    # callers give up (ended) before the loss is handled: the ended event waits behind
    # the offer, and both must reach the CallActor the offer is placed on instead.
    call_ids = emulator.core.inject_calls("office", 6, ring_timeout=0.3)
    await eventually(lambda: _all(rec, "started", call_ids), 30, what="every offer handled")
    for call in helpers.live_calls(emulator):
        emulator.core.hangup(call["call_id"])
    await eventually(lambda: _none_left(relay, emulator), 20, what="no call left anywhere")
    stats = await relay.ray_stats()
    replaced = stats["connections"][0]["offers_replaced"]
    assert replaced >= 1, stats["connections"][0]
    calls = {c["call_id"]: c for c in emulator.core.list_calls()}
    assert sum(calls[cid]["end_reason"] == "noAnswer" for cid in call_ids) >= replaced


async def _all(rec: Any, key: str, call_ids: list[str]) -> bool:
    dump = await rec.dump.remote()
    return all(cid in dump[key] for cid in call_ids)


async def _router_calls(relay: Any, count: int) -> bool:
    return (await relay.ray_stats())["router"]["calls"] == count


async def test_offers_that_end_while_waiting_for_a_slot_are_not_placed(
    make_client, emulator, recorder
) -> None:
    rec_name, rec = recorder
    relay = await make_client(
        max_active_calls=40, on_call=helpers.recording_handler(rec_name, stay=True, hangup=False)
    )
    router = (await relay.ray_stats())["router"]
    kill9(router["pid"])
    # The shard holds no slot yet: every offer waits for the (restarting) router, and
    # every caller gives up meanwhile. None may reach a handler afterwards.
    call_ids = emulator.core.inject_calls("office", 30, ring_timeout=0.3)
    await eventually(lambda: _none_left(relay, emulator), 30, what="no call left anywhere")
    dump = await rec.dump.remote()
    late = [cid for cid in call_ids if cid in dump["started"]]
    assert not late, f"handlers started on calls that had ended: {late}"
    stats = await relay.ray_stats()
    assert sum(s.get("offers_ended_waiting", 0) for s in stats["connections"]) == len(call_ids)


async def test_a_late_notice_of_a_call_actor_loss_older_than_the_shard_ends_no_call(
    make_client, emulator, recorder, app_name
) -> None:
    """Chaos ``kill_call_actor_then_connection``: a CallActor is killed, then the shard.
    The restarted shard only ever knows the CallActor's new incarnation and places calls
    there; the router's notice of the old incarnation's loss can reach it seconds later
    (the chaos run saw it come with the next fault). It used to hang those calls up."""
    rec_name, rec = recorder
    relay = await make_client(on_call=helpers.recording_handler(rec_name, stay=True, hangup=False))
    before = await relay.ray_stats()
    victim = before["call_actors"][0]
    shard = before["connections"][0]
    kill9(victim["pid"])
    kill9(shard["pid"])

    async def both_back() -> Any:
        stats = await relay.ray_stats()
        actors = {a["index"]: a for a in stats["call_actors"]}
        shards = stats["connections"]
        back = actors.get(victim["index"])
        if not shards or back is None or back["pid"] == victim["pid"] or shards[0]["pid"] == shard["pid"]:
            return None
        links = shards[0].get("links") or {}
        linked = all((links.get(i) or {}).get("connected") for i in actors)
        return back if linked and shards[0].get("start_step") == "serving" else None

    back = await eventually(both_back, 30, what="the CallActor and the shard restarted and linked")
    call_ids = emulator.core.inject_calls("office", 6)
    await eventually(lambda: _all(rec, "started", call_ids), 20, what="handlers started")
    conn = ray.get_actor(actor_name(app_name, "connection", 0), namespace=NAMESPACE)
    # The router's notice, late, as the router sends it: the lost incarnation, and the one
    # that replaced it (which the shard knows); and once only.
    answer = await conn.call_actor_lost.remote(victim["index"], back["incarnation"], victim["incarnation"])
    assert answer == {"already": 1}
    assert await conn.call_actor_lost.remote(victim["index"], back["incarnation"]) == {"already": 1}
    counters = (await relay.ray_stats())["connections"][0]
    assert counters.get("losses_older_than_the_shard", 0) >= 1, counters
    assert not counters.get("calls_lost_actor"), counters
    live = {c["call_id"] for c in helpers.live_calls(emulator)}
    assert set(call_ids) <= live, f"calls ended: {set(call_ids) - live}"
    dump = await rec.dump.remote()
    assert not any(dump["errors"].get(cid) for cid in call_ids), dump["errors"]
    for cid in call_ids:
        emulator.core.hangup(cid)
    await eventually(lambda: _none_left(relay, emulator), 20, what="no call left anywhere")
