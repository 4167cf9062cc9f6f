"""A hypothesis model of the router's pool core (:class:`~relay_actors.ray_runtime.pool_core.PoolCore`).

The real core, carried out as the router's shell does, among modelled CallActors (the
calls they hold, by shard) and shards (each a real
:class:`~relay_actors.ray_runtime.shard_core.ShardCore` fed the core's pool snapshots,
and the calls it placed). Every change of the pool pushes a snapshot to each shard;
pushes arrive late, twice or out of order, and a shard may pull one (start-up, a
retirement check). At any step a CallActor may crash and restart (a new incarnation),
a call start or end, the pool grow, an upgrade begin, come up or fail (other steps run
while it is under way), a retirement step run (any CallActor or shard may not answer),
and the router restart: a new core (a higher epoch) rebuilt from the stored state and
what the CallActors report.

Invariants after every step: no call is placed on, or held for, a retired CallActor;
a CallActor is stopped only when neither it nor any shard holds anything with it; a
shard that knows the current generation places every new call on it; within one
router's life the pool the shards see changes only with a newer snapshot version; the
snapshot a shard has never goes back.

``RELAY_MODEL_PROFILE=long`` runs longer; the CI profile stays within a few seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from relay_actors.ray_runtime.pool_core import (
    ActorHealth,
    CallPlaced,
    CallReleased,
    PoolCore,
    PoolSnapshot,
    RetireStep,
    Spawn,
)
from relay_actors.ray_runtime.shard_core import ShardCore

PROFILES = {"ci": (60, 60), "long": (2000, 150)}
EXAMPLES, STEPS = PROFILES[os.environ.get("RELAY_MODEL_PROFILE", "ci")]
CAPACITY = 3
NODES = ["n1", "n2"]


@dataclass
class Actor:
    generation: int
    incarnation: int = 0
    #: call_id -> the shard that placed it
    calls: dict[str, int] = field(default_factory=dict)
    stopped: bool = False


class NoIO:
    """The shard's effects: nothing on the pool's path does I/O."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the pool path asked the shell for {name}")


@dataclass
class Shard:
    core: ShardCore
    calls: dict[str, int] = field(default_factory=dict)
    #: Snapshots pushed to it and not delivered yet (in any order, possibly twice).
    inbox: list[PoolSnapshot] = field(default_factory=list)
    #: The newest snapshot key it had (it must never go back).
    had: tuple[int, int] = (-1, -1)

    @property
    def generation_seen(self) -> int:
        return self.core.pool.snapshot.generation if self.core.pool.snapshot is not None else 0


class PoolModel(RuleBasedStateMachine):
    @initialize(shards=st.integers(1, 3), min_actors=st.integers(1, 2), extra=st.integers(0, 2))
    def setup(self, shards: int, min_actors: int, extra: int) -> None:
        self.n_shards = shards
        self.bounds = (min_actors, min_actors + extra)
        self.actors: dict[int, Actor] = {}
        self.stored: dict[str, object] | None = None
        self.shards = [Shard(ShardCore(s, NoIO())) for s in range(shards)]  # type: ignore[arg-type]
        self.next_call = 0
        self.now = 0.0
        self._last_snapshot: tuple[PoolCore, int, object] | None = None
        self.epoch = 1
        self.core = self._new_core()
        self.core.set_nodes(NODES)
        for spawn in self.core.fill():
            self._create(spawn)
        self._health()
        self._save()
        for s in range(shards):
            self._pull(s)

    # --- the shell's part ------------------------------------------------------------

    def _new_core(self) -> PoolCore:
        return PoolCore(
            shards=self.n_shards,
            min_actors=self.bounds[0],
            max_actors=self.bounds[1],
            capacity=CAPACITY,
            handlers=b"g0",
            epoch=self.epoch,
        )

    def _create(self, spawn: Spawn) -> None:
        assert spawn.index not in self.actors, "an index reused"
        self.actors[spawn.index] = Actor(spawn.generation)

    def _save(self) -> None:
        self.stored = self.core.persisted()

    def _answer(self, idx: int) -> ActorHealth | None:
        actor = self.actors.get(idx)
        if actor is None or actor.stopped:
            return None
        return ActorHealth(str(actor.incarnation), len(actor.calls), NODES[idx % 2])

    def _health(self) -> None:
        for idx in list(self.core.actors):
            lost = self.core.health(idx, self._answer(idx))
            if lost is not None:  # every shard applies the lost-calls policy (hang up)
                for shard in self.shards:
                    for cid in [c for c, on in shard.calls.items() if on == idx]:
                        del shard.calls[cid]

    def _pull(self, s: int) -> None:
        """A shard asks for the snapshot (start-up, or it missed a generation)."""
        core = self.shards[s].core
        for idx in core.pool.apply(self.core.snapshot()) or []:
            core.call_actor_linked(idx)  # (links are not modelled: up at once)

    def _publish(self) -> None:
        """The router pushes its snapshot to every shard (it arrives later)."""
        snapshot = self.core.snapshot()
        for shard in self.shards:
            shard.inbox.append(snapshot)

    def _busy(self, s: int, idx: int) -> int:
        shard = self.shards[s]
        if self.core.generation > shard.generation_seen:
            self._pull(s)  # (call_actor_busy learns a missed generation first)
        return sum(1 for on in shard.calls.values() if on == idx)

    def _stop(self, idx: int) -> None:
        actor = self.actors[idx]
        assert not actor.calls, f"CallActor {idx} stopped while holding {actor.calls}"
        for s, shard in enumerate(self.shards):
            assert idx not in shard.calls.values(), f"CallActor {idx} stopped while shard {s} routes to it"
        actor.stopped = True

    # --- what happens ----------------------------------------------------------------

    @rule(s=st.integers(0, 2))
    def place_call(self, s: int) -> None:
        shard = self.shards[s % self.n_shards]
        idx = shard.core.placement.pick()
        if idx is None:
            spawn = self.core.want_capacity()
            if spawn is not None:
                self._create(spawn)
                self._save()
                self._publish()
            return
        actor = self.actors[idx]
        assert idx not in self.core.retired and not actor.stopped, f"a call placed on retired CallActor {idx}"
        if shard.generation_seen == self.core.generation:
            assert actor.generation == self.core.generation, "a new call on an older generation"
        cid = f"c{self.next_call}"
        self.next_call += 1
        shard.core.placement.placed_on(idx)
        shard.calls[cid] = idx
        actor.calls[cid] = s % self.n_shards
        self.core.report(s % self.n_shards, [CallPlaced(cid, idx)])

    @rule(pick=st.integers(0, 1000))
    def end_call(self, pick: int) -> None:
        held = sorted((cid, s) for s, shard in enumerate(self.shards) for cid in shard.calls)
        if not held:
            return
        cid, s = held[pick % len(held)]
        idx = self.shards[s].calls.pop(cid)
        self.shards[s].core.placement.released(idx)
        self.actors[idx].calls.pop(cid, None)
        self.core.report(s, [CallReleased(cid)])

    @rule(pick=st.integers(0, 20))
    def crash_call_actor(self, pick: int) -> None:
        live = sorted(i for i, a in self.actors.items() if not a.stopped)
        if live:
            actor = self.actors[live[pick % len(live)]]
            actor.incarnation += 1
            actor.calls.clear()

    @rule()
    def health_round(self) -> None:
        self._health()
        spawn = self.core.autoscale()
        if spawn is not None:
            self._create(spawn)
            self._save()
            self._publish()
            self.core.scaled()

    @rule(s=st.integers(0, 2))
    def shard_reads_the_pool(self, s: int) -> None:
        self._pull(s % self.n_shards)

    @rule(s=st.integers(0, 2), pick=st.integers(0, 50), again=st.booleans())
    def a_push_arrives(self, s: int, pick: int, again: bool) -> None:
        """One pushed snapshot reaches its shard: any of those in flight (reordered),
        possibly to arrive again later (duplicated)."""
        shard = self.shards[s % self.n_shards]
        if shard.inbox:
            snapshot = shard.inbox[pick % len(shard.inbox)]
            if not again:
                shard.inbox.remove(snapshot)
            for idx in shard.core.pool.apply(snapshot) or []:
                shard.core.call_actor_linked(idx)

    @precondition(lambda self: not self.core.upgrading)
    @rule()
    def begin_upgrade(self) -> None:
        gen = self.core.generation + 1
        for spawn in self.core.begin_upgrade(f"g{gen}".encode(), {}):
            self._create(spawn)
        self._save()

    @precondition(lambda self: self.core.upgrading)
    @rule(ok=st.booleans(), told=st.lists(st.booleans(), min_size=3, max_size=3))
    def finish_upgrade(self, ok: bool, told: list[bool]) -> None:
        if not ok:
            for idx in self.core.upgrade_failed():
                self.actors[idx].stopped = True  # (never shown: nothing on it)
            self._save()
            return
        created = [i for i, a in self.core.actors.items() if a.admitting]
        healths = {i: h for i in created if (h := self._answer(i)) is not None}
        self.now += 1
        self.core.upgrade_up(healths, self.now, drain_timeout=5.0)
        self._save()
        self._publish()
        for s in range(self.n_shards):
            if told[s]:  # (the others' push is still on its way)
                self.a_push_arrives(s, len(self.shards[s].inbox) - 1, again=False)

    @rule(
        pick=st.integers(0, 20),
        actor_answers=st.booleans(),
        silent=st.lists(st.booleans(), min_size=3, max_size=3),
        later=st.floats(0, 4),
    )
    def retirement_step(self, pick: int, actor_answers: bool, silent: list[bool], later: float) -> None:
        retiring = sorted(self.core.retiring)
        if not retiring:
            return
        idx = retiring[pick % len(retiring)]
        self.now += later
        actor = self.actors.get(idx)
        actor_busy = None if not actor_answers else bool(actor and not actor.stopped and actor.calls)
        answering = [s for s in range(self.n_shards) if not silent[s]]
        step = self.core.retire_step(idx, actor_busy, {s: self._busy(s, idx) for s in answering}, self.now)
        if step is RetireStep.HANG_UP:
            for s in answering:
                shard = self.shards[s]
                for cid in [c for c, on in shard.calls.items() if on == idx]:
                    del shard.calls[cid]
                    self.actors[idx].calls.pop(cid, None)
                    self.core.report(s, [CallReleased(cid)])
        elif step is RetireStep.FORGET:
            answers = {}
            for s in answering:  # forget_call_actor: only if nothing is with it, in one step
                answers[s] = self.shards[s].core.pool.retire(idx, unacknowledged=self._busy(s, idx))
            if self.core.forgotten(idx, answers):
                self._save()
                self._publish()
                if idx in self.actors and not self.actors[idx].stopped:
                    self._stop(idx)

    @rule()
    def router_restarts(self) -> None:
        """A new core from the stored state and what the CallActors it finds report."""
        self.epoch += 1
        self.core = self._new_core()
        self.core.restore(self.stored)
        self.core.set_nodes(NODES)
        for idx in self.core.lookup_indices():
            actor = self.actors.get(idx)
            if actor is not None and not actor.stopped and not self.core.adopt(idx):
                assert not actor.calls and all(idx not in s.calls.values() for s in self.shards)
                actor.stopped = True
        self.core.adopted()
        for spawn in self.core.fill():
            self._create(spawn)
        self._health()
        for idx in list(self.core.actors):
            actor = self.actors[idx]
            for s in range(self.n_shards):
                self.core.owned(s, idx, [cid for cid, on in actor.calls.items() if on == s])
        self._save()
        self._publish()

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def no_call_on_a_retired_actor(self) -> None:
        for shard in self.shards:
            for cid, idx in shard.calls.items():
                assert idx not in self.core.retired, f"call {cid} on retired CallActor {idx}"
                assert not self.actors[idx].stopped, f"call {cid} on stopped CallActor {idx}"
        for idx in self.core.retired:
            actor = self.actors.get(idx)
            assert actor is None or actor.stopped or not actor.calls

    @invariant()
    def the_core_shows_only_running_actors(self) -> None:
        for idx in self.core.view():
            assert not self.actors[idx].stopped, f"stopped CallActor {idx} still shown"

    @invariant()
    def a_changed_pool_has_a_newer_snapshot(self) -> None:
        """Within one router's life, what the shards see changes only with the version."""
        snap = self.core.snapshot()
        content = (snap.generation, snap.actors, snap.nodes, snap.retiring)
        last = self._last_snapshot
        if last is not None and last[0] is self.core:
            assert snap.version >= last[1]
            assert snap.version > last[1] or content == last[2], "the pool changed under the same version"
        self._last_snapshot = (self.core, snap.version, content)

    @invariant()
    def a_shard_s_snapshot_never_goes_back(self) -> None:
        for s, shard in enumerate(self.shards):
            if shard.core.pool.snapshot is not None:
                assert shard.core.pool.snapshot.key >= shard.had, f"shard {s} went back to an older pool"
                shard.had = shard.core.pool.snapshot.key

    @invariant()
    def the_current_generation_is_within_its_bounds(self) -> None:
        assert len(self.core.current()) <= self.bounds[1]


PoolModel.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPoolModel = PoolModel.TestCase
