"""Model-based test of the lease ledger (``relay_actors.ray_runtime.admission``) and placement.

The state machine holds N shards (:class:`ShardLeases`), the router's
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
  events held by the shell) until a later ask answers, or the shard gives it up
  and hands its last known calls to the lost-actor policy;
* CallActor crash: its calls are hung up by their shard; each ``calling.end``
  may fail, and a failed one leaves the call live on the server.

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

from relay_actors.ray_runtime.admission import (
    Admit,
    Duplicate,
    LeaseLedger,
    Reject,
    Send,
    ShardLeases,
    lease_block,
)
from relay_actors.ray_runtime.placement import Placement

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


class AdmissionModel(RuleBasedStateMachine):
    @initialize(
        limit=st.integers(1, 8), shards=st.integers(1, 3), actors=st.integers(1, 3), prefetch=st.booleans()
    )
    def setup(self, limit: int, shards: int, actors: int, prefetch: bool) -> None:
        STARTED.setdefault("at", time.monotonic())
        RUNS["examples"] += 1
        self.limit = limit
        self.n = shards
        self.epoch = 1
        self.router = LeaseLedger(limit, shards, self.epoch)
        self.block = lease_block(limit, shards)
        # Shards that ask ahead of need (large budgets do): drawn, since these limits
        # are small enough to explore, where the runtime would not prefetch.
        self.prefetch = prefetch
        RUNS["prefetching"] += prefetch
        self.incarnations = [1] * shards
        self.shards: list[ShardLeases[str]] = [
            ShardLeases(s, 1, self.block, prefetch=prefetch) for s in range(shards)
        ]
        self.placements = [self._placement(actors) for _ in range(shards)]
        self.actors: list[dict[str, int]] = [{} for _ in range(actors)]  # call_id -> shard
        self.live: dict[str, int] = {}  # calls live on the server -> the shard that admitted them
        self.events: list[list[str]] = [[] for _ in range(shards)]  # `ended` events not yet acked
        self.durable: list[set[str]] = [set() for _ in range(shards)]  # unconfirmed hang-ups, stored
        self.held_events: list[list[str]] = [[] for _ in range(shards)]  # `ended` held by the shell
        self.net: list[Message] = []
        self.next_call = 0
        for s in range(shards):
            self._apply(s, self.shards[s].start())

    @staticmethod
    def _placement(actors: int) -> Placement:
        placement = Placement()
        for idx in range(actors):
            placement.add(idx, 1000)
        return placement

    # --- carrying out a shard's decisions -------------------------------------------------

    def _apply(self, s: int, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.net.append(("router", s, action.request))
            elif isinstance(action, Admit):
                assert action.call_id not in self.live, "a call admitted twice"
                idx = self.placements[s].pick()
                assert idx is not None
                self.placements[s].placed_on(idx)
                self.actors[idx][action.call_id] = s
                self.live[action.call_id] = s
                RUNS["admitted"] += 1
            elif isinstance(action, Reject):
                RUNS["rejected"] += 1
            else:
                assert isinstance(action, Duplicate)
        self.durable[s] = set(self.shards[s].unconfirmed)

    def _deliver(self, message: Message) -> None:
        where, s, payload = message
        if where == "router":
            reply = self.router.handle(payload)
            if reply is not None:
                self.net.append(("shard", s, reply))
        elif where == "shard":
            self._apply(s, self.shards[s].on_reply(payload))
        else:
            self._apply(s, self.shards[s].on_ask(payload))

    def _holder(self, call_id: str) -> int | None:
        return next((idx for idx, held in enumerate(self.actors) if call_id in held), None)

    def _end_confirmed(self, s: int, call_id: str) -> None:
        if call_id not in self.shards[s].active and self._holder(call_id) in self.shards[s].unknown:
            # The shell cannot route it (its CallActor is unknown): held, not dropped.
            self.held_events[s].append(call_id)
            RUNS["events_held"] += 1
            return
        for idx, held in enumerate(self.actors):
            if held.pop(call_id, None) is not None:
                self.placements[s].released(idx)
        self._apply(s, self.shards[s].ended(call_id))

    # --- the outside world ----------------------------------------------------------------

    def _learn(self, s: int, idx: int) -> None:
        """CallActor ``idx`` answers shard ``s``'s ask (or is given up with its last known
        calls): the shard counts them, and the events held for them go on."""
        calls = sorted(cid for cid, owner in self.actors[idx].items() if owner == s)
        self._apply(s, self.shards[s].learned(idx, calls))
        for _ in calls:
            self.placements[s].placed_on(idx)
        held, self.held_events[s] = self.held_events[s], []
        for call_id in held:
            self._end_confirmed(s, call_id)

    @precondition(lambda self: any(shard.unknown for shard in self.shards))
    @rule(shard=index, actor=index, roll=rare)
    def owned_answers(self, shard: int, actor: int, roll: int) -> None:
        if roll:  # (not at once: the shard works with it unknown for a while)
            return
        pending = [s for s in range(self.n) if self.shards[s].unknown]
        s = pending[shard % len(pending)]
        unknown = sorted(self.shards[s].unknown)
        RUNS["owned_answered_late"] += 1
        self._learn(s, unknown[actor % len(unknown)])

    @precondition(lambda self: any(shard.unknown for shard in self.shards))
    @rule(shard=index, actor=index, roll=rare, data=st.data())
    def owned_given_up(self, shard: int, actor: int, roll: int, data: st.DataObject) -> None:
        """The deadline passed: the last known calls get the lost-actor policy (hung up;
        the CallActor, should it be alive, drops them)."""
        if roll:
            return
        pending = [s for s in range(self.n) if self.shards[s].unknown]
        s = pending[shard % len(pending)]
        unknown = sorted(self.shards[s].unknown)
        idx = unknown[actor % len(unknown)]
        RUNS["owned_given_up"] += 1
        self._learn(s, idx)
        for call_id in sorted(cid for cid, owner in self.actors[idx].items() if owner == s):
            self._hang_up(s, call_id, data.draw(st.booleans(), label=f"end {call_id} works"))
            self.actors[idx].pop(call_id, None)

    @rule(shard=index, count=st.integers(1, 4))
    def offers(self, shard: int, count: int) -> None:
        s = shard % self.n
        for _ in range(count):
            self.next_call += 1
            call_id = f"c{self.next_call}"
            self._apply(s, self.shards[s].offer(call_id, call_id))

    @precondition(lambda self: bool(self.live))
    @rule(pick=index)
    def offer_redelivered(self, pick: int) -> None:
        call_id = sorted(self.live)[pick % len(self.live)]
        s = self.live[call_id]
        if call_id in self.shards[s].active:
            assert self.shards[s].offer(call_id, call_id) == [Duplicate(call_id, call_id)]

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
        self._end_confirmed(s, call_id)

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
        self._apply(s, self.shards[s].retry())

    @rule(shard=index, roll=rare)
    def shard_gives_up_waiting(self, shard: int, roll: int) -> None:
        if roll:
            return
        s = shard % self.n
        self._apply(s, self.shards[s].timed_out())

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
        asked = [idx for idx in range(len(self.actors)) if answers[idx]]
        unknown = {idx for idx in range(len(self.actors)) if not answers[idx]}
        held = {cid for idx in asked for cid, owner in self.actors[idx].items() if owner == s}
        self.shards[s] = ShardLeases(
            s,
            self.incarnations[s],
            self.block,
            active=held,
            unconfirmed=set(self.durable[s]),
            unknown=unknown,
            prefetch=self.prefetch,
        )
        if self.shards[s].unknown:
            RUNS["owned_failed_at_restart"] += 1
            unasked = self.shards[s].unknown
            hidden = [cid for idx in unasked for cid, owner in self.actors[idx].items() if owner == s]
            RUNS["calls_hidden_at_restart"] += len(hidden)
            RUNS["live_calls_hidden_at_restart"] += sum(1 for cid in hidden if cid in self.live)
        # Held events were never acked: the server redelivers them to the new incarnation.
        self.events[s].extend(self.held_events[s])
        self.held_events[s] = []
        placement = self._placement(len(self.actors))
        for idx in asked:
            placement.recount(idx, sum(1 for owner in self.actors[idx].values() if owner == s))
        self.placements[s] = placement
        self._apply(s, self.shards[s].start())
        for call_id in old.waiting:  # never acked: the server offers them again
            self._apply(s, self.shards[s].offer(call_id, call_id))

    @rule(actor=index, roll=rare, data=st.data())
    def call_actor_crashes(self, actor: int, roll: int, data: st.DataObject) -> None:
        if roll:
            return
        RUNS["call_actor_crashes"] += 1
        idx = actor % len(self.actors)
        for s in range(self.n):
            if idx in self.shards[s].unknown:
                # The lost-actor policy finds it unknown: it is given up at once, with its
                # last known calls (which the policy then hangs up, below).
                self._learn(s, idx)
        lost, self.actors[idx] = self.actors[idx], {}
        for call_id, s in sorted(lost.items()):
            self.placements[s].released(idx)
            self._hang_up(s, call_id, data.draw(st.booleans(), label=f"end {call_id} works"))

    @precondition(lambda self: any(shard.unconfirmed for shard in self.shards))
    @rule(shard=index, works=st.booleans())
    def hang_up_retried(self, shard: int, works: bool) -> None:
        pending = [s for s in range(self.n) if self.shards[s].unconfirmed]
        s = pending[shard % len(pending)]
        self._hang_up(s, sorted(self.shards[s].unconfirmed)[0], works)

    def _hang_up(self, s: int, call_id: str, works: bool) -> None:
        """``calling.end`` for a call whose CallActor was lost (404/410 if it is gone: works)."""
        if works or call_id not in self.live:
            if self.live.pop(call_id, None) is not None:
                self.events[s].append(call_id)  # the server says `ended` too
            self._end_confirmed(s, call_id)
        else:
            RUNS["hangups_failed"] += 1
            self.shards[s].hangup_failed(call_id)
            self.durable[s] = set(self.shards[s].unconfirmed)

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
            if call_id in self.shards[s].active:
                continue
            holder = self._holder(call_id)
            assert holder in self.shards[s].unknown, f"{call_id} live but not counted by shard {s}"
            uncounted[s] += 1
            RUNS["steps_with_calls_held_uncounted"] += 1
        for s, count in uncounted.items():
            shard = self.shards[s]
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
        for s, shard in enumerate(self.shards):
            assert shard.synced and shard.epoch == router.epoch and shard.outstanding is None
            assert not shard.waiting and not shard.unconfirmed
            assert not shard.unknown and shard.held == 0 and not self.held_events[s]
            assert router.grants()[s] == shard.granted, (s, router.grants(), shard.granted)
            assert 0 <= shard.spare <= 2 * self.block, (s, shard.spare)
        counted = set().union(*(shard.active for shard in self.shards))
        assert counted == set(self.live), "a slot leaked or a live call is not counted"
        free = router.free() + sum(shard.spare for shard in self.shards)
        assert free == self.limit - len(self.live), (free, self.limit, len(self.live))
        RUNS["quiesced"] += 1

    def _quiesce(self) -> None:
        for _ in range(10_000):
            if self.net:
                self._deliver(self.net.pop(0))
            elif any(self.events):
                s = next(i for i, queue in enumerate(self.events) if queue)
                self._end_confirmed(s, self.events[s].pop(0))
            elif any(shard.unknown for shard in self.shards):
                s = next(i for i, shard in enumerate(self.shards) if shard.unknown)
                self._learn(s, min(self.shards[s].unknown))
            elif any(shard.unconfirmed for shard in self.shards):
                s = next(i for i, shard in enumerate(self.shards) if shard.unconfirmed)
                self._hang_up(s, sorted(self.shards[s].unconfirmed)[0], True)
            elif self.router.unknown():
                s = self.router.unknown()[0]
                self.net.append(("ask", s, self.router.epoch))
            elif any(shard.outstanding is not None for shard in self.shards):
                s = next(i for i, shard in enumerate(self.shards) if shard.outstanding is not None)
                self._apply(s, self.shards[s].retry())
            else:
                return
        raise AssertionError("no quiescence after 10000 steps")


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
