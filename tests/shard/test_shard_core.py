"""The shard core's decisions, fed by hand (no Ray, no sockets): events, admission,
placement, slot release, requests."""

from __future__ import annotations

from relay_actors.errors import RelayError
from relay_actors.ray_runtime import actor_messages as m
from relay_actors.ray_runtime.link_protocol import Health, HealthStatus
from relay_actors.ray_runtime.pool_core import CallPlaced, CallReleased
from relay_actors.ray_runtime.shard_actions import (
    Command,
    CommandPurpose,
    LoseActor,
    RequestLease,
    WaitForRoom,
    WantCapacity,
)
from relay_actors.ray_runtime.shard_core import ShardCore
from relay_actors.ray_runtime.shard_requests import MAX_EARLY_REQUESTS
from relay_actors.ray_runtime.shard_room import MAX_ROOM_ROUNDS

from .conftest import Shell, grant, make_core, offer, state


def admit(core: ShardCore, shell: Shell, call_id: str, ack: str | None = None) -> None:
    core.on_event(offer(call_id), ack or f"ack-{call_id}")
    grant(core, shell)


# --- offers, placement, slot release ---------------------------------------------------------


def test_an_offer_is_placed_on_the_least_loaded_call_actor_and_acked_only_by_its_ack(shard) -> None:
    core, shell = shard
    admit(core, shell, "c1")
    admit(core, shell, "c2")
    assert core.routes.calls == {"c1": 0, "c2": 1}
    assert shell.items(0, m.OfferItem)[0].call_id == "c1" and shell.items(1, m.OfferItem)[0].call_id == "c2"
    assert shell.acked == []  # not before the CallActor acknowledged the frame
    core.link_acked(0, ["ack-c1"])
    assert shell.acked == ["ack-c1"]
    assert CallPlaced("c1", 0) in shell.reports


def test_a_redelivered_offer_already_placed_is_acked_not_placed_again(shard) -> None:
    core, shell = shard
    admit(core, shell, "c1")
    core.on_event(offer("c1"), "again")
    assert shell.acked == ["again"] and len(shell.items(0, m.OfferItem) + shell.items(1, m.OfferItem)) == 1


def test_over_the_limit_an_offer_is_dropped_and_acked() -> None:
    core, shell = make_core(budget=1)
    admit(core, shell, "c1")
    admit(core, shell, "c2")
    assert "c2" not in core.routes.calls
    assert "ack-c2" in shell.acked and core.counters["offers_dropped"] == 1
    assert shell.take(Command) == []


def test_over_the_limit_with_pass_the_offer_is_passed() -> None:
    core, shell = make_core(budget=1, over_limit="pass")
    admit(core, shell, "c1")
    admit(core, shell, "c2")
    (cmd,) = shell.take(Command)
    assert cmd.purpose is CommandPurpose.PASS and cmd.method == "calling.pass"
    assert cmd.params == {"call_id": "c2", "node_id": "n1"}
    assert "ack-c2" in shell.acked and core.counters["offers_passed"] == 1


def test_an_ended_call_frees_its_slot_for_the_next_offer() -> None:
    core, shell = make_core(budget=1)
    admit(core, shell, "c1")
    core.on_event(state("c1", "ended"), "ack-end")
    assert "c1" not in core.routes.calls and CallReleased("c1") in shell.reports
    # it still reaches the CallActor
    assert shell.items(0, m.EventItem)[-1].event_type == "calling.call.state"
    admit(core, shell, "c2")
    assert "c2" in core.routes.calls and core.counters["offers_dropped"] == 0


def test_a_passed_call_frees_its_slot_when_the_pass_succeeds() -> None:
    core, shell = make_core(budget=1)
    admit(core, shell, "c1")
    core.requests.on_request(0, "r1", "calling.pass", {"call_id": "c1"})
    (idx, req_id, method, params) = shell.requests[-1]
    core.requests.request_done(idx, req_id, method, params, {"code": "200"}, None)
    assert "c1" not in core.routes.calls and core.counters["calls_passed"] == 1
    assert shell.items(0, m.ResultItem)[-1].req_id == "r1"
    admit(core, shell, "c2")
    assert "c2" in core.routes.calls


def test_an_offer_whose_call_ended_while_waiting_for_a_slot_is_never_placed() -> None:
    core, shell = make_core(budget=1)
    admit(core, shell, "c1")
    core.on_event(offer("c2"), "ack-c2")  # waits: the slot is taken
    shell.take(RequestLease)  # (the router does not answer)
    assert core.leases is not None and core.leases.waiting
    core.on_event(state("c2", "ended"), "ack-ended")
    assert shell.acked == ["ack-c2", "ack-ended"] and core.counters["offers_ended_waiting"] == 1
    assert "c2" not in core.routes.calls and not core.leases.waiting


def test_no_call_actor_with_room_drops_the_offer_and_asks_for_capacity() -> None:
    core, shell = make_core(actors=1, capacity=1)
    admit(core, shell, "c1")
    admit(core, shell, "c2")
    assert "c2" not in core.routes.calls and "ack-c2" in shell.acked
    assert shell.take(WantCapacity) and core.counters["offers_no_capacity"] == 1


def test_offers_a_full_call_actor_refused_go_to_another() -> None:
    core, shell = make_core()
    admit(core, shell, "c1")
    refused_item = shell.items(0, m.OfferItem)[0]
    core.on_link_items(0, [m.encode(m.RefusedItem((refused_item,)))])
    assert core.routes.calls["c1"] == 1
    assert shell.items(1, m.OfferItem)[0].call_id == "c1"
    assert core.placement.capacity[0] == 0  # it said it is full: it takes no more


def test_a_refusal_of_a_call_placed_elsewhere_since_is_ignored() -> None:
    core, shell = make_core()
    admit(core, shell, "c1")
    core.on_link_items(1, [m.encode(m.RefusedItem((m.OfferItem("c1", {}, None),)))])
    assert core.routes.calls["c1"] == 0


# --- events ------------------------------------------------------------------------------------


def test_a_transfers_far_leg_is_acked_and_counted_apart_from_unroutable_events(shard) -> None:
    core, shell = shard
    leg = state("far-leg", "ringing")
    core.on_event(type(leg)(leg.event_type, {**leg.params, "direction": "outbound"}, "far-leg"), "a1")
    assert shell.acked == ["a1"]
    assert core.counters["events_other_legs"] == 1 and core.counters["events_unroutable"] == 0


def test_an_unroutable_event_is_acked_and_a_late_leg_of_an_abandoned_dial_hung_up(shard) -> None:
    core, shell = shard
    core.on_event(state("nobody", "answered"), "a1")
    assert shell.acked == ["a1"] and core.counters["events_unroutable"] == 1
    core.requests.on_request(0, "r1", "calling.dial", {"tag": "t1", "devices": []})
    core.on_link_items(0, [m.encode(m.DialAbandonedItem("t1"))])
    leg = state("leg1", "answered")
    leg.params["tag"] = "t1"
    leg_event = type(leg)(leg.event_type, {**leg.params, "tag": "t1"}, "leg1")
    core.on_event(leg_event, "a2")
    (cmd,) = shell.take(Command)
    assert cmd.purpose is CommandPurpose.END_ORPHAN and cmd.params["call_id"] == "leg1"


def test_a_full_link_hands_the_call_actor_to_the_lost_actor_policy(shard) -> None:
    core, shell = shard
    shell.full.add(0)
    admit(core, shell, "c1")
    (lose,) = shell.take(LoseActor)
    overflow, _ack = lose.overflow
    assert lose.idx == 0 and isinstance(overflow, m.OfferItem) and overflow.call_id == "c1"
    assert core.counters["link_overflows"] == 1


# --- requests ------------------------------------------------------------------------------------


def test_requests_before_the_relay_connection_wait_and_go_in_order() -> None:
    shell = Shell()
    core = ShardCore(0, shell)
    core.requests.on_request(0, "r1", "calling.answer", {"call_id": "c1"})
    core.requests.on_request(0, "r2", "calling.end", {"call_id": "c1"})
    assert shell.requests == []
    core.requests.relay_created("proto")
    assert [r[1] for r in shell.requests] == ["r1", "r2"]


def test_requests_that_waited_fail_when_start_up_fails() -> None:
    shell = Shell()
    core = ShardCore(0, shell)
    core.requests.on_request(0, "r1", "calling.answer", {"call_id": "c1"})
    core.requests.start_failed()
    (result,) = shell.items(0, m.FailureItem)
    assert result.req_id == "r1" and result.code == "connection_lost"
    core.requests.on_request(0, "r2", "calling.answer", {"call_id": "c1"})
    assert shell.items(0, m.FailureItem)[-1].code == "connection_lost"


def test_the_early_request_queue_is_bounded() -> None:
    shell = Shell()
    core = ShardCore(0, shell)
    for i in range(MAX_EARLY_REQUESTS + 1):
        core.requests.on_request(0, f"r{i}", "calling.answer", {"call_id": "c1"})
    assert len(core.requests.early) == MAX_EARLY_REQUESTS
    assert shell.items(0, m.FailureItem)[-1].code == "queue_full"


def test_a_request_for_a_call_of_another_call_actor_is_fenced(shard) -> None:
    core, shell = shard
    admit(core, shell, "c1")  # on 0
    core.requests.on_request(1, "r1", "calling.answer", {"call_id": "c1"})
    assert shell.requests == [] and core.counters["requests_fenced"] == 1
    assert shell.items(1, m.FailureItem)[-1].code == 410
    core.requests.on_request(0, "r2", "calling.answer", {"call_id": "c1"})
    assert shell.requests[-1][1] == "r2"


def test_a_failed_dial_forgets_its_tag_and_a_message_gets_its_early_states(shard) -> None:
    core, shell = shard
    core.requests.on_request(0, "r1", "calling.dial", {"tag": "t1"})
    assert core.dial_owner == {"t1": 0}
    core.requests.request_done(0, "r1", "calling.dial", {"tag": "t1"}, None, RelayError("500", "no"))
    assert core.dial_owner == {}
    core.requests.on_request(1, "r2", "messaging.send", {"body": "hi"})
    params = shell.requests[-1][3]
    assert params["context"] == "proto"  # the session's protocol by default
    early = type(offer("x"))("messaging.state", {"message_id": "m1", "message_state": "queued"}, "")
    core.on_event(early, "a-early")  # before the send result: kept
    core.requests.request_done(1, "r2", "messaging.send", params, {"message_id": "m1"}, None)
    assert shell.items(1, m.MsgStateItem)[0].params["message_state"] == "queued"
    assert core.msg_owner == {"m1": 1}


def test_a_settled_session_tells_every_call_actor_behind_the_events(shard) -> None:
    core, shell = shard
    admit(core, shell, "c1")
    core.on_event(state("c1", "answered"), "a1")
    core.session_settled()
    assert [type(item) for i, item, _ack in shell.sent if i == 0][-2:] == [m.EventItem, m.ResumedItem]
    assert shell.items(1, m.ResumedItem) == [m.ResumedItem()]


# --- offers that find every CallActor lagging ------------------------------------------------


def _lagging(core: ShardCore, *idxs: int) -> None:
    for idx in idxs:
        core.link_health(idx, Health(HealthStatus.SLOW, "oldest frame unacknowledged"))


def test_an_offer_waits_for_a_lagging_call_actor_instead_of_being_dropped() -> None:
    core, shell = make_core(actors=2)
    _lagging(core, 0, 1)
    admit(core, shell, "c1")
    assert core.room.waiting and shell.take(WaitForRoom) == [WaitForRoom("c1")]
    assert shell.acked == [] and core.counters["offers_dropped"] == 0
    core.link_health(1, Health(HealthStatus.OK))
    assert core.routes.calls == {"c1": 1} and shell.items(1, m.OfferItem)[0].event_id == "ack-c1"
    assert not core.room.waiting


def test_the_pool_is_asked_for_one_more_when_one_call_actor_is_left_to_take_calls() -> None:
    core, shell = make_core(actors=3)
    _lagging(core, 0)
    assert shell.take(WantCapacity) == []  # two take calls: no hurry
    _lagging(core, 1)
    assert shell.take(WantCapacity) == [WantCapacity()]  # one left: the next is started now
    assert core.counters["capacity_asked_ahead"] == 1
    _lagging(core, 2)
    assert shell.take(WantCapacity) == []  # asked already; a waiting offer asks again
    for idx in (0, 1, 2):
        core.link_health(idx, Health(HealthStatus.OK))
    _lagging(core, 1)
    assert shell.take(WantCapacity) == []  # two take calls again
    _lagging(core, 2)
    assert shell.take(WantCapacity) == [WantCapacity()]  # a new spell: asked again
    core.link_health(2, Health(HealthStatus.OK))
    core.link_health(2, Health(HealthStatus.SLOW, "unreachable for 2.0 s", reachable=False))
    assert shell.take(WantCapacity) == []  # a process restarting: Ray brings it back


def test_offers_waiting_on_lagging_call_actors_ask_for_one_more_once_and_go_to_it() -> None:
    core, shell = make_core(actors=2)
    _lagging(core, 0)
    assert shell.take(WantCapacity) == [WantCapacity()]  # one left to take calls: asked ahead
    _lagging(core, 1)
    for cid in ("c1", "c2", "c3"):
        admit(core, shell, cid)
    assert shell.take(WantCapacity) == [WantCapacity()]  # once for the three
    assert list(core.room.waiting) == ["c1", "c2", "c3"]
    core.pool.add_call_actors([(0, 10), (1, 10), (2, 10)], {})  # the pool added CallActor 2
    assert not core.routes.calls  # not before its link is up
    core.call_actor_linked(2)
    assert core.routes.calls == {"c1": 2, "c2": 2, "c3": 2} and not core.room.waiting
    assert [item.call_id for item in shell.items(2, m.OfferItem)] == ["c1", "c2", "c3"]
    _lagging(core, 2)
    admit(core, shell, "c4")  # all lag again: a new episode asks again
    assert shell.take(WantCapacity) == [WantCapacity()]


def test_an_offer_that_waited_long_enough_goes_to_the_lagging_call_actor_not_dropped() -> None:
    core, shell = make_core(actors=1, budget=1)
    _lagging(core, 0)
    admit(core, shell, "c1")
    core.room.capacity_answered()  # the router added no CallActor (at max_call_actors)
    core.room.over("c1")
    # Below the limit an offer is never dropped: the lagging CallActor takes it, and RELAY's
    # ack waits for its acknowledgement (a CallActor that died meanwhile means a redelivery).
    assert core.routes.calls == {"c1": 0} and shell.items(0, m.OfferItem)[0].event_id == "ack-c1"
    assert "ack-c1" not in shell.acked and core.counters["offers_no_capacity"] == 0
    assert core.counters["offers_placed_on_lagging"] == 1


def test_while_the_pool_grows_an_offer_waits_for_the_new_call_actor_not_a_stalled_one() -> None:
    # CI on a busy machine: the CallActor asked for took longer than one room wait to reach
    # the shard, and the offers went to the stalled CallActors, never answered.
    core, shell = make_core(actors=2)
    _lagging(core, 0, 1)
    assert shell.take(WantCapacity) == [WantCapacity()] and core.room.capacity_asked == 1
    admit(core, shell, "c1")
    assert shell.take(WaitForRoom) == [WaitForRoom("c1")]
    for rounds in range(1, MAX_ROOM_ROUNDS):
        core.room.over("c1", rounds)  # the router has not answered: another round
        assert shell.take(WaitForRoom) == [WaitForRoom("c1", rounds + 1)] and not core.routes.calls
    core.pool.add_call_actors([(0, 10), (1, 10), (2, 10)], {})  # the router added CallActor 2
    assert not core.routes.calls  # (its link is not up yet)
    core.call_actor_linked(2)
    assert core.routes.calls == {"c1": 2} and core.counters["room_waits_extended"] == MAX_ROOM_ROUNDS - 1
    core.room.over("c1", MAX_ROOM_ROUNDS)  # the last round's timer: nothing left to do
    assert core.routes.calls == {"c1": 2} and core.counters["offers_placed_on_lagging"] == 0
    # Known but its link not up when the wait is over: it takes the offer, no more rounds.
    _lagging(core, 2)
    admit(core, shell, "c2")
    core.pool.add_call_actors([(3, 10)], {})
    core.room.over("c2", 1)
    assert core.routes.calls["c2"] == 3 and shell.take(WaitForRoom) == [WaitForRoom("c2")]
    for _ in range(core.room.capacity_asked):
        core.room.capacity_answered()
    assert core.room.capacity_asked == 0


def test_the_wait_for_a_growing_pool_is_bounded_and_ends_when_the_router_answers() -> None:
    core, shell = make_core(actors=2)
    _lagging(core, 0, 1)
    admit(core, shell, "c1")
    core.room.over("c1", MAX_ROOM_ROUNDS)  # the router never answered: the bound holds
    assert core.routes.calls == {"c1": 0} and core.counters["offers_placed_on_lagging"] == 1
    core.room.capacity_answered()
    core.room.capacity_answered()  # (an answer more than asked for never goes below zero)
    assert core.room.capacity_asked == 0
    admit(core, shell, "c2")  # (asks the router again)
    assert core.room.capacity_asked == 1
    core.room.capacity_answered()  # the router added none (at max_call_actors): no more rounds
    shell.take(WaitForRoom)
    core.room.over("c2", 1)
    assert core.routes.calls == {"c1": 0, "c2": 1} and shell.take(WaitForRoom) == []


def test_an_offer_whose_wait_ends_with_no_call_actor_at_all_is_dropped_and_its_slot_freed() -> None:
    core, shell = make_core(actors=1, budget=1)
    _lagging(core, 0)
    admit(core, shell, "c1")
    core.placement.set_unavailable(0, "retiring")  # no longer only lagging: it takes nothing new
    core.room.capacity_answered()
    core.room.over("c1")
    assert "ack-c1" in shell.acked and core.counters["offers_no_capacity"] == 1
    core.placement.set_available(0, "retiring")
    core.link_health(0, Health(HealthStatus.OK))
    admit(core, shell, "c2")  # the slot came back
    assert core.routes.calls == {"c2": 0}


def test_a_call_that_ends_while_waiting_for_room_is_never_placed() -> None:
    core, shell = make_core(actors=1, budget=1)
    _lagging(core, 0)
    admit(core, shell, "c1")
    core.on_event(state("c1", "ended"), "ack-end")
    assert shell.acked == ["ack-c1", "ack-end"] and not core.room.waiting
    core.link_health(0, Health(HealthStatus.OK))
    assert shell.items(0, m.OfferItem) == []
    admit(core, shell, "c2")
    assert core.routes.calls == {"c2": 0}


def test_full_call_actors_still_drop_at_once() -> None:
    core, shell = make_core(actors=1, capacity=1)
    admit(core, shell, "c1")
    _lagging(core, 0)
    admit(core, shell, "c2")  # the lagging one has no room either: no wait
    assert "ack-c2" in shell.acked and shell.take(WaitForRoom) == []


def test_malformed_items_from_a_call_actor_are_counted_and_the_rest_applied(shard) -> None:
    """A buggy or hostile (but authenticated) peer costs its bad items, never the batch."""
    core, shell = shard
    batch = [
        ["req", "r1"],
        "junk",
        {"req": 1},
        ["refused", [["event", "c1", "t", {}, 0, None]]],
        m.encode(m.LostItem("c1", "x")),  # what only a shard sends
        m.encode(m.RequestItem("r2", "calling.answer", {"call_id": "c9"})),
    ]
    core.on_link_items(0, batch)
    assert core.counters["malformed_link_items"] == 4 and core.counters["unknown_link_items"] == 1
    assert [r[1] for r in shell.requests] == ["r2"]


def test_a_new_call_actor_takes_calls_once_its_link_is_up() -> None:
    core, shell = make_core(actors=1)
    core.pool.add_call_actors([(0, 10), (1, 10)], {})  # the pool grew: CallActor 1 is starting
    for cid in ("c1", "c2"):
        admit(core, shell, cid)
    assert core.routes.calls == {"c1": 0, "c2": 0}  # not on 1: its process may not even run yet
    core.call_actor_linked(1)
    admit(core, shell, "c3")
    assert core.routes.calls["c3"] == 1


def test_offers_that_find_only_call_actors_not_linked_yet_wait_for_them_without_asking_for_more() -> None:
    core, shell = make_core(actors=0)
    core.pool.add_call_actors([(0, 10), (1, 10)], {})  # the pool's first CallActors, linking
    admit(core, shell, "c1")
    assert list(core.room.waiting) == ["c1"] and shell.take(WantCapacity) == []
    core.call_actor_linked(0)
    assert core.routes.calls == {"c1": 0} and not core.room.waiting
    # One whose wait ends before any link is up goes to a CallActor still linking (its link's
    # queue holds it; RELAY's ack waits for the CallActor's): never dropped below the limit.
    core.placement.set_unavailable(0, "linking")
    admit(core, shell, "c2")
    core.room.over("c2")
    assert core.routes.calls["c2"] in (0, 1) and "ack-c2" not in shell.acked
    assert core.counters["offers_no_capacity"] == 0 and core.counters["offers_dropped"] == 0


def test_an_offer_whose_wait_ends_goes_to_a_call_actor_coming_up_rather_than_a_stalled_one() -> None:
    core, shell = make_core(actors=2)
    _lagging(core, 0, 1)  # both loops stalled
    core.pool.add_call_actors([(0, 10), (1, 10), (2, 10)], {})  # the pool added 2: linking
    admit(core, shell, "c1")
    core.room.over("c1")  # 2's process took longer than the wait to come up
    assert core.routes.calls == {"c1": 2}  # its link's queue holds it; 0 and 1 are stalled
    # Unreachable past slow_after as well (a busy machine starts it slowly): still the one
    # coming up, never the stalled loops (CI: each of them got one of three offers).
    core.link_health(2, Health(HealthStatus.SLOW, "unreachable for 2.0 s", reachable=False))
    for cid in ("c2", "c3"):
        admit(core, shell, cid)
        core.room.over(cid, MAX_ROOM_ROUNDS)
    assert core.routes.calls == {"c1": 2, "c2": 2, "c3": 2}
