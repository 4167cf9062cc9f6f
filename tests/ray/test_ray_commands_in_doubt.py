"""A command whose result a connection actor's crash cut off takes effect once.

The service answers the call, its result is lost (the emulator drops it, as a kill
between the service's result and its delivery would), then the connection actor is
killed: the CallActor's ``answer`` is in doubt. It used to be sent again at once, as
"idempotent" (``calling.answer`` twice at the server); now it is resolved from the
resumed session (the call is answered) and not sent again. The same when the connection
actor lives on and only its WebSocket is cut (a chaos run found that one).
"""

from __future__ import annotations

from typing import Any

import ray_helpers as helpers
from ray_helpers import eventually, kill9


def _answers(emulator: Any, call_id: str) -> int:
    return sum(1 for p in helpers.sent_requests(emulator, "calling.answer") if p.get("call_id") == call_id)


async def _answer_cut_off(make_client: Any, emulator: Any, recorder: Any, cut: str) -> None:
    """The service answers, its result is dropped, then ``cut`` ("kill": the connection
    actor; "drop": its WebSocket): the handler sees no error and the server one answer."""
    rec_name, rec = recorder
    relay = await make_client(on_call=helpers.recording_handler(rec_name, plays=1))
    shard = (await relay.ray_stats())["connections"][0]
    emulator.core.set_faults(relay.relay_protocol, {"drop_responses": 1})
    (call_id,) = emulator.core.inject_calls("office", 1)

    async def answered_without_result() -> bool:
        calls = {c["call_id"]: c for c in emulator.core.list_calls()}
        return _answers(emulator, call_id) == 1 and calls[call_id]["state"] == "answered"

    await eventually(
        answered_without_result, 15, interval=0.01, what="the answer executed, its result dropped"
    )
    if cut == "kill":
        kill9(shard["pid"])
    else:
        emulator.core.drop(relay.relay_protocol)  # the shard lives on; its session resumes

    async def handled() -> Any:
        dump = await rec.dump.remote()
        return dump if call_id in dump["done"] else None

    dump = await eventually(handled, 30, what="the handler finished")
    assert not dump["errors"].get(call_id), dump["errors"][call_id]
    assert _answers(emulator, call_id) == 1, "calling.answer reached the server twice"
    call = next(c for c in emulator.core.list_calls() if c["call_id"] == call_id)
    assert call["end_reason"] == "hangup", call
    stats = await relay.ray_stats()
    assert sum(a.get("commands_shown_done", 0) for a in stats["call_actors"]) == 1


async def test_an_answer_cut_off_by_a_connection_actor_kill_is_not_sent_twice(
    make_client, emulator, recorder
) -> None:
    await _answer_cut_off(make_client, emulator, recorder, "kill")


async def test_an_answer_cut_off_by_a_dropped_socket_is_not_sent_twice(
    make_client, emulator, recorder
) -> None:
    await _answer_cut_off(make_client, emulator, recorder, "drop")
