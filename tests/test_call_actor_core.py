"""A CallActor's decisions without Ray: link batches in (wire arrays), items out to a list.

The core is what the CallActor shell feeds its links' batches to; here a list stands in
for the link, and the handlers are plain coroutines.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relay_actors.call import Call
from relay_actors.errors import RelayError
from relay_actors.protocol import constants as c
from relay_actors.ray_runtime import actor_messages as m
from relay_actors.ray_runtime.call_actor_core import CallActorCore
from relay_actors.ray_runtime.options import CallActorOptions


class Link:
    """What the core sends, by shard."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, m.ToShard]] = []

    def __call__(self, shard: int, item: m.ToShard) -> None:
        self.sent.append((shard, item))

    def of(self, kind: type) -> list[Any]:
        return [item for _shard, item in self.sent if isinstance(item, kind)]


def offer(call_id: str, event_id: str | None = None) -> list[Any]:
    params = {"call_id": call_id, "node_id": "n1", "call_state": "created", "direction": "inbound"}
    return m.encode(m.OfferItem(call_id, params, event_id or f"ev-{call_id}"))


def state(call_id: str, call_state: str, event_id: str) -> list[Any]:
    params = {"call_id": call_id, "node_id": "n1", "call_state": call_state}
    return m.encode(m.EventItem(call_id, c.EVENT_CALL_STATE, params, 1.0, event_id))


@pytest.fixture
def core() -> tuple[CallActorCore, Link, list[Call]]:
    link = Link()
    actor = CallActorCore("app", CallActorOptions(capacity=2, shards=2, request_timeout=5.0), link)
    actor.ready.set()
    started: list[Call] = []

    async def on_call(call: Call) -> None:
        started.append(call)
        await asyncio.Event().wait()  # holds its call until cancelled

    actor.host.on_call = on_call
    return actor, link, started


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


async def answer_hosted_call(actor: CallActorCore, started: list[Call]) -> asyncio.Future[dict[str, Any]]:
    """Call c1 hosted, and its ``calling.answer`` sent through shard 0 (awaiting its result)."""
    actor.apply(0, [offer("c1")])
    await until(lambda: started)
    return asyncio.ensure_future(actor.request(0, "calling.answer", {"call_id": "c1"}))


async def test_an_offer_starts_its_handler_and_a_redelivered_event_is_dropped(core) -> None:
    actor, _link, started = core
    actor.apply(0, [offer("c1"), state("c1", "answered", "e2")])
    await until(lambda: started)
    assert started[0].call_id == "c1" and actor.host.calls["c1"]._core.state == "answered"
    actor.apply(0, [state("c1", "answered", "e2"), offer("c1")])  # the server redelivered both
    assert actor.counters["duplicate_events"] == 1 and actor.counters["offers"] == 1
    await actor.host.tasks.cancel_all()


async def test_each_redelivered_event_is_dropped_and_counted_and_one_without_an_id_never(core) -> None:
    actor, _link, started = core
    actor.apply(0, [offer("c1"), state("c1", "ringing", "e1"), state("c1", "answered", "e2")])
    await until(lambda: started)
    assert actor.counters["events"] == 2
    actor.apply(0, [state("c1", "ringing", "e1"), state("c1", "answered", "e2")])  # a resume's redelivery
    assert actor.counters["duplicate_events"] == 2 and actor.counters["events"] == 2
    answered = {"call_id": "c1", "call_state": "answered"}
    no_id = m.encode(m.EventItem("c1", c.EVENT_CALL_STATE, answered, 1.0, None))
    actor.apply(0, [no_id, no_id])
    assert actor.counters["duplicate_events"] == 2 and actor.counters["events"] == 4
    await actor.host.tasks.cancel_all()


async def test_offers_past_capacity_go_back_refused_in_one_item(core) -> None:
    actor, link, _started = core
    actor.apply(1, [offer("c1"), offer("c2"), offer("c3"), offer("c4")])
    (refused,) = link.of(m.RefusedItem)
    assert [o.call_id for o in refused.offers] == ["c3", "c4"] and link.sent[0][0] == 1
    assert refused.offers[0].params["call_id"] == "c3" and refused.offers[0].event_id == "ev-c3"
    await actor.host.tasks.cancel_all()


async def test_a_malformed_item_is_counted_and_the_rest_of_the_batch_applied(core) -> None:
    actor, _link, started = core
    actor.apply(0, [["offer", 5], "junk", ["nope"], offer("c1"), ["req", "r", "x", {}]])
    await until(lambda: started)
    assert actor.counters["malformed_items"] == 3 and actor.counters["unknown_items"] == 1
    await actor.host.tasks.cancel_all()


async def test_a_request_goes_out_and_its_result_or_failure_comes_back(core) -> None:
    actor, link, _started = core
    answer = asyncio.ensure_future(actor.request(1, "calling.answer", {"call_id": "c1"}))
    await until(lambda: link.of(m.RequestItem))
    (request,) = link.of(m.RequestItem)
    assert request.method == "calling.answer" and link.sent[0][0] == 1
    actor.apply(1, [m.encode(m.ResultItem(request.req_id, {"code": "200"}))])
    assert await answer == {"code": "200"}
    play = asyncio.ensure_future(actor.request(0, "calling.play", {"call_id": "c1"}))
    await until(lambda: len(link.of(m.RequestItem)) == 2)
    actor.apply(0, [m.encode(m.FailureItem(link.of(m.RequestItem)[1].req_id, 404, "gone"))])
    with pytest.raises(RelayError) as caught:
        await play
    assert caught.value.code == 404 and actor.requests == {}


async def test_params_that_are_not_json_fail_before_anything_is_sent(core) -> None:
    actor, link, _started = core
    with pytest.raises(RelayError, match="JSON"):
        await actor.request(0, "calling.play", {"call_id": "c1", "x": object()})
    assert link.sent == []


async def test_a_lost_call_ends_and_its_driver_stream_says_so(core) -> None:
    actor, _link, started = core
    actor.apply(0, [offer("c1")])
    await until(lambda: started)
    actor.follow_call(started[0])
    actor.apply(0, [m.encode(m.LostItem("c1", "call_actor_lost"))])
    assert "c1" not in actor.host.calls
    following, events = await actor.call_events("c1", 0, 0.1)
    assert events[-1][0] == m.STREAM_LOST and events[-1][1] == {"reason": "call_actor_lost"}
    assert following == len(events) and "c1" not in actor.streamed  # done: forgotten
    await actor.host.tasks.cancel_all()


async def test_a_shard_restart_parks_answers_fails_the_rest_and_resends_the_unsent(core) -> None:
    actor, link, started = core
    answer = await answer_hosted_call(actor, started)
    play = asyncio.ensure_future(actor.request(0, "calling.play", {"call_id": "c1"}))
    await until(lambda: len(link.of(m.RequestItem)) == 2)
    unsent = m.RequestItem("r-unsent", "calling.record", {"call_id": "c1"})
    link.sent.clear()
    actor.shard_restarted(0, [m.encode(unsent), ["garbage"]])
    with pytest.raises(RelayError) as caught:
        await play  # it may or may not have run: it fails
    assert caught.value.failure == "connection_lost" and not answer.done()  # parked
    assert link.of(m.RequestItem) == [unsent]  # never left: sent to the new one
    # The resumed session shows the call answered: the answer is done, not sent again.
    actor.apply(0, [state("c1", "answered", "e9"), m.encode(m.ResumedItem())])
    assert await answer == {} and actor.counters["commands_shown_done"] == 1
    assert link.of(m.RequestItem) == [unsent]
    await actor.host.tasks.cancel_all()


async def test_a_parked_command_not_shown_done_is_resent_with_its_request_id(core) -> None:
    actor, link, started = core
    answer = await answer_hosted_call(actor, started)
    await until(lambda: link.of(m.RequestItem))
    (sent,) = link.of(m.RequestItem)
    actor.shard_restarted(0, [])
    actor.apply(0, [m.encode(m.ResumedItem())])
    assert link.of(m.RequestItem) == [sent, sent] and actor.counters["commands_resent"] == 1
    actor.apply(0, [m.encode(m.ResultItem(sent.req_id, {"code": "200"}))])
    assert await answer == {"code": "200"}
    await actor.host.tasks.cancel_all()


async def test_new_dials_and_requests_take_the_shards_in_turn(core) -> None:
    actor, _link, _started = core
    assert [actor.next_shard() for _ in range(4)] == [1, 0, 1, 0]


def test_call_actor_options_take_the_apps_part_and_refuse_unknown_names() -> None:
    options = CallActorOptions.from_parts(
        {"handler_timeout": None, "request_timeout": 3.0, "log_job": "01"}, capacity=7, shards=3
    )
    assert (options.capacity, options.shards, options.request_timeout) == (7, 3, 3.0)
    assert options.handler_timeout is None and options.log_job == "01"
    assert CallActorOptions.from_parts(options.app_part(), capacity=7, shards=3) == options
    with pytest.raises(ValueError, match="request_timout"):
        CallActorOptions.from_parts({"request_timout": 3.0}, capacity=1, shards=1)
