"""The shard core: every decision of a connection actor, sans-IO (no ``ray``, no sockets).

Inputs are what happens to a shard — a RELAY event with its ack id
(:meth:`ShardCore.on_event`), link items from a CallActor (:meth:`~ShardCore.on_link_items`),
link acknowledgements and health, a CallActor restarted or lost, lease replies and
timeouts, request and command results, the RELAY connection made or resumed, what a
CallActor says it owns, the pool, time. Outputs go to the shell through
:class:`~relay_actors.ray_runtime.shard_actions.ShardEffects`: direct calls on the
per-event path, typed actions otherwise.

It holds the sans-IO units that already decide parts of this: the routing table
(:class:`~relay_actors.protocol.routing.EventRouter`), the lease unit
(:class:`~relay_actors.ray_runtime.admission.ShardLeases`), placement and the route
rebuild (:mod:`relay_actors.ray_runtime.placement`). The lost-actor policy and the
rebuild after a restart live in :class:`~relay_actors.ray_runtime.shard_recovery.ShardRecovery`
(``core.recovery``), CallActors' requests in
:class:`~relay_actors.ray_runtime.shard_requests.ShardRequests` (``core.requests``), the pool's
snapshots and retirement in :class:`~relay_actors.ray_runtime.shard_pool.ShardPool`
(``core.pool``), offers waiting for a CallActor that lags in
:class:`~relay_actors.ray_runtime.shard_room.ShardRoomWait` (``core.room``): parts this core owns.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from .. import tracing
from ..dialing import AbandonedDials
from ..errors import RelayError
from ..protocol import constants as c
from ..protocol.events import RelayEvent
from ..protocol.messages import MessageTracker
from ..protocol.routing import EventRouter, Route, is_other_leg
from . import actor_messages as m
from . import admission as adm
from .link_protocol import Health, HealthStatus
from .placement import Placement
from .pool_core import CallPlaced, CallReleased
from .shard_actions import (
    Checkpoint,
    Command,
    CommandPurpose,
    LoseActor,
    RequestLease,
    ShardEffects,
    StoreUnconfirmed,
    TrackContexts,
)
from .shard_pool import ShardPool
from .shard_recovery import ShardRecovery
from .shard_requests import ShardRequests
from .shard_room import ShardRoomWait, Waiting

__all__ = ["ShardCore", "Waiting", "shard_stats"]

log = logging.getLogger("relay_actors.ray_runtime.connection_actor")

_CHECKPOINT = Checkpoint()


class ShardCore:
    """One shard's decisions (see module docstring).

    Args:
        shard: this shard's number.
        effects: the shell that carries the decisions out.
        over_limit: ``"drop"`` (default) or ``"pass"`` an offer over the limit.
        on_call_actor_lost: ``"hangup"`` (default) or ``"rehome"``.
    """

    def __init__(
        self,
        shard: int,
        effects: ShardEffects,
        *,
        over_limit: str = "drop",
        on_call_actor_lost: str = "hangup",
    ) -> None:
        self.shard = shard
        self.fx = effects
        self.over_limit = over_limit
        self.on_call_actor_lost = on_call_actor_lost
        #: call_id → CallActor index (and dials in flight): where each event goes.
        self.routes: EventRouter[int] = EventRouter()
        self.placement = Placement()
        #: Slots, active calls and waiting offers (set by :meth:`start_leases`).
        self.leases: adm.ShardLeases[Waiting] | None = None
        self.dial_owner: dict[str, int] = {}
        #: Dials a CallActor gave up: their late legs are hung up here.
        self.abandoned_dials = AbandonedDials()
        #: call_id → node_id, to address calls this shard must end itself.
        self.node_of: dict[str, str] = {}
        self.msg_owner: dict[str, int] = {}
        self.early_messages = MessageTracker(max_early=10_000)
        #: Admitted offers waiting for a lagging CallActor, and requests for one more.
        self.room = ShardRoomWait(self)
        self.counters: Counter[str] = Counter()
        #: The pool as this shard knows it: the router's snapshots, retirement, drain.
        self.pool = ShardPool(self)
        self.requests = ShardRequests(self)
        self.recovery = ShardRecovery(self)

    # --- the RELAY session ----------------------------------------------------------------

    def connected(self, restored: bool, protocol: str) -> None:
        """``signalwire.connect`` succeeded; a session not resumed lost every call."""
        self.requests.protocol = protocol or self.requests.protocol
        if not restored and self.routes.calls:
            log.warning(
                "shard %d: session not resumed; %d calls are lost", self.shard, len(self.routes.calls)
            )
            for call_id, idx in list(self.routes.calls.items()):
                self.fx.send(idx, m.LostItem(call_id, "session_lost"), None)
                self.free_slot(call_id, idx)
            self.routes.calls.clear()
        if not restored:
            self.recovery.session_lost()
        self.fx.act(_CHECKPOINT)

    def session_settled(self) -> None:
        """Every event the server had for this shard when its session was (re)connected has
        been passed on (a request sent after the connect came back): tell each CallActor,
        behind those events, so that commands left in doubt by a restart are resolved."""
        for idx in self.placement.capacity:
            self.to_actor(idx, m.RESUMED_ITEM, None)

    def link_acked(self, idx: int, ack_ids: list[str]) -> None:
        """CallActor ``idx`` acknowledged the items that carried these RELAY events."""
        self.fx.ack(ack_ids)

    def _ack_now(self, ack_id: str | None) -> None:
        if ack_id:
            self.fx.ack([ack_id])

    def to_actor(self, idx: int, item: m.ToCallActor, ack_id: str | None) -> None:
        """Send ``item`` to ``idx``; a full link queue means it stopped taking frames long
        ago: the lost-actor policy takes over (the item is part of what it re-places or ends)."""
        if not self.fx.send(idx, item, ack_id):
            log.error("shard %d: the link to CallActor %d is full", self.shard, idx)
            self.counters["link_overflows"] += 1
            self.fx.act(LoseActor(idx, (item, ack_id)))

    # --- inbound events (the hot path) ----------------------------------------------------

    def on_event(self, event: RelayEvent, ack_id: str | None) -> None:
        """A RELAY event (not acked yet): to the CallActor it belongs to, or decided here."""
        et = event.event_type
        if et == c.EVENT_MESSAGING_STATE:
            self._on_message_state(event, ack_id)
            return
        routed = self.routes.route(event)
        route = routed.route
        if route is Route.CALL:
            idx = routed.target
            assert idx is not None
            self.to_actor(idx, m.EventItem(event.call_id, et, event.params, event.timestamp, ack_id), ack_id)
            if routed.call_ended:
                self.free_slot(event.call_id, idx)
        elif route is Route.OFFER:
            self._offer(event, ack_id)
        elif route is Route.DIAL_LEG:
            self._dial_leg(event, ack_id)
        elif route is Route.DIAL_DONE:
            outcome = routed.dial
            assert outcome is not None
            owner = self.dial_owner.pop(outcome.tag, None)
            if owner is None:
                self._ack_now(ack_id)
                return
            self.to_actor(owner, m.DialItem(outcome.tag, outcome.answered, outcome.call), ack_id)
        elif route is Route.MESSAGE_IN:
            target = self.placement.pick_any()
            if target is None:
                self.counters["messages_dropped"] += 1
                self._ack_now(ack_id)
                return
            self.to_actor(target, m.MsgInItem(event.params), ack_id)
        else:
            if route is Route.AUTH_STATE:
                self.fx.act(_CHECKPOINT)
            elif route is Route.UNROUTABLE:
                if self._ended_while_waiting(event, ack_id) or self.recovery.hold(event, ack_id):
                    return
                self._unroutable(event)
            self._ack_now(ack_id)

    def _dial_leg(self, event: RelayEvent, ack_id: str | None) -> None:
        owner = self.dial_owner.get(event.tag)
        if owner is None:
            self._ack_now(ack_id)
            return
        self.routes.add_call(event.call_id, owner)
        self.node_of[event.call_id] = sys.intern(event.node_id)  # a few media nodes: one string each
        self.placement.placed_on(owner)
        self.fx.report(CallPlaced(event.call_id, owner))
        if self.leases is not None:  # a dialled call counts against the limit too
            self.lease_actions(self.leases.adopt(event.call_id))
        self.to_actor(owner, m.LegItem(event.tag, event.params), None)
        item = m.EventItem(event.call_id, event.event_type, event.params, event.timestamp, ack_id)
        self.to_actor(owner, item, ack_id)

    def _unroutable(self, event: RelayEvent) -> None:
        self.counters["events_other_legs" if is_other_leg(event) else "events_unroutable"] += 1
        orphan = self.abandoned_dials.orphan_leg(event) if self.abandoned_dials else None
        if orphan is not None:
            self.counters["dial_orphans_ended"] += 1
            self.fx.act(Command(CommandPurpose.END_ORPHAN, "calling.end", orphan, event.call_id))

    def _ended_while_waiting(self, event: RelayEvent, ack_id: str | None) -> bool:
        """A call that ended while its offer waited for a slot (the router restarting):
        it is never placed, or a handler would start on a call it can never see end."""
        if event.event_type != c.EVENT_CALL_STATE or event.params.get("call_state") != c.CALL_STATE_ENDED:
            return False
        waiting = self.leases.withdraw(event.call_id) if self.leases is not None else None
        if waiting is None:
            waiting = self.room.withdraw(event.call_id)
            if waiting is not None:
                self.offer_dropped(event.call_id)
        if waiting is None:
            return False
        self.counters["offers_ended_waiting"] += 1
        self._ack_now(waiting[1])
        self._ack_now(ack_id)
        return True

    def _on_message_state(self, event: RelayEvent, ack_id: str | None) -> None:
        message_id = event.params.get("message_id")
        idx = self.msg_owner.get(message_id) if isinstance(message_id, str) else None
        if idx is None:
            # Its send result has not passed through yet: keep it (the SDK drops it).
            self.early_messages.feed(event)
            self._ack_now(ack_id)
            return
        if event.params.get("message_state") in c.MESSAGE_TERMINAL_STATES:
            self.msg_owner.pop(message_id, None)  # type: ignore[arg-type]
        self.to_actor(idx, m.MsgStateItem(event.event_type, event.params, event.timestamp), ack_id)

    # --- link items from CallActors -------------------------------------------------------

    def on_link_items(self, idx: int, wires: list[Any]) -> None:
        """A batch from CallActor ``idx``'s link (wire arrays), applied in order; a malformed
        or failing item is dropped and counted, the others go on (and the link)."""
        for wire in wires:
            try:
                match m.decode(wire):
                    case m.RequestItem(req_id, method, params):
                        self.requests.on_request(idx, req_id, method, params)
                    case m.RefusedItem(offers):
                        self._place_refused(idx, offers)
                    case m.DialAbandonedItem(tag):
                        self._dial_abandoned(idx, tag)
                    case _:  # an item only a shard sends
                        self.counters["unknown_link_items"] += 1
            except m.MalformedItem as exc:
                self.counters["malformed_link_items"] += 1
                log.warning("shard %d: CallActor %d sent %s", self.shard, idx, exc.message)
            except Exception:
                self.counters["item_errors"] += 1
                log.exception("shard %d: failed on an item from CallActor %d", self.shard, idx)

    def _dial_abandoned(self, idx: int, tag: str) -> None:
        """CallActor ``idx`` gave up dial ``tag``: its legs from now on are hung up here."""
        if self.dial_owner.get(tag) == idx:
            del self.dial_owner[tag]
        self.routes.dials.cancel(tag)
        self.abandoned_dials.add(tag)

    def call_actor_linked(self, idx: int) -> None:
        """The link to CallActor ``idx`` is up (authenticated): a new one takes calls."""
        if not self.placement.is_available(idx, "linking"):
            self.placement.set_available(idx, "linking")
            self.room.place_waiting()

    def link_health(self, idx: int, health: Health) -> None:
        """The link to ``idx`` saw it lag (no new calls), recover, or stay unreachable (lost)."""
        if health.status is HealthStatus.OK:
            if not self.placement.is_available(idx, "slow"):
                self.placement.set_available(idx, "slow")
                log.warning("shard %d: CallActor %d takes calls again", self.shard, idx)
                self.room.place_waiting()
            return
        if self.placement.is_available(idx, "slow"):
            self.counters["call_actors_slow"] += 1
            log.warning("shard %d: CallActor %d takes no new calls: %s", self.shard, idx, health.reason)
            self.placement.set_unavailable(idx, "slow")
            if health.reachable and self.placement.live_with_room() == 1:
                # A loop stalls (not a process restarting: Ray brings that back) with one
                # CallActor left to take calls: should it stall too, offers would wait for a
                # new one to start (~1 s). The pool adds it now, while nothing waits.
                self.counters["capacity_asked_ahead"] += 1
                self.room.want_capacity()
        if health.status is HealthStatus.LOST:
            log.error("shard %d: CallActor %d lost (%s)", self.shard, idx, health.reason)
            self.recovery.call_actor_lost(idx)

    # --- admission and placement ----------------------------------------------------------

    def start_leases(
        self,
        incarnation: int,
        block: int,
        epoch: int,
        unconfirmed: list[list[str]],
        prefetch: bool | None = None,
    ) -> None:
        """Start the lease unit from what the CallActors hold and the hang-ups that were
        never confirmed (``[call_id, node_id]`` pairs from durable storage). ``prefetch``:
        ask ahead of need (default: as :func:`~relay_actors.ray_runtime.admission.prefetches` says)."""
        unconfirmed_ids = {str(cid) for cid, _node in unconfirmed}
        self.node_of.update((str(cid), str(node)) for cid, node in unconfirmed)
        self.leases = adm.ShardLeases(
            self.shard,
            incarnation,
            block,
            active=set(self.routes.calls),
            unconfirmed=unconfirmed_ids,
            unknown=self.recovery.unknown(),
            prefetch=adm.prefetches(block) if prefetch is None else prefetch,
        )
        self.leases.epoch = epoch
        self.lease_actions(self.leases.start())
        self.recovery.leases_started()
        if unconfirmed_ids:
            self.recovery.hangups_pending()

    def lease_actions(self, actions: list[adm.Action[Waiting]]) -> None:
        """Carry out the lease unit's decisions (in a loop, not recursively: an admitted
        offer no CallActor has room for frees its slot, which admits the next one)."""
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            if isinstance(action, adm.Admit):
                event, ack_id = action.offer
                if not self.place(event, ack_id) and self.leases is not None:
                    queue.extend(self.leases.ended(action.call_id))  # never answered: free
            elif isinstance(action, adm.Reject):
                self._over_limit(*action.offer)
            elif isinstance(action, adm.Duplicate):
                self._ack_now(action.offer[1])
            else:
                self.fx.act(RequestLease(action.request))

    def lease_reply(self, reply: adm.LeaseReply) -> None:
        if self.leases is not None:
            self.lease_actions(self.leases.on_reply(reply))

    def lease_timed_out(self) -> None:
        """The router did not answer in time: waiting offers are dropped or passed."""
        if self.leases is not None and self.leases.waiting:
            self.counters["lease_timeouts"] += 1
            log.warning("shard %d: the router did not lease slots in time", self.shard)
            self.lease_actions(self.leases.timed_out())

    def lease_asked(self, epoch: int) -> dict[str, int]:
        """A router of ``epoch`` asks for this shard's leases (its answer goes as a request)."""
        if self.leases is None:
            return {}  # starting: it reports by itself once started
        self.lease_actions(self.leases.on_ask(epoch))
        return self.leases.state()

    def _offer(self, event: RelayEvent, ack_id: str | None) -> None:
        self.counters["offers"] += 1
        call_id = event.call_id
        if not call_id or call_id in self.routes.calls or self.leases is None:
            self._ack_now(ack_id)  # invalid, or a redelivered offer already placed
            return
        if tracing.ENABLED:  # tracing hook
            tracing.offer_arrived(call_id)
        self.lease_actions(self.leases.offer(call_id, (event, ack_id)))

    def _over_limit(self, event: RelayEvent, ack_id: str | None) -> None:
        if self.over_limit == "pass":
            self.counters["offers_passed"] += 1
            log.warning("max active calls reached; passing inbound call %s", event.call_id)
            params = {"call_id": event.call_id, "node_id": event.node_id}
            self.fx.act(Command(CommandPurpose.PASS, "calling.pass", params, event.call_id))
        else:
            self.counters["offers_dropped"] += 1
            log.warning("max active calls reached; dropping inbound call %s", event.call_id)
        self._ack_now(ack_id)

    def place(
        self, event: RelayEvent, ack_id: str | None, exclude: Iterable[int] = (), *, wait: bool = True
    ) -> bool:
        """Place an admitted offer; False if no CallActor has room (it is dropped). While
        one that would have room only lags (``slow``) or is not linked yet, the offer waits
        for it (``wait``: :class:`~relay_actors.ray_runtime.shard_room.ShardRoomWait`), its
        slot kept; once the wait is over, a late CallActor takes it (never dropped below the
        limit)."""
        idx = self.placement.pick(exclude)
        if idx is None and self.placement.lagging_with_room():
            if wait and self.room.wait(event, ack_id):
                return True
            # The wait is over (or too many wait): a lagging CallActor takes it rather than it
            # being dropped below the limit; RELAY's ack waits for that CallActor's acknowledgement.
            idx = self.placement.pick_lagging(exclude)
            if idx is not None:
                self.counters["offers_placed_on_lagging"] += 1
        if idx is None:
            self.counters["offers_no_capacity"] += 1
            log.warning("no CallActor has room; dropping inbound call %s", event.call_id)
            self._ack_now(ack_id)
            self.room.want_capacity()
            return False
        self.routes.add_call(event.call_id, idx)
        self.node_of[event.call_id] = sys.intern(event.node_id)  # a few media nodes: one string each
        self.placement.placed_on(idx)
        self.counters["offers_admitted"] += 1
        self.fx.report(CallPlaced(event.call_id, idx))
        trace = tracing.placed(event.call_id, idx) if tracing.ENABLED else None  # tracing hook
        self.to_actor(idx, m.OfferItem(event.call_id, event.params, ack_id, trace), ack_id)
        return True

    def offer_dropped(self, call_id: str) -> None:
        """An admitted offer was never placed: its slot is free again."""
        if self.leases is not None:
            self.lease_actions(self.leases.ended(call_id))

    def place_elsewhere(self, call_id: str, params: dict[str, Any], ack_id: str | None, exclude: int) -> None:
        """An offer ``exclude`` never took: place it on another CallActor (its slot kept);
        if none has room it is dropped and its slot freed."""
        event = RelayEvent(c.EVENT_CALL_RECEIVE, params, call_id)
        if not self.place(event, ack_id, exclude=(exclude,)):
            self.offer_dropped(call_id)

    def _place_refused(self, idx: int, refused: tuple[m.OfferItem, ...]) -> None:
        """CallActor ``idx`` was full: place the offers it refused elsewhere."""
        for offer in refused:
            call_id = offer.call_id
            if self.routes.calls.get(call_id) != idx:
                continue  # placed before a restart of this actor: the server redelivers it
            self.routes.remove_call(call_id)
            self.placement.released(idx)
            self.placement.full(idx)  # it told us it is full
            self.place_elsewhere(call_id, offer.params, None, exclude=idx)

    def free_slot(self, call_id: str, idx: int) -> None:
        """``call_id`` on CallActor ``idx`` ended (or was passed): free its slot."""
        self.placement.released(idx)
        self.end_confirmed(call_id)

    def end_confirmed(self, call_id: str) -> None:
        """The call is over for sure: forget it and give its slot back to the lease unit."""
        self.node_of.pop(call_id, None)
        self.fx.report(CallReleased(call_id))
        if self.leases is not None:
            had_unconfirmed = call_id in self.leases.unconfirmed
            self.lease_actions(self.leases.ended(call_id))
            if had_unconfirmed:
                self.store_unconfirmed()

    def store_unconfirmed(self) -> None:
        pending = sorted(self.leases.unconfirmed) if self.leases is not None else []
        self.fx.act(StoreUnconfirmed([[cid, self.node_of.get(cid, "")] for cid in pending]))

    @property
    def unconfirmed(self) -> set[str]:
        """Hang-ups not confirmed yet (their slots stay held)."""
        return self.leases.unconfirmed if self.leases is not None else set()

    def contexts_changed(self, method: str, params: dict[str, Any]) -> None:
        """A receive/unreceive succeeded: the session keeps its contexts (sent again on a
        fresh connect), checkpointed so that a restart of this shard keeps them too."""
        self.fx.act(TrackContexts(method, list(params.get("contexts") or [])))

    def command_done(self, command: Command, error: BaseException | None) -> None:
        """The outcome of one of this shard's own commands."""
        gone = isinstance(error, RelayError) and error.call_gone
        if command.purpose is CommandPurpose.END_LOST:
            self.recovery.hangup_done(command.call_id, error is None or gone, error)
        elif error is not None and not gone:
            log.warning("%s of %s failed: %r", command.purpose.value, command.call_id, error)


def shard_stats(core: ShardCore) -> dict[str, Any]:
    """What a shard core holds, for ``stats()`` and the metrics."""
    leases = core.leases
    rebuild = core.recovery.rebuild
    return {
        "active_calls": len(core.routes.calls),
        "granted": leases.granted if leases is not None else 0,
        "waiting_offers": (len(leases.waiting) if leases is not None else 0) + len(core.room.waiting),
        "unconfirmed_hangups": len(leases.unconfirmed) if leases is not None else 0,
        "held_slots": leases.held if leases is not None else 0,
        "unknown_call_actors": len(rebuild.unknown) if rebuild is not None else 0,
        "held_events": len(rebuild.held) if rebuild is not None else 0,
        "placed": dict(core.placement.placed),
        "pending_dials": len(core.dial_owner),
        "tracked_messages": len(core.msg_owner),
        "unavailable_call_actors": len(core.placement.unavailable),
    }
