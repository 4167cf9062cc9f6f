"""Requests and events across a connection-actor restart.

* A handler's ``answer`` issued while its connection actor is down (kill -9) reaches
  the server once the actor is back, instead of failing (the chaos suite's rare
  "healthy call ended": the answer, failed with ``connection_lost`` by the link
  handshake of the new incarnation, was resent at once to an actor that had no
  RELAY connection yet, failed twice more within milliseconds, and the handler error
  policy hung up the call).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

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


def gated_handler(rec_name: str, gate_name: str) -> Any:
    """Record the start, wait for the gate, answer (recording a failure), stay until the
    caller hangs up."""

    async def handler(call: Any) -> None:
        rec = helpers.recorder(rec_name)
        gate = ray.get_actor(gate_name, namespace=TEST_NAMESPACE)

        def seen(event: Any) -> None:
            params = event.params
            rec.event.remote(call.call_id, event.event_type, params.get("call_state") or "")

        for event_type in helpers.RECORDED_TYPES:
            call.on(event_type, seen)
        rec.start.remote(call.call_id, {"pid": os.getpid(), "recovered": call.recovered})
        try:
            for _ in range(3000):  # bounded: 30 s
                if await gate.state.remote():
                    break
                await asyncio.sleep(0.01)
            try:
                await call.answer()
            except RelayError as exc:
                rec.error.remote(call.call_id, f"answer:{exc.code}")
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
