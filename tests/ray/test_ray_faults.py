"""Faults on Ray: kill -9 of each kind of actor, handlers that raise or hang.

Each test checks that no event is lost or handled twice (what each handler saw, per
call, against what the emulator sent), that no call record leaks (router, shards,
CallActors and the emulator agree and return to 0), and measures recovery times.
"""

from __future__ import annotations

import time
from typing import Any

import ray_helpers as helpers
from ray_helpers import eventually, kill9


async def _stats(relay: Any) -> dict[str, Any]:
    return await relay.ray_stats()


async def _all_done(rec: Any, call_ids: list[str]) -> Any:
    dump = await rec.dump.remote()
    return dump if all(cid in dump["done"] for cid in call_ids) else None


async def _no_live_calls(emulator: Any) -> bool:
    return not helpers.live_calls(emulator)


async def _counts_agree(relay: Any, emulator: Any, expected: int | None = None) -> Any:
    """Router, shards and CallActors count the calls the emulator has up (or ``expected``)."""
    stats = await _stats(relay)
    live = len(helpers.live_calls(emulator)) if expected is None else expected
    counts = (
        stats["router"]["calls"],
        sum(s["active_calls"] for s in stats["connections"]),
        sum(a["calls"] for a in stats["call_actors"]),
    )
    ok = len(stats["connections"]) and len(stats["call_actors"]) == stats["router"]["actors"]
    return stats if ok and counts == (live, live, live) else None


async def _leases_agree(relay: Any) -> Any:
    """Every shard has reported to the router, and they agree on each grant."""
    stats = await _stats(relay)
    router = stats["router"]
    shards = {s["shard"]: s["granted"] for s in stats["connections"]}
    return stats if router["unknown_shards"] == 0 and router["grants"] == shards else None


def _report(name: str, seconds: float) -> None:
    print(f"\n[timing] {name}: {seconds:.2f}s")


async def test_connection_actor_kill9_mid_call(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client(on_call=helpers.recording_handler(rec_name, until_ended=True, hangup=False))
    protocol = relay.relay_protocol
    call_ids = emulator.core.inject_calls("office", 8, hangup_after=3.0)

    async def playing() -> Any:
        dump = await rec.dump.remote()
        return all(("calling.call.play", "playing") in dump["events"].get(cid, []) for cid in call_ids)

    await eventually(playing, 10, what="every call playing")
    old = (await _stats(relay))["connections"][0]
    kill9(old["pid"])
    killed = time.monotonic()

    async def resumed() -> Any:
        shards = (await _stats(relay))["connections"]
        return shards and shards[0]["pid"] != old["pid"] and shards[0]["protocol"] == protocol

    await eventually(resumed, 20, what="connection actor back on the same session")
    sessions = emulator.core.list_sessions()
    assert [s["protocol"] for s in sessions] == [protocol] and sessions[0]["attached"]
    assert emulator.core.stats()["counters"]["resumes"] >= 1
    _report("connection actor kill -9 -> session resumed", time.monotonic() - killed)

    dump = await eventually(lambda: _all_done(rec, call_ids), 30, what="every handler finished")
    await eventually(lambda: _no_live_calls(emulator), 10, what="calls ended")
    sent = helpers.sent_events(emulator)
    for cid in call_ids:
        assert dump["events"][cid] == sent[cid], f"{cid}: events lost or handled twice"
        assert len(dump["started"][cid]) == 1
    # Commands in flight either succeeded or failed visibly; none vanished (the handlers ended).
    # One issued while the restarted shard was still resuming may also time out (visibly,
    # under load: the restart and the resume take longer than the request timeout).
    assert set(code for codes in dump["errors"].values() for code in codes) <= {"connection_lost", "timeout"}
    assert all(c["end_reason"] == "hangup" for c in emulator.core.list_calls())
    await eventually(lambda: _counts_agree(relay, emulator, 0), 10, what="no call record leaked")


async def test_call_actor_kill9_calls_hung_up_and_counted(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client(on_call=helpers.recording_handler(rec_name, stay=True, hangup=False))
    call_ids = emulator.core.inject_calls("office", 10)
    dump = await eventually(lambda: _started(rec, call_ids), 15, what="every handler started")
    await eventually(lambda: _answered(emulator, 10), 10, what="10 answered")
    actors = (await _stats(relay))["call_actors"]
    victim = actors[0]
    on_victim = [cid for cid in call_ids if dump["started"][cid][0]["pid"] == victim["pid"]]
    survivors = [cid for cid in call_ids if cid not in on_victim]
    assert on_victim and survivors
    kill9(victim["pid"])
    killed = time.monotonic()
    # Offers while it is down: some are placed on the dead actor, so its loss is seen by a
    # failed delivery AND by the router's health loop after the restart.
    during = emulator.core.inject_calls("office", 6)

    async def victims_ended() -> bool:
        calls = {c["call_id"]: c for c in emulator.core.list_calls()}
        return all(calls[cid]["state"] == "ended" for cid in on_victim)

    await eventually(victims_ended, 20, what="the dead actor's calls hung up")
    _report("CallActor kill -9 -> its calls hung up", time.monotonic() - killed)
    await eventually(lambda: _settled(emulator, during), 15, what="offers made during the loss settled")
    # The router's health loop sees the new incarnation too; its report must change nothing.
    await eventually(lambda: _router_saw_restart(relay), 10, what="router saw the restart")
    await eventually(lambda: _counts_agree(relay, emulator), 15, what="counts agree after loss")
    calls = {c["call_id"]: c for c in emulator.core.list_calls()}
    assert all(calls[cid]["end_reason"] == "error" for cid in on_victim)
    assert all(calls[cid]["state"] == "answered" for cid in survivors), "other calls must go on"
    # Each lost call hung up once, even though two detectors (delivery, health loop) see the
    # loss; only the dead actor's calls (and offers placed on it before it was seen dead).
    ends = [p["call_id"] for p in helpers.sent_requests(emulator, "calling.end")]
    assert len(ends) == len(set(ends)), "a call was hung up twice"
    assert set(on_victim) <= set(ends) <= set(on_victim) | set(during)
    handled = [cid for cid in during if cid not in ends]
    print(f"\n[info] offers during the loss: {len(during)}, hung up as lost: {len(set(during) & set(ends))}")
    assert all(calls[cid]["state"] == "answered" for cid in handled), "calls on the new incarnation"
    stats = await eventually(lambda: _counts_agree(relay, emulator), 15, what="counts agree after loss")
    shard = stats["connections"][0]
    assert shard["calls_lost_actor"] == len(ends) == shard["calls_hung_up_lost_actor"]
    # New calls work; the restarted actor (least loaded) takes them again.
    fresh = emulator.core.inject_calls("office", 6)
    dump = await eventually(lambda: _started(rec, fresh), 15, what="new calls handled")
    (restarted,) = [a for a in (await _stats(relay))["call_actors"] if a["index"] == victim["index"]]
    assert restarted["pid"] != victim["pid"]
    assert restarted["pid"] in {dump["started"][cid][0]["pid"] for cid in fresh}
    await eventually(lambda: _counts_agree(relay, emulator), 10, what="counts agree with new calls")
    for call in helpers.live_calls(emulator):
        emulator.core.hangup(call["call_id"])
    await eventually(lambda: _all_done(rec, survivors + handled + fresh), 15, what="survivors ended")
    await eventually(lambda: _counts_agree(relay, emulator, 0), 10, what="back to 0")
    assert (await _stats(relay))["connections"][0]["calls_lost_actor"] == len(ends)


async def _started(rec: Any, call_ids: list[str]) -> Any:
    dump = await rec.dump.remote()
    return dump if all(cid in dump["started"] for cid in call_ids) else None


async def _router_saw_restart(relay: Any) -> bool:
    return (await _stats(relay))["router"].get("call_actor_restarts", 0) == 1


async def _settled(emulator: Any, call_ids: list[str]) -> bool:
    calls = {c["call_id"]: c for c in emulator.core.list_calls()}
    return all(calls[cid]["state"] in ("answered", "ended") for cid in call_ids)


async def _answered(emulator: Any, count: int) -> bool:
    return helpers.answered_calls(emulator) >= count


async def test_call_actor_kill9_rehome(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client(
        on_call=helpers.recording_handler(rec_name, stay=True, hangup=False),
        ray_options={"on_call_actor_lost": "rehome"},
    )
    call_ids = emulator.core.inject_calls("office", 10)
    dump = await eventually(lambda: _started(rec, call_ids), 15, what="every handler started")
    await eventually(lambda: _answered(emulator, 10), 10, what="10 answered")
    victim = (await _stats(relay))["call_actors"][0]
    on_victim = [cid for cid in call_ids if dump["started"][cid][0]["pid"] == victim["pid"]]
    kill9(victim["pid"])
    killed = time.monotonic()

    async def recovered() -> Any:
        dump = await rec.dump.remote()
        return dump if all(len(dump["started"][cid]) == 2 for cid in on_victim) else None

    dump = await eventually(recovered, 20, what="lost calls re-homed")
    _report("CallActor kill -9 -> calls re-homed", time.monotonic() - killed)
    for cid in on_victim:
        again = dump["started"][cid][1]
        assert again["recovered"] is True and again["pid"] != victim["pid"]
    assert len(helpers.live_calls(emulator)) == 10, "re-homed calls stay up"
    stats = await eventually(lambda: _counts_agree(relay, emulator, 10), 15, what="counts agree")
    assert stats["connections"][0]["calls_rehomed"] == len(on_victim)
    assert stats["router"].get("double_assignments", 0) == 0
    # The re-homed handlers receive their calls' events: the caller hangs up, they finish.
    for cid in call_ids:
        emulator.core.hangup(cid)
    dump = await eventually(lambda: _all_done(rec, call_ids), 15, what="all handlers finished")
    for cid in on_victim:
        assert ("calling.call.state", "ended") in dump["events"][cid]
    await eventually(lambda: _counts_agree(relay, emulator, 0), 10, what="back to 0")


async def test_router_kill9_rebuilds(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client(
        max_active_calls=30, on_call=helpers.recording_handler(rec_name, stay=True, hangup=False)
    )
    call_ids = emulator.core.inject_calls("office", 6)
    await eventually(lambda: _started(rec, call_ids), 15, what="every handler started")
    old = (await _stats(relay))["router"]
    kill9(old["pid"])
    killed = time.monotonic()
    # A call that ends while the router is down must not leak a record there.
    emulator.core.hangup(call_ids[0])

    async def rebuilt() -> Any:
        try:
            stats = await relay.ray_stats()
        except Exception:
            return None
        return stats if stats["router"].get("pid") not in (None, old["pid"]) else None

    await eventually(rebuilt, 20, what="router restarted")
    _report("router kill -9 -> serving again", time.monotonic() - killed)
    stats = await eventually(lambda: _counts_agree(relay, emulator, 5), 15, what="call table rebuilt")
    # The new router (a new epoch) learned every shard's grant from the shard itself.
    await eventually(lambda: _leases_agree(relay), 10, what="leases re-learned from the shards")
    router = stats["router"]
    assert router["actors"] == 2 and router["budget"] == 30
    assert router["lease_epoch"] == old["lease_epoch"] + 1, "a restarted router fences the old one"
    assert router["leased"] <= 30 and router["leased"] >= 5
    assert router.get("actors_created", 0) == 0, "the pool is re-adopted, not re-created"
    fresh = emulator.core.inject_calls("office", 4)
    await eventually(lambda: _started(rec, fresh), 15, what="new calls after the restart")
    stats = await eventually(lambda: _counts_agree(relay, emulator, 9), 10, what="counts with new calls")
    assert stats["router"].get("double_assignments", 0) == 0
    assert stats["router"]["leased"] <= 30
    for call in helpers.live_calls(emulator):
        emulator.core.hangup(call["call_id"])
    await eventually(lambda: _counts_agree(relay, emulator, 0), 10, what="back to 0")


async def test_handler_that_raises_or_hangs(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client(
        handler_timeout=1.5,
        on_call=helpers.recording_handler(rec_name, plays=1, raise_on="+15550000666", hang_on="+15550000777"),
    )
    (bad,) = emulator.core.inject_calls("office", 1, to_number="+15550000666", hangup_after=1.0)
    (stuck,) = emulator.core.inject_calls("office", 1, to_number="+15550000777")
    good = emulator.core.inject_calls("office", 4)
    await eventually(lambda: _all_done(rec, good), 15, what="good calls handled")

    async def settled() -> Any:
        stats = await _stats(relay)
        totals = {
            key: sum(a.get(key, 0) for a in stats["call_actors"])
            for key in ("handler_errors", "handler_timeouts", "handlers_completed")
        }
        return totals if totals["handler_errors"] == 1 and totals["handler_timeouts"] == 1 else None

    totals = await eventually(settled, 10, what="one error, one timeout")
    assert totals["handlers_completed"] == 4
    hung_up = await _stats(relay)
    assert sum(a.get("calls_hung_up_handler_error", 0) for a in hung_up["call_actors"]) == 1
    await eventually(lambda: _no_live_calls(emulator), 10, what="all calls ended")
    calls = {c["call_id"]: c for c in emulator.core.list_calls()}
    assert calls[stuck]["end_reason"] == "error", "handler_timeout hangs the call up"
    assert calls[bad]["end_reason"] == "error", "a handler that raises has its call hung up"
    assert all(calls[cid]["end_reason"] == "hangup" for cid in good)
    await eventually(lambda: _counts_agree(relay, emulator, 0), 10, what="back to 0")
