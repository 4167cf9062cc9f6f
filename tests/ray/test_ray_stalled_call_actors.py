"""Offers that find every CallActor stalled wait for one (bounded) instead of being dropped."""

from __future__ import annotations

import os
import signal
from typing import Any

import ray
import ray_helpers as helpers
from ray_helpers import eventually

from relay_actors.ray_runtime.actor_messages import NAMESPACE, actor_name


async def test_offers_wait_while_every_call_actor_is_stalled(
    make_client, emulator, recorder, app_name
) -> None:
    rec_name, rec = recorder
    relay = await make_client(on_call=helpers.recording_handler(rec_name, plays=0))
    conn = ray.get_actor(actor_name(app_name, "connection", 0), namespace=NAMESPACE)
    pids = await _stop_both_call_actors(relay, conn)
    try:
        call_ids = emulator.core.inject_calls("office", 3)

        async def waiting() -> Any:
            shard = await conn.stats.remote()
            return shard if shard.get("offers_waited_for_room", 0) == 3 else None

        await eventually(waiting, 10, what="the offers wait for a CallActor")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)

    async def handled() -> Any:
        dump = await rec.dump.remote()
        return dump if all(cid in dump["done"] for cid in call_ids) else None

    dump = await eventually(handled, 20, what="every call handled")
    assert not any(dump["errors"].get(cid) for cid in call_ids), dump["errors"]
    shard = await conn.stats.remote()
    assert shard.get("offers_no_capacity", 0) == 0 and shard.get("offers_dropped", 0) == 0, shard


async def test_while_every_call_actor_is_stalled_the_pool_adds_one_and_offers_go_there(
    make_client, emulator, recorder, app_name
) -> None:
    """Handlers blocking every CallActor's loop: the offers that wait make the pool grow
    (within max_call_actors), and the new CallActor answers them while the others stall."""
    rec_name, rec = recorder
    relay = await make_client(
        on_call=helpers.recording_handler(rec_name, plays=0), ray_options={"max_call_actors": 3}
    )
    conn = ray.get_actor(actor_name(app_name, "connection", 0), namespace=NAMESPACE)
    pids = await _stop_both_call_actors(relay, conn)
    try:
        call_ids = emulator.core.inject_calls("office", 3)

        async def handled() -> Any:
            dump = await rec.dump.remote()
            return dump if all(cid in dump["done"] for cid in call_ids) else None

        dump = await eventually(handled, 30, what="every call handled by a CallActor the pool added")
        assert {dump["started"][cid][0]["pid"] for cid in call_ids}.isdisjoint(pids)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert not any(dump["errors"].get(cid) for cid in call_ids), dump["errors"]
    shard = await conn.stats.remote()
    assert shard.get("offers_no_capacity", 0) == 0 and shard.get("offers_dropped", 0) == 0, shard


async def _stop_both_call_actors(relay: Any, conn: Any) -> list[int]:
    """SIGSTOP the app's two CallActors and wait until the shard takes them as lagging;
    their pids (the caller sends SIGCONT)."""
    pids = [a["pid"] for a in (await relay.ray_stats())["call_actors"]]
    assert len(pids) == 2
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)

    async def both_stalled() -> Any:
        shard = await conn.stats.remote()
        return shard if shard["unavailable_call_actors"] == 2 else None

    try:
        await eventually(both_stalled, 15, what="both CallActors take no new calls")
    except BaseException:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        raise
    return pids
