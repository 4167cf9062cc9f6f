"""A shard with a warm standby (``RayOptions(standby_connections=True)``) on a real local
Ray: ``kill -9`` of the process serving the shard, twice, one seat after the other. Each
time the other seat's process, already up, takes over (a new term), the calls that
were up stay up, new calls are answered, and Ray's restart of the killed seat becomes
the new spare; the app's Ray calls keep answering throughout."""

from __future__ import annotations

from typing import Any

import ray
import ray_helpers as helpers
from ray_helpers import eventually, kill9

from relay_actors.ray_runtime.actor_messages import NAMESPACE, actor_name


async def _shard(relay: Any) -> dict[str, Any] | None:
    try:
        shards = (await relay.ray_stats())["connections"]
    except Exception:
        return None
    return shards[0] if shards else None


async def _serving(relay: Any, term: int, seat: str) -> Any:
    shard = await _shard(relay)
    if shard is None or shard.get("start_step") != "serving":
        return None
    standby = shard["standby"]
    return shard if (standby["term"], standby["seat"], standby["role"]) == (term, seat, "serving") else None


async def _app_holding_calls(
    make_client: Any, emulator: Any, recorder: Any, calls: int
) -> tuple[Any, Any, dict[str, Any], list[str]]:
    """An app with a standby, its main seat serving term 1, and ``calls`` calls held (their
    handlers started and staying): (client, recorder, shard stats, call ids)."""
    rec_name, rec = recorder
    relay = await make_client(
        on_call=helpers.recording_handler(rec_name, stay=True, hangup=False),
        ray_options={"standby_connections": True},
    )
    shard = await eventually(lambda: _serving(relay, 1, "main"), 20, what="the main seat serves term 1")
    held = emulator.core.inject_calls("office", calls)
    await eventually(lambda: _all(rec, "started", held), 15, what="the held calls' handlers started")
    return relay, rec, shard, held


async def test_kill9_of_the_serving_process_the_standby_takes_over_both_ways(
    make_client, emulator, recorder, app_name
) -> None:
    relay, rec, first, held = await _app_holding_calls(make_client, emulator, recorder, 4)

    for term, seat in ((2, "standby"), (3, "main")):
        before = await _shard(relay)
        assert before is not None
        kill9(before["pid"])
        shard = await eventually(
            lambda e=term, s=seat: _serving(relay, e, s), 20, what=f"the {seat} seat serves term {term}"
        )
        assert shard["pid"] != before["pid"]
        assert shard["standby"]["takeovers"] == 1, shard["standby"]
        assert shard["conn.resumes"] >= 1  # the same session, resumed by the other process
        # New calls are answered; the held ones are still up, their handlers never ended.
        new = emulator.core.inject_calls("office", 2)
        await eventually(lambda n=new: _all(rec, "started", n), 15, what=f"new calls answered, term {term}")
        live = {c["call_id"] for c in helpers.live_calls(emulator)}
        assert set(held) <= live
        assert not await _any(rec, "done", held)
        # Ray restarted the killed seat: its new process is the spare (and passes calls on).
        killed = "connection" if seat == "standby" else "standby"
        handle = ray.get_actor(actor_name(app_name, killed, 0), namespace=NAMESPACE)
        info = await eventually(lambda h=handle: _answers(h), 30, what=f"the {killed} seat restarted")
        assert info["pid"] == shard["pid"], "the restarted seat passes its calls to the serving process"
    assert first["pid"] != shard["pid"]

    for cid in held:
        emulator.core.hangup(cid)
    await eventually(lambda: _all(rec, "done", held), 15, what="the held calls ended by their callers")


async def _answers(handle: Any) -> Any:
    try:
        return await handle.stats.remote()
    except Exception:
        return None


async def _all(rec: Any, key: str, call_ids: list[str]) -> bool:
    dump = await rec.dump.remote()
    return all(cid in dump[key] for cid in call_ids)


async def _any(rec: Any, key: str, call_ids: list[str]) -> bool:
    dump = await rec.dump.remote()
    return any(cid in dump[key] for cid in call_ids)


async def test_a_paused_serving_process_is_not_replaced_by_its_spare(make_client, emulator, recorder) -> None:
    """SIGSTOP (a long GC, a frozen VM) is not death: the spare keeps its socket open and
    waits; once the process runs again it still serves, under the same term."""
    import asyncio
    import os
    import signal

    relay, rec, shard, held = await _app_holding_calls(make_client, emulator, recorder, 2)
    os.kill(shard["pid"], signal.SIGSTOP)
    try:
        # Longer than the spare's reads and Ray's own checks would need to act on a death.
        await asyncio.sleep(3.0)  # (the pause itself: the fault, not a synchronisation)
    finally:
        os.kill(shard["pid"], signal.SIGCONT)
    after = await eventually(lambda: _serving(relay, 1, "main"), 20, what="still term 1, the same process")
    assert after["pid"] == shard["pid"] and after["standby"]["takeovers"] == 0
    new = emulator.core.inject_calls("office", 1)
    await eventually(lambda: _all(rec, "started", new), 15, what="a new call answered after the pause")
    assert not await _any(rec, "done", held)
