"""A shard whose start-up fails does not stay down: the router restarts it.

Made deterministic by taking the shard's credentials out of the KV store before its
kill -9: each start-up then fails ("no credentials stored"), whatever the timing. Before
the router supervised the shards, such a shard served nothing until something else
killed it; now the router restarts it (with backoff), and once what it needs is back,
calls flow again.
"""

from __future__ import annotations

from typing import Any

import ray_helpers as helpers
from ray_helpers import eventually, kill9

from relay_actors.ray_runtime import kvstore


async def test_a_shard_whose_start_fails_is_restarted_by_the_router(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client(on_call=helpers.recording_handler(rec_name, stay=True, hangup=False))
    app = relay._ray.app  # type: ignore[union-attr]
    record = await kvstore.read_record(app)
    namespace = kvstore.secrets_namespace(record)
    credentials = await kvstore.get("credentials", namespace=namespace)
    assert credentials, "the app's credentials are stored"
    stats = await relay.ray_stats()
    shard_pid = stats["connections"][0]["pid"]

    await kvstore.delete("credentials", namespace=namespace)
    kill9(shard_pid)

    async def restarted_by_router() -> Any:
        router = (await relay.ray_stats())["router"]
        return router if router.get("shards_restarted", 0) >= 1 else None

    await eventually(restarted_by_router, 30, what="the router restarted the shard that failed to start")
    await kvstore.put("credentials", credentials, namespace=namespace)

    async def serving() -> Any:
        shards = (await relay.ray_stats())["connections"]
        return (
            shards if shards and shards[0].get("conn.connected") and shards[0]["pid"] != shard_pid else None
        )

    await eventually(serving, 30, what="the shard serving again")
    (call_id,) = emulator.core.inject_calls("office", 1)

    async def started() -> Any:
        return call_id in (await rec.dump.remote())["started"]

    await eventually(started, 20, what="a call answered after the shard came back")
    emulator.core.hangup(call_id)
