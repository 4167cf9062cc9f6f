"""A shard core's recovery decisions: the route rebuild after a restart and the lost-actor policy.

Both used to be coroutines of the connection actor holding their state across
awaits; here each is explicit state, advanced by the inputs the shell feeds back
(:class:`ActorLoss` per lost CallActor, :class:`~relay_actors.ray_runtime.placement.RouteRebuild`
for the CallActors not asked yet). Owned by :class:`~relay_actors.ray_runtime.shard_core.ShardCore`.

The lost-actor policy of one CallActor goes through these phases:

``LEARNING``
    (only if the CallActor was still unknown since a restart) the router is asked which
    calls of this shard it last knew there (:class:`AskLastKnown`, :meth:`ShardRecovery.last_known`).
``ENDING``
    its link session is void; the offers it never acknowledged are placed elsewhere (no
    handler ran for them), the events following them re-routed; its other calls are
    fenced and then hung up (``hangup``) or moved to live CallActors (``rehome``); the
    hang-ups are in flight (:meth:`ShardRecovery.hangup_done` for each).
``CONFIRMING``
    the pool is refreshed and its new incarnation learned (:class:`ConfirmLoss`,
    :meth:`ShardRecovery.loss_confirmed`); then the calls taken from it are sent ``LOST``
    (an old incarnation still alive drops them), it takes calls again, and a report of
    the same incarnation is ignored from then on.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..protocol.events import RelayEvent
from . import actor_messages as m
from .placement import RouteRebuild
from .pool_core import CallMoved, CallPlaced, CallReleased, CallsHeld
from .shard_actions import (
    AskLastKnown,
    AskOwned,
    Command,
    CommandPurpose,
    ConfirmLoss,
    LinkEntry,
    LossHandled,
    RetryHangups,
)

if TYPE_CHECKING:
    from .shard_core import ShardCore, Waiting

__all__ = ["REBUILD_DEADLINE", "ActorLoss", "LossPhase", "ShardRecovery"]

log = logging.getLogger("relay_actors.ray_runtime.connection_actor")

#: A CallActor that has not said what it holds this long after the restart is given up:
#: the lost-actor policy applies to the calls the router last knew on it.
REBUILD_DEADLINE = 60.0
#: Events held meanwhile for calls this shard cannot route yet (beyond: unroutable).
MAX_HELD_EVENTS = 10_000
_NOTHING: dict[str, Any] = {"calls": [], "dials": [], "messages": []}
_RETRY_HANGUPS = RetryHangups()


class LossPhase(str, enum.Enum):
    """Where the lost-actor policy of one CallActor is (see module docstring)."""

    LEARNING = "learning"  # asking the router which calls it last knew there
    ENDING = "ending"  # its calls' hang-ups in flight
    CONFIRMING = "confirming"  # the pool refreshed, its incarnation asked


@dataclass(slots=True)
class ActorLoss:
    """The lost-actor policy in progress for one CallActor (see module docstring)."""

    idx: int
    #: The incarnation that replaced the lost one, if the detector knew it.
    incarnation: str | None
    #: What its link had not acknowledged (None: void the link session when applying).
    unacked: list[LinkEntry] | None
    phase: LossPhase
    #: The item that overflowed its link queue (it never took it either).
    overflow: LinkEntry | None = None
    #: The calls taken from it (fenced; sent ``LOST`` once confirmed).
    lost: list[str] = field(default_factory=list)
    #: Hang-ups in flight.
    ending: set[str] = field(default_factory=set)
    result: Counter[str] = field(default_factory=Counter)


class ShardRecovery:
    """Route rebuild and lost-actor policy of one shard core (see module docstring)."""

    def __init__(self, core: ShardCore) -> None:
        self.core = core
        #: CallActors this (restarted) shard could not ask for their calls yet, and the
        #: events it holds for calls it cannot route meanwhile.
        self.rebuild: RouteRebuild[Waiting] | None = None
        #: The session was not resumed while some CallActor was unknown: its calls are gone.
        self.rebuild_session_lost = False
        #: CallActor index → its loss being handled.
        self.losses: dict[int, ActorLoss] = {}
        #: CallActor index → the incarnation whose loss was last handled.
        self.incarnations: dict[int, str] = {}
        #: CallActor index → the incarnation whose calls this shard adopted in a rebuild
        #: ("": calls adopted from two incarnations).
        self.adopted_from: dict[int, str] = {}

    # --- the rebuild after a restart ------------------------------------------------------

    def is_unknown(self, idx: int) -> bool:
        return self.rebuild is not None and idx in self.rebuild.unknown

    def unknown(self) -> set[int]:
        return set(self.rebuild.unknown) if self.rebuild is not None else set()

    def rebuilt(self, answers: Mapping[int, dict[str, Any] | BaseException | None], now: float) -> bool:
        """What each CallActor said it holds for this shard at start-up (None, or the
        exception its ask raised: it did not answer; it is *unknown*, never "holds
        nothing", and asked again). The router's records of this shard's calls become
        what it holds now (a report batched before a kill -9 was lost with it); those on
        unknown CallActors are kept (unknown is not "ended"). True if any holds anything."""
        core = self.core
        found = False
        failed = []
        for idx, state in answers.items():
            if state is None or isinstance(state, BaseException):
                if state is not None:
                    log.warning(
                        "shard %d: CallActor %d did not say what it holds (%r); asking again",
                        core.shard,
                        idx,
                        state,
                    )
                failed.append(idx)
                continue
            calls = self.adopt_owned(idx, state)
            found = found or bool(calls or state["dials"] or state["messages"])
        if failed:
            self.rebuild = RouteRebuild(failed, now, deadline=REBUILD_DEADLINE, max_held=MAX_HELD_EVENTS)
        if found:
            log.warning(
                "connection shard %d restarted: re-adopted %d calls, %d dials, %d messages",
                core.shard,
                len(core.routes.calls),
                len(core.dial_owner),
                len(core.msg_owner),
            )
        core.fx.report(CallsHeld(tuple(core.routes.calls.items()), tuple(sorted(self.unknown()))))
        return found

    def leases_started(self) -> None:
        leases = self.core.leases
        if self.rebuild is not None and leases is not None and not leases.unknown:
            self.rebuild = None  # a first life: no earlier one placed calls anywhere

    def adopt_owned(self, idx: int, state: dict[str, Any]) -> list[str]:
        """Route to CallActor ``idx`` what it says it holds for this shard; returns the
        ids of the calls routed (those not routed already)."""
        core = self.core
        incarnation = state.get("incarnation")
        if incarnation:
            known = self.adopted_from.setdefault(idx, incarnation)
            if known != incarnation:
                self.adopted_from[idx] = ""
        calls = []
        for call_id, node_id in state["calls"]:
            if call_id in core.routes.calls:
                continue
            core.routes.add_call(call_id, idx)
            if node_id or call_id not in core.node_of:
                core.node_of[call_id] = node_id
            core.placement.placed_on(idx)
            calls.append(call_id)
        for tag in state["dials"]:
            core.dial_owner[tag] = idx
            core.routes.dials.start(tag)
        for message_id in state["messages"]:
            core.msg_owner[message_id] = idx
        return calls

    def tick(self, now: float) -> bool:
        """Time passed: ask the unknown CallActors that are due again, give up those past
        the deadline. False once nothing is pending (the shell stops ticking)."""
        rebuild = self.rebuild
        if rebuild is None or not rebuild.pending:
            return False
        for idx in rebuild.expired(now):
            self._give_up(idx)
        for idx in rebuild.due(now):
            if self.core.pool.knows(idx):
                self.core.fx.act(AskOwned(idx))
            else:  # retired by the router meanwhile: it held nothing of ours
                self.owned_answer(idx, _NOTHING)
        return True

    def owned_failed(self, idx: int, now: float) -> None:
        if self.rebuild is not None:
            self.core.counters["owned_retries"] += 1
            self.rebuild.failed(idx, now)

    def owned_answer(self, idx: int, state: dict[str, Any]) -> None:
        """CallActor ``idx`` is known now: route its calls, count them by id instead of
        the held slots, and route the events held for them (in their order)."""
        core = self.core
        rebuild = self.rebuild
        if rebuild is None or idx not in rebuild.unknown:
            return
        calls = self.adopt_owned(idx, state)
        for call_id in calls:
            core.fx.report(CallPlaced(call_id, idx))
        if core.leases is not None:
            core.lease_actions(core.leases.learned(idx, calls))
        if self.rebuild_session_lost:
            # Calls of the session the server did not resume: gone, as in ShardCore.connected.
            for call_id in calls:
                core.routes.remove_call(call_id)
                core.to_actor(idx, m.LostItem(call_id, "session_lost"), None)
                core.free_slot(call_id, idx)
        released = rebuild.resolved(idx, calls)
        core.counters["held_events_released"] += len(released)
        for _call_id, (event, ack_id) in released:
            core.on_event(event, ack_id)

    def _give_up(self, idx: int) -> None:
        """The deadline passed: the lost-actor policy, as for a CallActor that stayed
        unreachable (it asks the router for the calls last known there first)."""
        self.core.counters["owned_given_up"] += 1
        log.error(
            "shard %d: CallActor %d never said what it holds; applying the lost-calls policy",
            self.core.shard,
            idx,
        )
        started = self.call_actor_lost(idx)
        loss = self.losses.get(idx)
        if not started and (loss is None or loss.phase is not LossPhase.LEARNING):
            self.owned_answer(idx, _NOTHING)  # (its loss was handled already)

    def hold(self, event: RelayEvent, ack_id: str | None) -> bool:
        """An event for a call this shard cannot route while a CallActor it could not
        ask is unknown: it may be that actor's call, so it is held (not acked) until the
        answer comes; when the hold is full it is unroutable now (counted)."""
        rebuild = self.rebuild
        if rebuild is None or not event.call_id or not rebuild.pending:
            return False
        if rebuild.hold(event.call_id, (event, ack_id)):
            self.core.counters["events_held"] += 1
            return True
        self.core.counters["events_held_overflow"] += 1
        return False

    def session_lost(self) -> None:
        if self.rebuild is not None and self.rebuild.pending:
            self.rebuild_session_lost = True  # what the unknown CallActors hold is lost too

    def forget(self, idx: int) -> None:
        self.incarnations.pop(idx, None)
        self.adopted_from.pop(idx, None)

    # --- the lost-actor policy ------------------------------------------------------------

    def call_actor_lost(
        self,
        idx: int,
        incarnation: str | None = None,
        unacked: list[LinkEntry] | None = None,
        overflow: LinkEntry | None = None,
        bound: str | None = None,
        previous: str | None = None,
    ) -> bool:
        """CallActor ``idx`` is lost (a new incarnation, unreachable past the deadline, a
        full queue, or the router says so): start the policy. False if its loss is being
        handled, or this incarnation's was handled already (each loss is handled once),
        or the router's notice names the lost incarnation (``previous``) and this shard has
        nothing on it: neither its link (``bound``: the incarnation the link is bound to)
        nor any call it adopted in a rebuild.

        That last case is a compound fault: the CallActor restarted and this shard too (or
        the CallActor once more) before the router's notice reached it. This shard then only
        knew a later incarnation: what it routes there is alive, and hanging it up would end
        healthy calls."""
        if idx in self.losses or (incarnation is not None and self.incarnations.get(idx) == incarnation):
            return False
        adopted = self.adopted_from.get(idx)
        older = previous is not None and bound != previous and adopted not in (previous, "")
        if older and incarnation is not None and not self.is_unknown(idx):
            self.incarnations[idx] = incarnation
            self.core.counters["losses_older_than_the_shard"] += 1
            return False
        self.core.placement.set_unavailable(idx, "lost")
        loss = ActorLoss(idx, incarnation, unacked, LossPhase.ENDING, overflow)
        self.losses[idx] = loss
        if self.is_unknown(idx):  # lost before it said what it holds
            loss.phase = LossPhase.LEARNING
            self.core.fx.act(AskLastKnown(idx))
        else:
            self._apply(loss)
        return True

    def last_known(self, idx: int, calls: list[str]) -> None:
        """The router's answer to :class:`AskLastKnown` (empty if it could not say)."""
        loss = self.losses.get(idx)
        node_of = self.core.node_of
        self.owned_answer(
            idx, {"calls": [(cid, node_of.get(cid, "")) for cid in calls], "dials": [], "messages": []}
        )
        if loss is not None and loss.phase is LossPhase.LEARNING:
            loss.phase = LossPhase.ENDING
            self._apply(loss)

    def _apply(self, loss: ActorLoss) -> None:
        """What is decided at once: void the link, re-place what it never took, take its
        calls, dials and messages; then the hang-ups (or moves) of its calls."""
        core, idx = self.core, loss.idx
        # What was adopted from an earlier incarnation is taken now: a late notice of that
        # incarnation's loss is no longer this shard's (it would end the calls placed since).
        self.adopted_from.pop(idx, None)
        unacked = list(loss.unacked) if loss.unacked is not None else core.fx.reset_link(idx)
        if loss.overflow is not None:
            unacked.append(loss.overflow)
        unplaced = {item.call_id: (item, ack) for item, ack in unacked if isinstance(item, m.OfferItem)}
        loss.lost = [cid for cid, owner in core.routes.calls.items() if owner == idx and cid not in unplaced]
        loss.result["calls"] = len(loss.lost)
        for tag, owner in list(core.dial_owner.items()):
            if owner == idx:
                del core.dial_owner[tag]
                core.routes.dials.cancel(tag)
        for mid, owner in list(core.msg_owner.items()):
            if owner == idx:
                del core.msg_owner[mid]
        for cid in loss.lost:
            core.routes.remove_call(cid)
            core.requests.fence(cid)
        rest = self._place_unplaced(loss, unacked, unplaced)
        if core.on_call_actor_lost == "rehome":
            hang_up = self._rehome(loss)
            moved = set(loss.lost) - set(hang_up)
            # Their events it never acknowledged follow them, in order.
            for item, ack in rest:
                if isinstance(item, m.EventItem) and item.call_id in moved:
                    core.to_actor(core.routes.calls[item.call_id], item, ack)
                elif ack:
                    core.fx.ack([ack])
        else:
            hang_up = loss.lost
            # Events of calls it held are consumed by the policy: ack them.
            acks = [ack for _item, ack in rest if ack]
            if acks:
                core.fx.ack(acks)
        loss.ending = set(hang_up)
        for cid in hang_up:
            params = {"call_id": cid, "node_id": core.node_of.get(cid, ""), "reason": "error"}
            core.fx.act(Command(CommandPurpose.END_LOST, "calling.end", params, cid))
        if not loss.ending:
            self._ended(loss)

    def _place_unplaced(
        self, loss: ActorLoss, unacked: list[LinkEntry], unplaced: dict[str, tuple[m.OfferItem, str | None]]
    ) -> list[LinkEntry]:
        """Offers it never saw are placed elsewhere, their slots kept; their later events
        it never acknowledged follow them, in order (routed afresh: the call may have
        ended meanwhile, or found no room and been dropped). Returns the other entries."""
        core = self.core
        for cid, (offer, ack) in unplaced.items():
            core.routes.remove_call(cid)
            core.fx.report(CallReleased(cid))
            core.place_elsewhere(cid, offer.params, ack, exclude=loss.idx)
        loss.result["replaced"] = len(unplaced)
        core.counters["offers_replaced"] += len(unplaced)
        rest: list[LinkEntry] = []
        for item, ack in unacked:
            if isinstance(item, m.EventItem) and item.call_id in unplaced:
                core.on_event(RelayEvent(item.event_type, item.params, item.call_id, item.timestamp), ack)
            elif not isinstance(item, m.OfferItem):
                rest.append((item, ack))
        return rest

    def _rehome(self, loss: ActorLoss) -> list[str]:
        """Move the lost calls to live CallActors (in order with their later events);
        returns those no actor has room for."""
        core = self.core
        homeless = []
        for cid in loss.lost:
            target = core.placement.pick()
            if target is None:
                homeless.append(cid)
                continue
            core.routes.add_call(cid, target)
            core.placement.placed_on(target)
            params = {"call_id": cid, "node_id": core.node_of.get(cid, ""), "call_state": "answered"}
            core.to_actor(target, m.AdoptItem(cid, params), None)
            core.fx.report(CallMoved(cid, target))
            loss.result["rehomed"] += 1
        core.counters["calls_rehomed"] += loss.result["rehomed"]
        return homeless

    def hangup_done(self, call_id: str, confirmed: bool, error: BaseException | None) -> None:
        """A hang-up of a lost CallActor's call came back. Its slot is freed only once the
        end is confirmed (accepted, or the call is gone); a failed one keeps its slot, is
        stored (no CallActor holds the call) and retried."""
        core = self.core
        if confirmed:
            core.end_confirmed(call_id)
        else:
            core.counters["lost_call_hangup_failures"] += 1
            log.warning("hang-up of %s (its CallActor was lost) failed: %r; retrying", call_id, error)
            if core.leases is not None:
                core.leases.hangup_failed(call_id)
            self.hangups_pending()
        for loss in list(self.losses.values()):
            if call_id in loss.ending:
                loss.ending.discard(call_id)
                if confirmed:
                    loss.result["hung_up"] += 1
                    core.counters["calls_hung_up_lost_actor"] += 1
                if not loss.ending and loss.phase is LossPhase.ENDING:
                    self._ended(loss)

    def hangups_pending(self) -> None:
        self.core.store_unconfirmed()
        self.core.fx.act(_RETRY_HANGUPS)

    def retry_hangups(self) -> None:
        """Send the unconfirmed hang-ups again (the shell calls this with backoff)."""
        core = self.core
        for cid in sorted(core.unconfirmed):
            params = {"call_id": cid, "node_id": core.node_of.get(cid, ""), "reason": "error"}
            core.fx.act(Command(CommandPurpose.END_LOST, "calling.end", params, cid))

    def _ended(self, loss: ActorLoss) -> None:
        self.core.counters["calls_lost_actor"] += len(loss.lost)
        loss.phase = LossPhase.CONFIRMING
        self.core.fx.act(ConfirmLoss(loss.idx))

    def loss_confirmed(self, idx: int, incarnation: str | None) -> None:
        """The pool is refreshed and ``incarnation`` is the CallActor's now (None: it did
        not answer): it takes calls again; the calls taken from it are sent ``LOST``
        (should the old incarnation still be alive, it drops them; its commands for them
        are refused meanwhile)."""
        core = self.core
        loss = self.losses.pop(idx, None)
        if loss is None:
            return
        self.incarnations[idx] = loss.incarnation or incarnation or ""
        if core.pool.knows(idx):
            for cid in loss.lost:
                core.to_actor(idx, m.LostItem(cid, "call_actor_lost"), None)
        core.placement.recount(idx, sum(1 for owner in core.routes.calls.values() if owner == idx))
        core.placement.set_available(idx, "lost")
        core.fx.act(LossHandled(idx, dict(loss.result)))
