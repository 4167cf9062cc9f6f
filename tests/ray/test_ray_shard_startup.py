"""A connection actor restarted while the router restarts too serves again.

One crash can take both (an OOM kill, a node's processes dying one after the other):
the restarted connection actor's start-up then finds the router unavailable. It used to
log "connection shard 0 failed to start" and stay down for good; now each start-up
step is tried again (ShardStartup), so calls flow again within seconds, whichever of
the two dies first.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import ray
import ray_helpers as helpers
from ray_helpers import eventually, kill9

from relay_actors.ray_runtime.actor_messages import NAMESPACE, actor_name

#: Calls must flow again this soon after the second kill (Ray restarts both actors meanwhile).
RECOVERY = 30.0


async def _stats(app: str, role: str, index: int | None = None) -> dict[str, Any] | None:
    """The actor's stats as it answers now (None while it does not)."""
    try:
        handle = ray.get_actor(actor_name(app, role, index), namespace=NAMESPACE)
        return dict(await handle.stats.remote())
    except Exception:
        return None


async def _pids(app: str) -> dict[str, int]:
    async def both() -> Any:
        shard, router = await _stats(app, "connection", 0), await _stats(app, "router")
        return shard and router and {"connection": shard["pid"], "router": router["pid"]}

    return dict(await eventually(both, RECOVERY, what="the shard and the router answer"))


async def _a_call_flows(emulator: Any, rec: Any, tag: str) -> float:
    """Inject one call and wait until its handler answered it and hung up, without an error."""
    started = time.monotonic()
    (call_id,) = emulator.core.inject_calls("office", 1)

    async def handled() -> Any:
        dump = await rec.dump.remote()
        return dump if call_id in dump["done"] else None

    dump = await eventually(handled, RECOVERY, what=f"a call handled after {tag}")
    assert not dump["errors"].get(call_id), dump["errors"][call_id]
    call = next(c for c in emulator.core.list_calls() if c["call_id"] == call_id)
    assert call["end_reason"] == "hangup", call
    took = time.monotonic() - started
    print(f"\n[timing] {tag}: a call handled {took:.2f}s later")
    return took


async def _serving(make_client: Any, emulator: Any, recorder: Any, app: str) -> tuple[Any, dict[str, int]]:
    """An app whose calls flow; its recorder and the pids of its shard and router."""
    rec_name, rec = recorder
    await make_client(on_call=helpers.recording_handler(rec_name, plays=0))
    await _a_call_flows(emulator, rec, "start")
    return rec, await _pids(app)


async def test_calls_flow_again_when_the_router_dies_during_a_shard_s_start_up(
    make_client, emulator, recorder, app_name
) -> None:
    rec, pids = await _serving(make_client, emulator, recorder, app_name)
    # The router cannot answer (stopped) while the shard restarts: its start-up is
    # caught waiting for the pool, every time; then the router dies too.
    os.kill(pids["router"], signal.SIGSTOP)
    try:
        kill9(pids["connection"])

        async def waiting_for_the_pool() -> Any:
            shard = await _stats(app_name, "connection", 0)
            return shard and shard["pid"] != pids["connection"] and shard["start_step"] == "pool"

        await eventually(waiting_for_the_pool, RECOVERY, what="the restarted shard waiting for the router")
    finally:
        kill9(pids["router"])
    await _a_call_flows(emulator, rec, "the router killed during the shard's start-up")
    shard = await _stats(app_name, "connection", 0)
    assert shard is not None and shard["start_step"] == "serving", shard
    assert shard.get("start_retries", 0) >= 1, shard  # (it did wait for the router)


async def test_calls_flow_again_when_the_shard_dies_while_the_router_restarts(
    make_client, emulator, recorder, app_name
) -> None:
    rec, pids = await _serving(make_client, emulator, recorder, app_name)
    kill9(pids["router"])
    kill9(pids["connection"])
    await _a_call_flows(emulator, rec, "the router killed, then the shard")
