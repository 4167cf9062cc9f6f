"""Model-based test of the call limit: the lease ledger, driven through the real shard core.

The state machine holds N shards (each a real :class:`ShardCore`, the connection
actor's decisions: admission, placement, held events, the lost-actor policy, with a
shell that hands what it sends to the model), the router's
:class:`LeaseLedger`, CallActors (the calls they hold, by shard) and the RELAY
server (the calls live there). The lease messages between shards and router go
through a network that loses, duplicates, delays and reorders them; the
router, any shard and any CallActor can restart at any step:

* router restart: a new ledger with the next epoch, knowing nothing;
* shard restart: a new incarnation that re-learns its calls from what the
  CallActors hold and its unconfirmed hang-ups from durable storage (the Ray
  shell keeps them in the GCS KV store); its unacknowledged offers are
  redelivered by the server. Any CallActor's ``owned()`` may fail then: it stays
  *unknown* to the shard (its calls held, not counted one by one, their `ended`
  events held by the core) until a later ask answers, or the shard gives it up
  and hands its last known calls to the lost-actor policy;
* CallActor crash: its calls are hung up by their shard; each ``calling.end``
  may fail, and a failed one leaves the call live on the server;
* a CallActor's loop stalls and recovers (as a shard's link sees it): offers that find
  only lagging CallActors wait for room (their slot kept), the shell's room-wait timers
  fire in any order, the router answers (or not) the shard's requests for one more
  CallActor, and a caller may hang up while its offer waits: an offer is never placed
  once its shard has learned that its call ended.

Invariants after every step: the calls live on the server never exceed the
limit, and each is counted by its shard. After quiescence (every message
delivered, every outstanding request answered, every hang-up retried until it
worked): the router and the shards agree on every grant, and the free slots
(router's free + shards' spare) equal limit - active: nothing leaked.

Sized to run in well under 60 s on a busy 2-core machine; set
``RELAY_MODEL_PROFILE=long`` for a longer run. The figures of the last run are
printed (``-s``) and kept in ``RUNS``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from relay_actors.errors import RelayError
from relay_actors.protocol import constants as c
from relay_actors.protocol.events import RelayEvent
from relay_actors.ray_runtime import actor_messages as m
from relay_actors.ray_runtime.admission import LeaseLedger, ShardLeases, lease_block
from relay_actors.ray_runtime.link_protocol import Health, HealthStatus
from relay_actors.ray_runtime.shard_actions import (
    Action,
    AskLastKnown,
    Command,
    CommandPurpose,
    ConfirmLoss,
    LinkEntry,
    RequestLease,
    StoreUnconfirmed,
    WaitForRoom,
    WantCapacity,
)
from relay_actors.ray_runtime.shard_core import ShardCore
from relay_actors.ray_runtime.shard_recovery import REBUILD_DEADLINE

#: (examples, steps per example); "find" is "ci" without shrinking (to check that a
#: deliberately broken ledger is caught, fast).
PROFILES = {"ci": (300, 100), "long": (3000, 200), "find": (300, 100)}
PROFILE = os.environ.get("RELAY_MODEL_PROFILE", "ci")
EXAMPLES, STEPS = PROFILES[PROFILE]
RUNS: Counter[str] = Counter()
STARTED: dict[str, float] = {}

#: ("router", shard, LeaseRequest), ("shard", shard, LeaseReply) or ("ask", shard, epoch).
Message = tuple[str, int, Any]
index = st.integers(min_value=0, max_value=1000)
#: Faults fire on 0 only (1 in 4 draws), so calls have time to pile up between them.
rare = st.integers(min_value=0, max_value=3)
NOTHING: dict[str, Any] = {"calls": [], "dials": [], "messages": []}


class ModelShell:
    """Shard ``s``'s shell in the model: what its core sends reaches the model's CallActors,
    the network and the server; the answers it waits for are queued for the model."""

    def __init__(self, model: AdmissionModel, s: int) -> None:
        self.model = model
        self.s = s

    def send(self, idx: int, item: m.ToCallActor, ack_id: str | None) -> bool:
        model = self.model
        if isinstance(item, m.OfferItem):
            assert item.call_id not in model.live, "a call admitted twice"
            assert item.call_id not in model.gone, "an offer placed after the shard learned its call ended"
            model.actors[idx][item.call_id] = self.s
            if item.call_id not in model.hung_up:  # (else ended at the server: its `ended` follows)
                model.live[item.call_id] = self.s
            RUNS["admitted"] += 1
        elif isinstance(item, m.LostItem) or (
            isinstance(item, m.EventItem) and item.params.get("call_state") == c.CALL_STATE_ENDED
        ):
            model.actors[idx].pop(item.call_id, None)  # (the CallActor is done with it)
        return True

    def ack(self, ack_ids: list[str]) -> None:
        pass

    def request(self, idx: int, req_id: str, method: str, params: dict[str, Any]) -> None:
        raise AssertionError("no CallActor requests in this model")

    def report(self, item: tuple[Any, ...]) -> None:
        pass

    def reset_link(self, idx: int) -> list[LinkEntry]:
        return []  # (every frame was acknowledged: the model's CallActors take them at once)

    def act(self, action: Action) -> None:
        model, s = self.model, self.s
        if isinstance(action, RequestLease):
            model.net.append(("router", s, action.request))
        elif isinstance(action, StoreUnconfirmed):
            model.durable[s] = {cid for cid, _node in action.calls}
        elif isinstance(action, Command) and action.purpose is CommandPurpose.END_LOST:
            model.hangups.append((s, action))
        elif isinstance(action, AskLastKnown):
            model.answers.append((s, action.idx))
        elif isinstance(action, ConfirmLoss):
            model.confirms.append((s, action.idx))
        elif isinstance(action, Command) and action.purpose is CommandPurpose.PASS:
            RUNS["passed"] += 1
        elif isinstance(action, WaitForRoom):  # the shell's timer, for this incarnation
            model.room_waits.append((s, model.incarnations[s], action.call_id, action.rounds))
            RUNS["room_waits"] += 1
        elif isinstance(action, WantCapacity):
            model.capacity_asks.append((s, model.incarnations[s]))


def offer(call_id: str) -> RelayEvent:
    return RelayEvent(c.EVENT_CALL_RECEIVE, {"call_id": call_id, "node_id": "n"}, call_id)


def ended(call_id: str) -> RelayEvent:
    params = {"call_id": call_id, "node_id": "n", "call_state": c.CALL_STATE_ENDED}
    return RelayEvent(c.EVENT_CALL_STATE, params, call_id)


class AdmissionModel(RuleBasedStateMachine):
    @initialize(
        limit=st.integers(1, 8), shards=st.integers(1, 3), actors=st.integers(1, 3), prefetch=st.booleans()
    )
    def setup(self, limit: int, shards: int, actors: int, prefetch: bool) -> None:
        STARTED.setdefault("at", time.monotonic())
        RUNS["examples"] += 1
        self.limit = limit
        self.n = shards
        self.n_actors = actors
        self.epoch = 1
        self.router = LeaseLedger(limit, shards, self.epoch)
        self.block = lease_block(limit, shards)
        # Shards that ask ahead of need (large budgets do): drawn, since these limits
        # are small enough to explore, where the runtime would not prefetch.
        self.prefetch = prefetch
        RUNS["prefetching"] += prefetch
        self.incarnations = [1] * shards
        self.actors: list[dict[str, int]] = [{} for _ in range(actors)]  # call_id -> shard
        self.live: dict[str, int] = {}  # calls live on the server -> the shard that admitted them
        self.events: list[list[str]] = [[] for _ in range(shards)]  # `ended` events not yet acked
        self.durable: list[set[str]] = [set() for _ in range(shards)]  # unconfirmed hang-ups, stored
        self.net: list[Message] = []
        #: What the shards' shells wait for: hang-ups, the router's last known calls, confirmations.
        self.hangups: list[tuple[int, Command]] = []
        self.answers: list[tuple[int, int]] = []
        self.confirms: list[tuple[int, int]] = []
        #: CallActor index → its calls (by shard) just before it crashed (what the router knew).
        self.crashed: dict[int, dict[str, int]] = {}
        self.crashes = 0
        self.next_call = 0
        #: The shells' room-wait timers ``(shard, incarnation, call_id, round)`` and their
        #: requests for one more CallActor ``(shard, incarnation)``, not fired/answered yet.
        self.room_waits: list[tuple[int, int, str, int]] = []
        #: Calls whose caller hung up while their offer waited for room (ended at the server),
        #: and calls whose `ended` event reached a shard (never to be placed after it).
        self.hung_up: set[str] = set()
        self.gone: set[str] = set()
        self.capacity_asks: list[tuple[int, int]] = []
        self.shards = [self._shard(s, 1, {idx: NOTHING for idx in range(actors)}) for s in range(shards)]

    def _shard(self, s: int, incarnation: int, answers: dict[int, dict[str, Any] | None]) -> ShardCore:
        """A (re)started shard core, as the connection actor's start-up makes it."""
        core = ShardCore(s, ModelShell(self, s))
        for idx in core.pool.add_call_actors([(idx, 1000) for idx in range(self.n_actors)], {}):
            core.call_actor_linked(idx)  # (links are not modelled: up at once)
        core.recovery.rebuilt(answers, 0.0)
        stored = [[cid, "n"] for cid in sorted(self.durable[s])]
        core.start_leases(incarnation, self.block, 0, stored, prefetch=self.prefetch)
        core.requests.relay_created("model")
        return core

    def leases(self, s: int) -> ShardLeases[Any]:
        leases = self.shards[s].leases
        assert leases is not None
        return leases

    # --- what the shells wait for -----------------------------------------------------------

    def _settle(self, data: st.DataObject | None = None) -> None:
        """Answer what the shells wait for: the router's last known calls of a lost CallActor,
        the hang-ups (each works or fails, drawn), the confirmation of a loss."""
        while self.answers or self.hangups or self.confirms:
            if self.answers:
                s, idx = self.answers.pop(0)
                known = self.crashed.get(idx, self.actors[idx])
                self.shards[s].recovery.last_known(idx, sorted(cid for cid, o in known.items() if o == s))
            elif self.hangups:
                s, command = self.hangups.pop(0)
                works = (
                    True if data is None else data.draw(st.booleans(), label=f"end {command.call_id} works")
                )
                self._hang_up(s, command, works)
            else:
                s, idx = self.confirms.pop(0)
                self.shards[s].recovery.loss_confirmed(idx, None)

    def _hang_up(self, s: int, command: Command, works: bool) -> None:
        """``calling.end`` for a call whose CallActor was lost (404/410 if it is gone: works)."""
        call_id = command.call_id
        if works or call_id not in self.live:
            if self.live.pop(call_id, None) is not None:
                self.events[s].append(call_id)  # the server says `ended` too
            self.shards[s].command_done(command, None)
        else:
            RUNS["hangups_failed"] += 1
            self.shards[s].command_done(command, RelayError("500", "the server failed"))

    def _deliver(self, message: Message) -> None:
        where, s, payload = message
        if where == "router":
            reply = self.router.handle(payload)
            if reply is not None:
                self.net.append(("shard", s, reply))
        elif where == "shard":
            self.shards[s].lease_reply(payload)
        else:
            self.shards[s].lease_asked(payload)

    def _end_event(self, s: int, call_id: str) -> None:
        rebuild = self.shards[s].recovery.rebuild
        held = len(rebuild.held) if rebuild is not None else 0
        self.gone.add(call_id)
        self.shards[s].on_event(ended(call_id), f"ack-{call_id}")
        if rebuild is not None and len(rebuild.held) > held:
            RUNS["events_held"] += 1

    # --- the outside world ----------------------------------------------------------------

    def _learn(self, s: int, idx: int) -> None:
        """CallActor ``idx`` answers shard ``s``'s ask: the core counts its calls, and the
        events it held for them go on."""
        calls = sorted(cid for cid, owner in self.actors[idx].items() if owner == s)
        self.shards[s].recovery.owned_answer(
            idx, {"calls": [[cid, "n"] for cid in calls], "dials": [], "messages": []}
        )

    @precondition(lambda self: any(core.recovery.unknown() for core in self.shards))
    @rule(shard=index, actor=index, roll=rare)
    def owned_answers(self, shard: int, actor: int, roll: int) -> None:
        if roll:  # (not at once: the shard works with it unknown for a while)
            return
        pending = [s for s in range(self.n) if self.shards[s].recovery.unknown()]
        s = pending[shard % len(pending)]
        unknown = sorted(self.shards[s].recovery.unknown())
        RUNS["owned_answered_late"] += 1
        self._learn(s, unknown[actor % len(unknown)])

    @precondition(lambda self: any(core.recovery.unknown() for core in self.shards))
    @rule(shard=index, roll=rare, data=st.data())
    def owned_given_up(self, shard: int, roll: int, data: st.DataObject) -> None:
        """The deadline passed: the last known calls get the lost-actor policy (hung up;
        the CallActor, should it be alive, drops them)."""
        if roll:
            return
        pending = [s for s in range(self.n) if self.shards[s].recovery.unknown()]
        s = pending[shard % len(pending)]
        RUNS["owned_given_up"] += len(self.shards[s].recovery.unknown())
        self.shards[s].recovery.tick(REBUILD_DEADLINE + 1)
        self._settle(data)

    @rule(shard=index, count=st.integers(1, 4))
    def offers(self, shard: int, count: int) -> None:
        s = shard % self.n
        for _ in range(count):
            self.next_call += 1
            call_id = f"c{self.next_call}"
            admitted = RUNS["admitted"]
            self.shards[s].on_event(offer(call_id), f"ack-{call_id}")
            if RUNS["admitted"] == admitted and call_id not in self.leases(s).waiting:
                RUNS["rejected"] += 1

    @rule(shard=index, actor=index, lags=st.booleans())
    def call_actor_lags(self, shard: int, actor: int, lags: bool) -> None:
        """A shard's link sees a CallActor's loop stall (no new calls; offers that find only
        lagging ones wait for room) or recover (the waiting offers go there)."""
        status = HealthStatus.SLOW if lags else HealthStatus.OK
        self.shards[shard % self.n].link_health(actor % self.n_actors, Health(status, "model"))

    @precondition(lambda self: any(core.room.waiting for core in self.shards))
    @rule(pick=index)
    def caller_hangs_up_while_waiting_for_room(self, pick: int) -> None:
        """The caller of an offer still waiting for room gives up: the server says `ended`."""
        waiting = sorted((call_id, s) for s, core in enumerate(self.shards) for call_id in core.room.waiting)
        call_id, s = waiting[pick % len(waiting)]
        RUNS["hung_up_while_waiting_for_room"] += 1
        self.hung_up.add(call_id)
        self.events[s].append(call_id)

    @precondition(lambda self: bool(self.room_waits))
    @rule(pick=index)
    def room_wait_ends(self, pick: int) -> None:
        """A room-wait timer fires (one of a restarted shard's earlier process: never)."""
        s, incarnation, call_id, rounds = self.room_waits.pop(pick % len(self.room_waits))
        if incarnation == self.incarnations[s]:
            RUNS["room_waits_ended"] += 1
            self.shards[s].room.over(call_id, rounds)

    @precondition(lambda self: bool(self.capacity_asks))
    @rule(pick=index)
    def router_answers_capacity(self, pick: int) -> None:
        """The router answers a request for one more CallActor (the model's pool stays as it is)."""
        s, incarnation = self.capacity_asks.pop(pick % len(self.capacity_asks))
        if incarnation == self.incarnations[s]:
            self.shards[s].room.capacity_answered()

    @precondition(lambda self: bool(self.live))
    @rule(pick=index)
    def offer_redelivered(self, pick: int) -> None:
        call_id = sorted(self.live)[pick % len(self.live)]
        s = self.live[call_id]
        if call_id in self.leases(s).active:  # (acked: the server redelivers only what it counts)
            self.shards[s].on_event(offer(call_id), "again")  # (placed twice: ModelShell fails)

    @precondition(lambda self: bool(self.live))
    @rule(pick=index)
    def caller_hangs_up(self, pick: int) -> None:
        call_id = sorted(self.live)[pick % len(self.live)]
        s = self.live.pop(call_id)
        self.events[s].append(call_id)

    @precondition(lambda self: any(self.events))
    @rule(shard=index, pick=index)
    def ended_event_delivered(self, shard: int, pick: int) -> None:
        s = [i for i, queue in enumerate(self.events) if queue][shard % sum(1 for q in self.events if q)]
        call_id = self.events[s].pop(pick % len(self.events[s]))
        self._end_event(s, call_id)

    # --- the network --------------------------------------------------------------------------

    @precondition(lambda self: bool(self.net))
    @rule(picks=st.lists(index, min_size=1, max_size=8))
    def deliver(self, picks: list[int]) -> None:
        for pick in picks:
            if self.net:
                RUNS["delivered"] += 1
                self._deliver(self.net.pop(pick % len(self.net)))

    @precondition(lambda self: bool(self.net))
    @rule(pick=index, roll=rare)
    def lose(self, pick: int, roll: int) -> None:
        if roll:
            return
        RUNS["lost"] += 1
        self.net.pop(pick % len(self.net))

    @precondition(lambda self: bool(self.net) and len(self.net) < 40)
    @rule(pick=index, roll=rare)
    def duplicate(self, pick: int, roll: int) -> None:
        if roll:
            return
        RUNS["duplicated"] += 1
        self.net.append(self.net[pick % len(self.net)])

    @rule(shard=index)
    def shard_retransmits(self, shard: int) -> None:
        s = shard % self.n
        self.shards[s].lease_actions(self.leases(s).retry())

    @rule(shard=index, roll=rare)
    def shard_gives_up_waiting(self, shard: int, roll: int) -> None:
        if roll:
            return
        self.shards[shard % self.n].lease_timed_out()

    @rule(shard=index)
    def router_asks(self, shard: int) -> None:
        s = shard % self.n
        if s in self.router.unknown():
            self.net.append(("ask", s, self.router.epoch))

    # --- restarts and failures ------------------------------------------------------------------

    @rule(roll=rare)
    def router_restarts(self, roll: int) -> None:
        if roll:
            return
        RUNS["router_restarts"] += 1
        self.epoch += 1
        self.router = LeaseLedger(self.limit, self.n, self.epoch)
        # It asks every shard at once (the asks can be lost or late like any message).
        self.net.extend(("ask", s, self.epoch) for s in range(self.n))

    @rule(shard=index, roll=rare, answers=st.lists(st.booleans(), min_size=3, max_size=3))
    def shard_restarts(self, shard: int, roll: int, answers: list[bool]) -> None:
        """``answers[idx]``: CallActor ``idx`` answered ``owned()`` now (else: unknown)."""
        if roll:
            return
        RUNS["shard_restarts"] += 1
        s = shard % self.n
        old = self.shards[s]
        self.incarnations[s] += 1
        owned: dict[int, dict[str, Any] | None] = {}
        for idx in range(self.n_actors):
            calls = [[cid, "n"] for cid, owner in sorted(self.actors[idx].items()) if owner == s]
            owned[idx] = {"calls": calls, "dials": [], "messages": []} if answers[idx] else None
        self.shards[s] = self._shard(s, self.incarnations[s], owned)
        if self.shards[s].recovery.unknown():
            RUNS["owned_failed_at_restart"] += 1
            unasked = self.shards[s].recovery.unknown()
            hidden = [cid for idx in unasked for cid, owner in self.actors[idx].items() if owner == s]
            RUNS["calls_hidden_at_restart"] += len(hidden)
            RUNS["live_calls_hidden_at_restart"] += sum(1 for cid in hidden if cid in self.live)
        # Held events were never acked: the server redelivers them to the new incarnation.
        if old.recovery.rebuild is not None:
            self.events[s].extend(call_id for call_id, _event in old.recovery.rebuild.held)
        # Never acked (waiting for a slot, or for room): the server offers them again.
        again = list(old.leases.waiting) if old.leases is not None else []
        for call_id in [cid for cid in again + list(old.room.waiting) if cid not in self.hung_up]:
            self.shards[s].on_event(offer(call_id), f"ack-{call_id}")

    @rule(actor=index, roll=rare, data=st.data())
    def call_actor_crashes(self, actor: int, roll: int, data: st.DataObject) -> None:
        """Each shard's lost-actor policy: a CallActor a shard had not asked yet is given
        up with the calls the router last knew there; the calls are hung up."""
        if roll:
            return
        RUNS["call_actor_crashes"] += 1
        self.crashes += 1
        idx = actor % self.n_actors
        self.crashed[idx], self.actors[idx] = self.actors[idx], {}
        for s in range(self.n):
            self.shards[s].recovery.call_actor_lost(idx, f"crash-{self.crashes}", [])
        self._settle(data)
        del self.crashed[idx]

    @precondition(lambda self: any(core.unconfirmed for core in self.shards))
    @rule(shard=index, data=st.data())
    def hang_up_retried(self, shard: int, data: st.DataObject) -> None:
        pending = [s for s in range(self.n) if self.shards[s].unconfirmed]
        self.shards[pending[shard % len(pending)]].recovery.retry_hangups()
        self._settle(data)

    # --- invariants -----------------------------------------------------------------------------

    @invariant()
    def never_over_the_limit(self) -> None:
        RUNS["steps"] += 1
        assert len(self.live) <= self.limit, (len(self.live), self.limit)
        if len(self.live) == self.limit:
            RUNS["steps_at_the_limit"] += 1

    @invariant()
    def every_live_call_is_counted(self) -> None:
        """By id, or (on a CallActor the shard could not ask) within its held slots."""
        uncounted: Counter[int] = Counter()
        for call_id, s in self.live.items():
            leases = self.leases(s)
            if call_id in leases.active:
                continue
            holder = next((idx for idx, held in enumerate(self.actors) if call_id in held), None)
            assert holder in leases.unknown, f"{call_id} live but not counted by shard {s}"
            uncounted[s] += 1
            RUNS["steps_with_calls_held_uncounted"] += 1
        for s, count in uncounted.items():
            shard = self.leases(s)
            if shard.synced:  # (before, the router still holds the earlier incarnation's grant)
                assert count <= shard.held, (s, count, shard.held)

    @invariant()
    def router_within_budget(self) -> None:
        assert sum(self.router.grants().values()) <= self.limit

    def teardown(self) -> None:
        if not hasattr(self, "router"):
            return
        self._quiesce()
        router = self.router
        assert router.unknown() == []
        for s in range(self.n):
            shard = self.leases(s)
            rebuild = self.shards[s].recovery.rebuild
            assert rebuild is None or not rebuild.held, "an event held for ever"
            assert shard.synced and shard.epoch == router.epoch and shard.outstanding is None
            assert not shard.waiting and not shard.unconfirmed
            assert not shard.unknown and shard.held == 0
            assert not self.shards[s].room.waiting, "an offer waiting for room for ever"
            assert router.grants()[s] == shard.granted, (s, router.grants(), shard.granted)
            assert 0 <= shard.spare <= 2 * self.block, (s, shard.spare)
        counted = set().union(*(self.leases(s).active for s in range(self.n)))
        assert counted == set(self.live), "a slot leaked or a live call is not counted"
        free = router.free() + sum(self.leases(s).spare for s in range(self.n))
        assert free == self.limit - len(self.live), (free, self.limit, len(self.live))
        RUNS["quiesced"] += 1

    def _quiesce(self) -> None:
        branch: Counter[str] = Counter()
        for _ in range(10_000):
            unknown = [s for s in range(self.n) if self.shards[s].recovery.unknown()]
            # (what is still pending, should it never settle)
            unconfirmed = [sorted(core.unconfirmed) for core in self.shards]
            branch[str((len(self.net), any(self.events), unknown, unconfirmed, self.router.unknown()))] += 1
            if self.net:
                self._deliver(self.net.pop(0))
            elif any(self.events):
                s = next(i for i, queue in enumerate(self.events) if queue)
                self._end_event(s, self.events[s].pop(0))
            elif unknown:
                self._learn(unknown[0], min(self.shards[unknown[0]].recovery.unknown()))
            elif any(core.unconfirmed for core in self.shards):
                s = next(i for i, core in enumerate(self.shards) if core.unconfirmed)
                self.shards[s].recovery.retry_hangups()
                self._settle()
            elif self.router.unknown():
                s = self.router.unknown()[0]
                self.net.append(("ask", s, self.router.epoch))
            elif slow := [s for s in range(self.n) if self.shards[s].placement.any_slow()]:
                for idx in range(self.n_actors):  # every stall ends
                    self.shards[slow[0]].link_health(idx, Health(HealthStatus.OK))
            elif self.room_waits:
                self.room_wait_ends(0)
            elif self.capacity_asks:
                self.router_answers_capacity(0)
            elif any(self.leases(s).outstanding is not None for s in range(self.n)):
                s = next(i for i in range(self.n) if self.leases(i).outstanding is not None)
                self.shards[s].lease_actions(self.leases(s).retry())
            else:
                return
        raise AssertionError(f"no quiescence after 10000 steps: {branch.most_common(3)}")


AdmissionModel.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    **({"phases": [Phase.generate], "database": None} if PROFILE == "find" else {}),
)


class TestAdmissionModel(AdmissionModel.TestCase):  # type: ignore[name-defined,misc]
    @classmethod
    def tearDownClass(cls) -> None:
        seconds = time.monotonic() - STARTED.get("at", time.monotonic())
        print(f"\nadmission model ({PROFILE}, {seconds:.1f} s): {dict(RUNS)}")


def test_figures_were_collected() -> None:
    """Runs after the model (file order): it really ran examples and steps."""
    if RUNS["examples"]:
        assert RUNS["quiesced"] >= 1 and RUNS["steps"] >= RUNS["examples"]
