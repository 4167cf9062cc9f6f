"""The lost-actor policy and the route rebuild of a restarted shard, fed by hand: every
branch, as explicit state (no Ray, no sockets)."""

from __future__ import annotations

from relay_actors.errors import RelayError
from relay_actors.ray_runtime import actor_messages as m
from relay_actors.ray_runtime.admission import LeaseLedger, lease_block
from relay_actors.ray_runtime.pool_core import CallMoved, CallsHeld
from relay_actors.ray_runtime.shard_actions import (
    AskLastKnown,
    AskOwned,
    Command,
    CommandPurpose,
    ConfirmLoss,
    LossHandled,
    RetryHangups,
    StoreUnconfirmed,
)
from relay_actors.ray_runtime.shard_core import ShardCore
from relay_actors.ray_runtime.shard_recovery import REBUILD_DEADLINE, LossPhase

from .conftest import Shell, grant, linked, make_core, offer, state

NOTHING = {"calls": [], "dials": [], "messages": []}


def admit(core: ShardCore, shell: Shell, call_id: str) -> None:
    core.on_event(offer(call_id), f"ack-{call_id}")
    grant(core, shell)


def end_lost_calls(core: ShardCore, shell: Shell, works: bool = True) -> list[Command]:
    commands = [cmd for cmd in shell.take(Command) if cmd.purpose is CommandPurpose.END_LOST]
    for cmd in commands:
        core.command_done(cmd, None if works else RelayError("500", "busy"))
    return commands


def test_a_restarted_call_actor_s_calls_are_hung_up_fenced_then_sent_lost() -> None:
    core, shell = make_core(actors=2)
    admit(core, shell, "c1")  # on 0
    shell.acknowledge(0)
    assert core.recovery.call_actor_lost(0, "inc2", []) is True
    assert not core.placement.is_available(0)  # no new calls meanwhile
    core.requests.on_request(0, "r1", "calling.answer", {"call_id": "c1"})  # a late command of the old one
    assert shell.items(0, m.FailureItem)[-1].code == 410
    (cmd,) = end_lost_calls(core, shell)
    assert cmd.params == {"call_id": "c1", "node_id": "n1", "reason": "error"}
    assert core.recovery.losses[0].phase is LossPhase.CONFIRMING
    assert shell.take(ConfirmLoss) == [ConfirmLoss(0)]
    core.recovery.loss_confirmed(0, None)
    assert shell.items(0, m.LostItem)[-1] == m.LostItem("c1", "call_actor_lost")
    assert core.placement.is_available(0)
    (done,) = shell.take(LossHandled)
    assert done.result == {"calls": 1, "replaced": 0, "hung_up": 1}
    assert core.counters["calls_lost_actor"] == 1 and core.counters["calls_hung_up_lost_actor"] == 1


def test_a_loss_is_handled_once_per_incarnation_and_not_twice_at_once() -> None:
    core, shell = make_core()
    assert core.recovery.call_actor_lost(0, "inc2", [])
    assert not core.recovery.call_actor_lost(0)  # in progress
    shell.take(ConfirmLoss)
    core.recovery.loss_confirmed(0, None)
    assert not core.recovery.call_actor_lost(0, "inc2", [])  # this incarnation's was handled
    assert core.recovery.call_actor_lost(0, "inc3", [])  # a new one is a new loss


def test_offers_it_never_acknowledged_are_placed_elsewhere_with_their_events() -> None:
    core, shell = make_core(actors=2)
    admit(core, shell, "c1")  # on 0, acknowledged
    shell.acknowledge(0)
    admit(core, shell, "c2")  # on 1
    admit(core, shell, "c3")  # on 0, never acknowledged
    core.on_event(state("c3", "answered"), "ack-c3-state")  # follows it, unacknowledged too
    core.recovery.call_actor_lost(0)  # unreachable: the shell voids the link session
    assert core.routes.calls == {"c2": 1, "c3": 1}
    offers = shell.items(1, m.OfferItem)
    assert [o.call_id for o in offers] == ["c2", "c3"]
    assert offers[-1].event_id == "ack-c3"  # its ack goes with it
    last = shell.items(1, m.EventItem)[-1]
    assert (last.call_id, last.event_type) == ("c3", "calling.call.state")
    (cmd,) = end_lost_calls(core, shell)
    assert cmd.call_id == "c1" and core.counters["offers_replaced"] == 1
    assert "c3" not in core.requests.fenced and "c1" in core.requests.fenced


def test_events_of_its_calls_it_never_acknowledged_are_acked_under_hangup() -> None:
    core, shell = make_core(actors=2)
    admit(core, shell, "c1")
    shell.acknowledge(0)
    core.on_event(state("c1", "answered"), "ack-state")
    core.recovery.call_actor_lost(0)
    assert "ack-state" in shell.acked


def test_rehome_moves_its_calls_and_their_events_to_a_live_call_actor() -> None:
    core, shell = make_core(actors=2, policy="rehome")
    admit(core, shell, "c1")
    shell.acknowledge(0)
    core.on_event(state("c1", "answered"), "ack-state")
    core.recovery.call_actor_lost(0)
    assert core.routes.calls == {"c1": 1}
    assert shell.items(1, m.AdoptItem)[0].call_id == "c1"
    assert shell.items(1, m.EventItem)[-1].call_id == "c1" and CallMoved("c1", 1) in shell.reports
    assert shell.take(Command) == []  # nothing hung up
    assert core.recovery.losses[0].phase is LossPhase.CONFIRMING


def test_rehome_without_room_hangs_up() -> None:
    core, shell = make_core(actors=1, policy="rehome")
    admit(core, shell, "c1")
    shell.acknowledge(0)
    core.recovery.call_actor_lost(0)
    (cmd,) = end_lost_calls(core, shell)
    assert cmd.call_id == "c1"


def test_a_failed_hang_up_keeps_its_slot_is_stored_and_retried_until_confirmed() -> None:
    core, shell = make_core(actors=2, budget=1)
    admit(core, shell, "c1")
    shell.acknowledge(0)
    core.recovery.call_actor_lost(0)
    end_lost_calls(core, shell, works=False)
    assert core.unconfirmed == {"c1"} and core.counters["lost_call_hangup_failures"] == 1
    assert shell.take(StoreUnconfirmed)[-1].calls == [["c1", "n1"]]
    assert shell.take(RetryHangups)
    admit(core, shell, "c2")  # the slot is still held: over the limit
    assert "c2" not in core.routes.calls
    core.recovery.retry_hangups()
    assert [cmd.call_id for cmd in end_lost_calls(core, shell)] == ["c1"]
    assert core.unconfirmed == set() and shell.take(StoreUnconfirmed)[-1].calls == []
    admit(core, shell, "c3")
    assert "c3" in core.routes.calls


def test_a_hang_up_of_a_call_already_gone_is_confirmed() -> None:
    core, shell = make_core()
    admit(core, shell, "c1")
    shell.acknowledge(0)
    core.recovery.call_actor_lost(0)
    (cmd,) = [c for c in shell.take(Command)]
    core.command_done(cmd, RelayError("404", "no such call"))
    assert core.unconfirmed == set() and core.counters["calls_hung_up_lost_actor"] == 1


# --- a restarted shard: the rebuild --------------------------------------------------------------


def restarted(unknown_calls: list[str]) -> tuple[ShardCore, Shell]:
    """A shard that restarted: CallActor 0 answered (holding ``c0``), 1 did not."""
    shell = Shell()
    core = ShardCore(0, shell)
    linked(core, core.pool.add_call_actors([(0, 10), (1, 10)], {}))
    core.recovery.rebuilt({0: {"calls": [["c0", "n1"]], "dials": [], "messages": []}, 1: None}, 0.0)
    core.start_leases(2, 4, 1, [])
    core.requests.relay_created("proto")
    return core, shell


def test_the_rebuild_reports_what_it_holds_and_keeps_the_calls_of_an_actor_that_did_not_answer() -> None:
    # An ask that raised (a timeout, the CallActor restarting) is "unknown", as None is.
    shell = Shell()
    core = ShardCore(0, shell)
    linked(core, core.pool.add_call_actors([(0, 10), (1, 10), (2, 10)], {}))
    held = {"calls": [["c0", "n1"]], "dials": [], "messages": []}
    found = core.recovery.rebuilt({0: held, 1: TimeoutError("owned"), 2: None}, 0.0)
    assert found and core.recovery.unknown() == {1, 2} and core.routes.calls == {"c0": 0}
    assert shell.reports == [CallsHeld((("c0", 0),), (1, 2))]


def test_events_for_calls_it_cannot_route_wait_for_the_unknown_call_actor() -> None:
    core, shell = restarted(["c1"])
    core.on_event(state("c1", "answered"), "ack-1")
    core.on_event(state("c1", "ended"), "ack-2")
    assert shell.acked == [] and core.counters["events_held"] == 2
    core.on_event(state("c0", "answered"), "ack-0")  # a known call goes at once
    assert shell.items(0, m.EventItem)[-1].call_id == "c0"
    core.recovery.tick(1.0)
    assert AskOwned(1) in shell.actions
    core.recovery.owned_answer(1, {"calls": [["c1", "n1"]], "dials": [], "messages": []})
    events = shell.items(1, m.EventItem)
    assert [(e.call_id, e.params["call_state"], e.event_id) for e in events] == [
        ("c1", "answered", "ack-1"),
        ("c1", "ended", "ack-2"),
    ]
    assert "c1" not in core.routes.calls  # it ended
    assert core.counters["held_events_released"] == 2


def test_held_events_of_calls_nobody_holds_are_unroutable_once_every_actor_answered() -> None:
    core, shell = restarted([])
    core.on_event(state("zz", "answered"), "ack-z")
    core.recovery.owned_answer(1, NOTHING)
    assert shell.acked == ["ack-z"] and core.counters["events_unroutable"] == 1


def test_an_unknown_call_actor_past_the_deadline_is_lost_with_the_calls_the_router_knew() -> None:
    core, shell = restarted([])
    core.on_event(state("c1", "answered"), "ack-1")
    core.recovery.tick(REBUILD_DEADLINE + 1)
    assert shell.take(AskLastKnown) == [AskLastKnown(1)] and core.counters["owned_given_up"] == 1
    assert core.recovery.losses[1].phase is LossPhase.LEARNING
    core.recovery.last_known(1, ["c1"])
    (cmd,) = end_lost_calls(core, shell)
    assert cmd.call_id == "c1"
    assert not core.recovery.is_unknown(1)
    # The held event was of a call now taken from it: acked, not delivered.
    assert "ack-1" in shell.acked


def test_a_session_not_resumed_loses_what_the_unknown_call_actor_holds_too() -> None:
    core, shell = restarted([])
    core.connected(restored=False, protocol="proto")
    assert shell.items(0, m.LostItem)[0].call_id == "c0" and "c0" not in core.routes.calls
    core.recovery.owned_answer(1, {"calls": [["c9", "n1"]], "dials": [], "messages": []})
    assert shell.items(1, m.LostItem)[0].call_id == "c9" and "c9" not in core.routes.calls


def test_a_retired_call_actor_is_asked_nothing_and_holds_nothing() -> None:
    core, shell = restarted([])
    assert core.pool.busy_with(1, 0) == 1  # not asked yet: it may hold anything
    assert not core.pool.retire(1, 0)
    core.placement.forget(1)  # (the router retired it meanwhile)
    core.recovery.tick(1.0)
    assert not core.recovery.is_unknown(1) and AskOwned(1) not in shell.actions


def _restarted_knowing(incarnation: str) -> tuple[ShardCore, Shell]:
    """A shard that restarted after CallActor 0 did: the rebuild adopted ``c0`` from
    ``incarnation``, and the shard placed ``c1`` there since."""
    shell = Shell()
    core = ShardCore(0, shell)
    linked(core, core.pool.add_call_actors([(0, 10)], {}))
    held = {"calls": [["c0", "n1"]], "dials": [], "messages": [], "incarnation": incarnation}
    core.recovery.rebuilt({0: held}, 0.0)
    core.test_router = LeaseLedger(10, 1, 1)  # type: ignore[attr-defined]
    core.start_leases(2, lease_block(10, 1), 1, [])
    grant(core, shell)
    core.requests.relay_created("proto")
    admit(core, shell, "c1")
    shell.acknowledge(0)  # c1's handler runs there
    return core, shell


def test_a_loss_older_than_the_shard_ends_none_of_the_calls_on_the_new_incarnation() -> None:
    # Chaos, kill_call_actor_then_connection: CallActor 0 and then this shard died; the
    # restarted shard adopted from and linked to the new incarnation, and the router's
    # notice of the old one's loss came seconds later. It used to hang up c0 and c1, alive.
    core, shell = _restarted_knowing("inc2")
    assert core.routes.calls == {"c0": 0, "c1": 0}
    assert core.recovery.call_actor_lost(0, "inc2", bound="inc2", previous="inc1") is False
    assert end_lost_calls(core, shell) == [] and core.routes.calls == {"c0": 0, "c1": 0}
    assert core.placement.is_available(0)
    assert core.counters["losses_older_than_the_shard"] == 1
    assert not core.recovery.call_actor_lost(0, "inc2", bound="inc2", previous="inc1")  # once only
    # A later restart of the one it knows is a loss.
    assert core.recovery.call_actor_lost(0, "inc3", bound="inc2", previous="inc2")
    assert {cmd.params["call_id"] for cmd in end_lost_calls(core, shell)} == {"c0", "c1"}


def test_a_notice_naming_the_lost_incarnation_applies_only_to_a_shard_that_has_something_on_it() -> None:
    # The router names both: the lost incarnation (previous) and the one that replaced it.
    core, shell = _restarted_knowing("inc2")  # bound to, and adopted from, inc2
    assert core.recovery.call_actor_lost(0, "inc2", bound="inc2", previous="inc1") is False
    assert end_lost_calls(core, shell) == [] and core.counters["losses_older_than_the_shard"] == 1
    # A notice two restarts late: inc1 -> inc2 told while the shard knows only inc3.
    core, shell = _restarted_knowing("inc3")
    assert core.recovery.call_actor_lost(0, "inc2", bound="inc3", previous="inc1") is False
    assert end_lost_calls(core, shell) == [] and core.routes.calls == {"c0": 0, "c1": 0}
    # The shard's link is on the lost incarnation: its calls there end.
    core, shell = _restarted_knowing("inc1")
    assert core.recovery.call_actor_lost(0, "inc2", bound="inc1", previous="inc1") is True
    assert {cmd.params["call_id"] for cmd in end_lost_calls(core, shell)} == {"c0", "c1"}
    # Its calls were adopted from the lost incarnation (the link not bound yet): they end.
    core, shell = _restarted_knowing("inc1")
    assert core.recovery.call_actor_lost(0, "inc2", bound=None, previous="inc1") is True
    assert "c0" in {cmd.params["call_id"] for cmd in end_lost_calls(core, shell)}
    # Adopted from two incarnations (one may be the lost one): they end.
    core, shell = _restarted_knowing("inc2")
    core.recovery.adopt_owned(0, {"calls": [], "dials": [], "messages": [], "incarnation": "inc1"})
    assert core.recovery.call_actor_lost(0, "inc3", bound="inc3", previous="inc1") is True
    # A loss the shard saw itself (its link's handshake, a deadline) names no lost incarnation.
    core, shell = _restarted_knowing("inc2")
    assert core.recovery.call_actor_lost(0, "inc3") is True


def test_a_late_notice_of_a_loss_the_shard_already_handled_ends_no_call_placed_since() -> None:
    # Chaos with a standby (kill_call_actor_then_connection): a shard that adopted c0 from
    # inc1 saw CallActor 0's loss itself (a deadline: no incarnation named) and handled it;
    # the CallActor did not answer the confirmation in time. New calls went to inc2. The
    # router's notice of inc1's loss then came: it used to end c2, alive on inc2, because
    # the calls adopted from inc1 were still counted as being there.
    core, shell = _restarted_knowing("inc1")
    assert core.recovery.call_actor_lost(0) is True
    assert {cmd.params["call_id"] for cmd in end_lost_calls(core, shell)} == {"c0", "c1"}
    assert shell.take(ConfirmLoss) == [ConfirmLoss(0)]
    core.recovery.loss_confirmed(0, None)
    assert core.placement.is_available(0)
    admit(core, shell, "c2")
    shell.acknowledge(0)
    assert core.routes.calls == {"c2": 0}
    assert core.recovery.call_actor_lost(0, "inc2", bound="inc2", previous="inc1") is False
    assert end_lost_calls(core, shell) == [] and core.routes.calls == {"c2": 0}
    # The link on the lost incarnation still (not reconnected): the notice is this shard's.
    core, shell = _restarted_knowing("inc1")
    assert core.recovery.call_actor_lost(0) is True
    end_lost_calls(core, shell)
    core.recovery.loss_confirmed(0, None)
    assert core.recovery.call_actor_lost(0, "inc2", bound="inc1", previous="inc1") is True
