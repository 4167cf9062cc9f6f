"""The router's decisions about the CallActor pool, sans-IO: a reconciler over plain state.

:class:`PoolCore` holds what the router knows of the pool and decides; the router
(:mod:`relay_actors.ray_runtime.router`) does the Ray calls, the KV store and the timers,
and carries out what the core returns. No ``ray``, no sockets: every decision is a unit
test (``tests/pool/``), and a hypothesis model drives the real core.

What it decides:

* **size and health**: between ``min_actors`` and ``max_actors`` CallActors of the
  current generation (:meth:`PoolCore.fill`, :meth:`PoolCore.autoscale`,
  :meth:`PoolCore.want_capacity`); each health answer updates an actor's load and node,
  and a new incarnation is a loss (:class:`ActorLost`: the shards apply the lost-calls
  policy to the calls it had);
* **where a new CallActor goes** (:meth:`PoolCore.spawn`): with ``spread`` placement,
  the live node holding the fewest of the generation's CallActors
  (:func:`~relay_actors.ray_runtime.placement.spread_node`);
* **generations**: an upgrade (:meth:`PoolCore.begin_upgrade`) creates the next
  generation's CallActors, shown to no shard while they come up (*admitting*); once up
  (:meth:`PoolCore.upgrade_up`) it is the current generation, which the shards place
  every new call on, and every older CallActor retires; if they fail
  (:meth:`PoolCore.upgrade_failed`) they are discarded and the running generation
  serves on;
* **retirement** (:meth:`PoolCore.retire_step`, :meth:`PoolCore.forgotten`): a retiring
  CallActor is removed only when it and every shard say it holds nothing ("could not
  ask" is "busy"), and only after every shard forgot it (so no call is placed on it
  after, and its stop is no loss to them); past its drain deadline its calls are hung
  up, once. A retired index is never reused;
* **the call table** (:meth:`PoolCore.report`): call → CallActor as the shards report
  it, for status and for a restarted shard.

After a router restart the core is rebuilt (:meth:`PoolCore.restore` from the stored
:meth:`PoolCore.persisted` state, :meth:`PoolCore.adopt` for each CallActor found by
name, :meth:`PoolCore.health` with what each reports, :meth:`PoolCore.owned` with the
calls each holds). CallActors an upgrade was bringing up when the router died are
discarded then: their upgrade failed with it.

:class:`ShardRestarts` decides which shards to restart: one whose start-up failed.

Every change the shards must learn bumps :attr:`PoolCore.version`; :meth:`PoolCore.snapshot`
is the pool as one versioned value (:class:`PoolSnapshot`), which the router pushes to every
shard and a (re)starting shard asks for; a shard applies one only if it is newer than what it
has (:meth:`PoolSnapshot.newer_than`), so a late, repeated or reordered push changes nothing.
The version is ``(epoch, version)``: the router's epoch (higher after each router start)
first, so a restarted router's snapshots, whose counter starts again, are still newer.

What the shards report to the router about their calls are typed values
(:data:`RouterReport`: :class:`CallPlaced`, :class:`CallMoved`, :class:`CallReleased`,
:class:`CallsHeld`), applied by :meth:`PoolCore.report`.
"""

from __future__ import annotations

import base64
import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .placement import spread_node

__all__ = [
    "ActorHealth",
    "ActorLost",
    "CallMoved",
    "CallPlaced",
    "CallReleased",
    "CallsHeld",
    "PoolActor",
    "PoolCore",
    "PoolSnapshot",
    "RetireStep",
    "RouterReport",
    "ShardCheck",
    "ShardRestarts",
    "Spawn",
]

#: The pool grows when the current generation's calls pass this share of its capacity.
SCALE_UP_AT = 0.8


@dataclass(frozen=True, slots=True)
class ActorHealth:
    """A CallActor's answer to ``health()``: its incarnation (new after each restart),
    the calls it holds and its node (empty if not known yet)."""

    incarnation: str
    calls: int
    node: str = ""

    @classmethod
    def from_dict(cls, answer: Mapping[str, Any]) -> ActorHealth:
        return cls(str(answer["incarnation"]), int(answer.get("calls", 0)), str(answer.get("node") or ""))


@dataclass(slots=True)
class PoolActor:
    """What the core knows of one CallActor."""

    #: The code generation it runs (0: the app's first).
    generation: int
    #: As it last reported (None: never answered yet).
    incarnation: str | None = None
    #: Calls it holds, as it last reported.
    load: int = 0
    #: Its node, as it reports, else where it was asked to go (None: unknown).
    node: str | None = None
    #: Created by an upgrade that has not finished: shown to no shard.
    admitting: bool = False


@dataclass(frozen=True, slots=True)
class Spawn:
    """Create CallActor ``index`` running ``generation``'s code, on ``node`` (soft
    affinity; None: let Ray place it, by its resource or its SPREAD)."""

    index: int
    generation: int
    node: str | None


@dataclass(frozen=True, slots=True)
class ActorLost:
    """CallActor ``index`` restarted (``previous`` was lost, now ``incarnation``): tell
    every shard, which applies the lost-calls policy to its calls on ``previous``;
    ``calls``: those the table had on it (now dropped)."""

    index: int
    incarnation: str
    calls: tuple[str, ...]
    previous: str


class RetireStep(str, enum.Enum):
    """What to do with a retiring CallActor now."""

    #: It holds something: look again later.
    WAIT = "wait"
    #: It holds nothing anywhere: have every shard forget it, then :meth:`PoolCore.forgotten`.
    FORGET = "forget"
    #: Past its drain deadline and still busy: have the shards hang up its calls (once).
    HANG_UP = "hang_up"


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """The pool as the shards place by it: one value, newer when ``(epoch, version)`` is
    higher (see :meth:`newer_than`)."""

    #: The epoch of the router that made it (higher after each router start).
    epoch: int
    #: Bumped by every change within one router's life.
    version: int
    generation: int
    #: ``(index, generation)`` of every CallActor a shard may link to (none admitting).
    actors: tuple[tuple[int, int], ...]
    #: ``(index, node)`` of those of them whose node is known.
    nodes: tuple[tuple[int, str], ...]
    retiring: tuple[int, ...]
    capacity: int
    #: The job of the driver that owns the app now (whose logs show the actors'; "" for the first).
    log_job: str = ""

    @property
    def key(self) -> tuple[int, int]:
        return (self.epoch, self.version)

    def newer_than(self, other: PoolSnapshot | None) -> bool:
        """Whether a shard that has ``other`` (None: none yet) should apply this one."""
        return other is None or self.key > other.key


@dataclass(frozen=True, slots=True)
class CallPlaced:
    """A shard placed ``call_id`` on CallActor ``actor``."""

    call_id: str
    actor: int


@dataclass(frozen=True, slots=True)
class CallMoved:
    """A re-homed call now lives on CallActor ``actor``."""

    call_id: str
    actor: int


@dataclass(frozen=True, slots=True)
class CallReleased:
    """The call ended (or left this shard)."""

    call_id: str


@dataclass(frozen=True, slots=True)
class CallsHeld:
    """From a (re)started shard: every call it holds now (``held``: ``(call_id, actor)``);
    those it no longer holds ended while it was down, except on the CallActors it could
    not ask (``unasked``)."""

    held: tuple[tuple[str, int], ...]
    unasked: tuple[int, ...] = ()


#: What a shard reports to the router about its calls (batched; idempotent).
RouterReport = CallPlaced | CallMoved | CallReleased | CallsHeld


@dataclass(slots=True)
class _Upgrade:
    generation: int
    handlers: bytes
    call_actor_options: dict[str, Any]
    created: list[int] = field(default_factory=list)


class PoolCore:
    """See the module docstring.

    Args:
        shards: connection actors (each must answer before a CallActor is retired).
        min_actors, max_actors: bounds of the current generation's CallActors.
        capacity: calls one CallActor takes.
        spread: choose each new CallActor's node (False: a custom resource pins them).
        handlers, call_actor_options: the first generation's code (cloudpickled) and
            CallActor options; an upgrade replaces both.
    """

    def __init__(
        self,
        *,
        shards: int,
        min_actors: int,
        max_actors: int,
        capacity: int,
        spread: bool = True,
        handlers: bytes = b"",
        call_actor_options: Mapping[str, Any] | None = None,
        epoch: int = 0,
    ) -> None:
        self.shards = shards
        self.min_actors = min_actors
        self.max_actors = max(min_actors, max_actors)
        self.capacity = capacity
        self.spread = spread
        self.generation = 0
        self.handlers = handlers
        self.call_actor_options: dict[str, Any] = dict(call_actor_options or {})
        self.actors: dict[int, PoolActor] = {}
        #: Retiring CallActor → its drain deadline (wall clock).
        self.retiring: dict[int, float] = {}
        #: Indices never to use again (a shard that forgot one must not take a new actor for it).
        self.retired: set[int] = set()
        #: Retiring CallActors whose calls were hung up at their deadline.
        self.hung_up: set[int] = set()
        #: The live nodes that can host a CallActor.
        self.nodes: list[str] = []
        #: call_id → CallActor index, and → the shard that reported it.
        self.calls: dict[str, int] = {}
        self.call_shard: dict[str, int] = {}
        self.counters: Counter[str] = Counter()
        #: The router's epoch (see :class:`PoolSnapshot`) and the changes within it.
        self.epoch = epoch
        self.version = 0
        self._scaling = False
        #: The CallActor the last :meth:`want_capacity` created (None: none).
        self._asked_for: int | None = None
        self._upgrade: _Upgrade | None = None
        #: Found at restore: an upgrade's CallActors the last router did not finish.
        self._stale_admitting: set[int] = set()
        #: Each CallActor's generation as stored (applied as each is found).
        self._restored_generations: dict[int, int] = {}

    # --- size and placement -----------------------------------------------------------

    def current(self) -> list[int]:
        """The CallActors of the current generation (those the pool bounds apply to)."""
        return [i for i, a in self.actors.items() if a.generation == self.generation and not a.admitting]

    def free_index(self) -> int:
        idx = 0
        while idx in self.actors or idx in self.retired:
            idx += 1
        return idx

    def set_nodes(self, nodes: Iterable[str]) -> None:
        self.nodes = sorted(nodes)

    def spawn(self, generation: int | None = None, *, admitting: bool = False) -> Spawn:
        """A new CallActor of ``generation`` (default: the current one), added to the pool."""
        gen = self.generation if generation is None else generation
        idx = self.free_index()
        node = None
        if self.spread:
            same = [a.node for a in self.actors.values() if a.generation == gen and a.node]
            node = spread_node(self.nodes, same)
        self.actors[idx] = PoolActor(gen, node=node, admitting=admitting)
        self.counters["actors_created"] += 1
        if not admitting:
            self.version += 1
        return Spawn(idx, gen, node)

    def fill(self) -> list[Spawn]:
        """The CallActors to create so the current generation has ``min_actors``."""
        return [self.spawn() for _ in range(self.min_actors - len(self.current()))]

    def autoscale(self) -> Spawn | None:
        """One more CallActor when the current generation is over :data:`SCALE_UP_AT` of its
        capacity and below ``max_actors``; one scale-up at a time (:meth:`scaled`)."""
        current = self.current()
        if self._scaling or not current or len(current) >= self.max_actors:
            return None
        if sum(self.actors[i].load for i in current) <= SCALE_UP_AT * self.capacity * len(current):
            return None
        self._scaling = True
        return self.spawn()

    def scaled(self) -> None:
        """The scale-up :meth:`autoscale` asked for is done (the shards were told)."""
        self._scaling = False

    def want_capacity(self) -> Spawn | None:
        """A shard found every CallActor full, or lagging: one more, if the bounds allow
        and the last one asked for has answered (a stall makes every waiting offer ask;
        until the new CallActor is up, another would only start on the same busy node)."""
        asked = self.actors.get(self._asked_for) if self._asked_for is not None else None
        if asked is not None and asked.incarnation is None:
            return None
        if len(self.current()) >= self.max_actors:
            return None
        spawn = self.spawn()
        self._asked_for = spawn.index
        return spawn

    # --- health -----------------------------------------------------------------------

    def health(self, idx: int, answer: ActorHealth | None) -> ActorLost | None:
        """CallActor ``idx`` answered ``health()`` (None: it did not; nothing changes, a
        restart shows as a new incarnation later). A new incarnation is a loss: its calls
        leave the table and go to the shards' lost-calls policy."""
        actor = self.actors.get(idx)
        if actor is None or answer is None:
            return None
        previous, actor.incarnation = actor.incarnation, answer.incarnation
        actor.load = answer.calls
        if answer.node and answer.node != actor.node:
            actor.node = answer.node
            if not actor.admitting:
                self.version += 1  # (the snapshot shows it)
        if previous is None or previous == answer.incarnation:
            return None
        self.counters["call_actor_restarts"] += 1
        return ActorLost(idx, answer.incarnation, self._drop_calls_on(idx), previous)

    def _drop_calls_on(self, idx: int) -> tuple[str, ...]:
        lost = tuple(cid for cid, on in self.calls.items() if on == idx)
        for cid in lost:
            del self.calls[cid]
            self.call_shard.pop(cid, None)
        return lost

    # --- what the shards and the driver see --------------------------------------------

    def view(self, current_only: bool = False) -> list[int]:
        """The CallActors shown (none admitting); of the current generation only with
        ``current_only`` (where the driver sends its dials and messages)."""
        return [
            idx
            for idx, a in self.actors.items()
            if not a.admitting and (not current_only or a.generation == self.generation)
        ]

    def generations_info(self) -> dict[str, Any]:
        """The current generation, each shown CallActor's and the retiring ones."""
        return {
            "generation": self.generation,
            "actors": {idx: self.actors[idx].generation for idx in self.view()},
            "retiring": sorted(self.retiring),
            # The job of the driver that owns the app now (whose logs show the actors').
            "log_job": self.call_actor_options.get("log_job") if self.generation else None,
        }

    def snapshot(self) -> PoolSnapshot:
        """The pool as the shards see it, as one versioned value."""
        shown = sorted(self.view())
        return PoolSnapshot(
            epoch=self.epoch,
            version=self.version,
            generation=self.generation,
            actors=tuple((idx, self.actors[idx].generation) for idx in shown),
            nodes=tuple((idx, node) for idx in shown if (node := self.actors[idx].node)),
            retiring=tuple(sorted(self.retiring)),
            capacity=self.capacity,
            log_job=str(self.call_actor_options.get("log_job") or "") if self.generation else "",
        )

    # --- rolling upgrade --------------------------------------------------------------

    @property
    def upgrading(self) -> bool:
        return self._upgrade is not None

    def begin_upgrade(self, handlers: bytes, call_actor_options: Mapping[str, Any]) -> list[Spawn]:
        """The next generation's CallActors to create (as many as the current one has,
        within the bounds); admitting until :meth:`upgrade_up` or :meth:`upgrade_failed`."""
        if self._upgrade is not None:
            raise RuntimeError("an upgrade is already under way")
        count = max(self.min_actors, min(len(self.current()), self.max_actors))
        upgrade = _Upgrade(self.generation + 1, handlers, dict(call_actor_options))
        self._upgrade = upgrade
        spawns = [self.spawn(upgrade.generation, admitting=True) for _ in range(count)]
        upgrade.created = [s.index for s in spawns]
        return spawns

    def upgrade_up(self, healths: Mapping[int, ActorHealth], now: float, drain_timeout: float) -> list[int]:
        """The new CallActors answered (``healths``): their generation is current and
        every older CallActor retires, its calls hung up after ``drain_timeout`` s.
        Returns the CallActors now retiring."""
        upgrade = self._take_upgrade()
        self.generation, self.handlers = upgrade.generation, upgrade.handlers
        self.call_actor_options = upgrade.call_actor_options
        for idx in upgrade.created:
            actor = self.actors[idx]
            actor.admitting = False
            self.health(idx, healths.get(idx))
        deadline = now + drain_timeout
        # Every older CallActor (also one a scale-up made meanwhile) retires.
        for idx, actor in self.actors.items():
            if actor.generation < self.generation:
                self.retiring.setdefault(idx, deadline)
        self.counters["upgrades"] += 1
        self.version += 1
        return sorted(self.retiring)

    def upgrade_failed(self) -> list[int]:
        """The new CallActors did not come up: the CallActors to kill (no shard knows
        them); their indices are never reused. The running generation serves on."""
        upgrade = self._take_upgrade()
        self.counters["upgrades_failed"] += 1
        return self._discard(upgrade.created)

    def _take_upgrade(self) -> _Upgrade:
        if self._upgrade is None:
            raise RuntimeError("no upgrade under way")
        upgrade, self._upgrade = self._upgrade, None
        return upgrade

    def _discard(self, indices: Iterable[int]) -> list[int]:
        gone = []
        for idx in indices:
            if self.actors.pop(idx, None) is not None:
                gone.append(idx)
            self.retired.add(idx)
        return gone

    # --- retirement -------------------------------------------------------------------

    def retire_step(
        self, idx: int, actor_busy: bool | None, shards_busy: Mapping[int, int], now: float
    ) -> RetireStep:
        """What to do with retiring CallActor ``idx``, given whether it holds a call, a
        handler or a dial (``actor_busy``; None: it could not be asked) and what each shard
        that answered still has with it (``shards_busy``: a shard missing is busy)."""
        if idx not in self.retiring:
            return RetireStep.WAIT
        idle = actor_busy is False or idx not in self.actors
        if idle and len(shards_busy) == self.shards and not any(shards_busy.values()):
            return RetireStep.FORGET
        if now > self.retiring[idx] and idx not in self.hung_up:
            self.hung_up.add(idx)
            return RetireStep.HANG_UP
        return RetireStep.WAIT

    def hung_up_calls(self, count: int) -> None:
        self.counters["calls_hung_up_drain_timeout"] += count

    def forgotten(self, idx: int, answers: Mapping[int, bool]) -> bool:
        """The shards' answers to "forget CallActor ``idx``" (True: forgotten; a shard
        missing did not answer). Removed (True: stop and kill it) only when every shard
        forgot it; else it stays retiring for the next :meth:`retire_step`."""
        if idx not in self.retiring or len(answers) < self.shards or not all(answers.values()):
            return False
        self.retiring.pop(idx)
        self.hung_up.discard(idx)
        self._discard([idx])
        self.counters["call_actors_retired"] += 1
        self.version += 1
        return True

    # --- the call table ---------------------------------------------------------------

    def report(self, shard: int, batch: Iterable[RouterReport]) -> None:
        """What ``shard`` reports of its calls (see :data:`RouterReport`). Idempotent."""
        for item in batch:
            if isinstance(item, CallPlaced):
                if self.calls.get(item.call_id, item.actor) != item.actor:
                    self.counters["double_assignments"] += 1
                self.calls[item.call_id] = item.actor
                self.call_shard[item.call_id] = shard
            elif isinstance(item, CallMoved):
                self.calls[item.call_id] = item.actor
            elif isinstance(item, CallReleased):
                self.calls.pop(item.call_id, None)
                self.call_shard.pop(item.call_id, None)
            else:
                self._sync(shard, dict(item.held), set(item.unasked))

    def _sync(self, shard: int, held: dict[str, int], unasked: set[int]) -> None:
        mine = [cid for cid, s in self.call_shard.items() if s == shard]
        for cid in mine:
            if cid not in held and self.calls.get(cid) not in unasked:
                self.calls.pop(cid, None)
                self.call_shard.pop(cid, None)
        for cid, idx in held.items():
            self.calls[cid] = idx
            self.call_shard[cid] = shard

    def owned(self, shard: int, idx: int, call_ids: Iterable[str]) -> None:
        """CallActor ``idx`` holds ``call_ids`` for ``shard`` (a rebuild after a restart)."""
        for cid in call_ids:
            self.calls[cid] = idx
            self.call_shard[cid] = shard

    def calls_on(self, shard: int, idx: int) -> list[str]:
        """The calls ``shard`` last reported on CallActor ``idx``."""
        return [cid for cid, on in self.calls.items() if on == idx and self.call_shard.get(cid) == shard]

    def loads(self) -> dict[int, int]:
        return {idx: a.load for idx, a in self.actors.items()}

    # --- what survives a router restart -----------------------------------------------

    def lookup_indices(self) -> list[int]:
        """The CallActor indices a restarted router looks up by name."""
        known = set(self.actors) | set(self._restored_generations) | set(self.retiring)
        return sorted(set(range(self.max_actors)) | known | self._stale_admitting)

    def persisted(self) -> dict[str, Any]:
        """The state a restarted router carries on from (JSON-able; the handlers are the
        app's code, kept in the deploy's KV namespace as an actor argument would carry them)."""
        return {
            "generation": self.generation,
            "actors": {str(k): a.generation for k, a in self.actors.items() if not a.admitting},
            "admitting": sorted(k for k, a in self.actors.items() if a.admitting),
            "retiring": {str(k): v for k, v in self.retiring.items()},
            "retired": sorted(self.retired),
            "handlers": base64.b64encode(self.handlers).decode() if self.generation else None,
            "call_actor": self.call_actor_options,
        }

    def restore(self, state: Mapping[str, Any] | None) -> None:
        """Carry on from :meth:`persisted` (None: nothing stored, the first generation)."""
        if not state:
            return
        self.generation = int(state["generation"])
        self._restored_generations = {int(k): int(v) for k, v in state["actors"].items()}
        self._stale_admitting = {int(k) for k in state.get("admitting", ())}
        self.retiring = {int(k): float(v) for k, v in state["retiring"].items()}
        self.retired = {int(k) for k in state["retired"]}
        if state.get("handlers"):
            self.handlers = base64.b64decode(state["handlers"])
            self.call_actor_options = dict(state["call_actor"])

    def adopt(self, idx: int) -> bool:
        """CallActor ``idx`` was found by name after a restart. False: it must go (an
        unfinished upgrade's, or retired): kill it."""
        if idx in self._stale_admitting or idx in self.retired:
            self._stale_admitting.discard(idx)
            self.retired.add(idx)
            return False
        generation = self._restored_generations.get(idx, 0)
        self.actors[idx] = PoolActor(generation)
        self.version += 1
        return True

    def adopted(self) -> None:
        """Every CallActor was looked up. (A retiring one that is gone stays retiring:
        :meth:`retire_step` finds it idle, and the shards still forget it first.)"""
        self._stale_admitting.clear()


class ShardCheck(str, enum.Enum):
    """What a shard's ``ready()`` said when the router asked."""

    READY = "ready"
    #: Its start-up failed (``ready()`` raised the failure): it serves nothing.
    FAILED = "failed"
    #: No answer in time, or Ray is restarting it: starting, or stalled; not a failure.
    NO_ANSWER = "no_answer"


class ShardRestarts:
    """Which shards the router restarts: one whose start-up failed stays down otherwise
    (no session, no calls answered) until something else kills it. A failed shard is
    restarted at once, then, should it fail again, after a delay doubling from
    ``first_delay`` to ``max_delay`` (a shard that cannot start, bad credentials say,
    is not restarted in a tight loop); a shard seen ready starts over at ``first_delay``.
    A shard that does not answer is left alone: it is starting, or stalled, and a stall
    is not a failure."""

    def __init__(self, first_delay: float = 2.0, max_delay: float = 60.0) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._delay: dict[int, float] = {}
        self._not_before: dict[int, float] = {}
        self.restarts: Counter[int] = Counter()

    def check(self, shard: int, seen: ShardCheck, now: float) -> bool:
        """True: restart ``shard`` now."""
        if seen is ShardCheck.READY:
            self._delay.pop(shard, None)
            self._not_before.pop(shard, None)
            return False
        if seen is ShardCheck.NO_ANSWER or now < self._not_before.get(shard, 0.0):
            return False
        delay = self._delay.get(shard)
        self._delay[shard] = self.first_delay if delay is None else min(2 * delay, self.max_delay)
        self._not_before[shard] = now + self._delay[shard]
        self.restarts[shard] += 1
        return True
