"""Which CallActor takes a call or a message, sans-IO.

A call goes to the least loaded CallActor with room (load = calls placed /
capacity); inbound messages go round-robin over the available ones. A CallActor
can be set unavailable for a reason (``"lost"`` while its loss is handled,
``"draining"``, ``"slow"`` when the data plane sees its link lag) and is then
skipped until it is set available again; a reason set by one detector is not
cleared by another.

:class:`RouteRebuild` is the other half of a shard's routing table: after a
restart the shard re-learns which CallActor holds each call by asking them, and
one that could not be asked is "unknown, retry", never "holds nothing".

Rolling upgrades: each CallActor belongs to a code generation (the handlers it
runs). New calls and messages go only to the newest generation that has an
available CallActor, so once a shard knows a new generation's actors the older
ones take nothing new and drain; should every actor of the newest generation be
unavailable (lost, slow), the next older generation serves rather than the offer
being dropped. A CallActor the router retired is :meth:`forget`-ten.

:func:`spread_node` is where the router puts a new CallActor: on the node with the
fewest of the app's CallActors. Ray's own ``SPREAD`` is best-effort and shared by
every app on the cluster, so two apps starting at once could leave one app's
CallActors all on one node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Generic, TypeVar

__all__ = ["Placement", "RouteRebuild", "spread_node"]

E = TypeVar("E")

#: The reasons that make a CallActor late rather than out of the game: it lags, or its link
#: is not up yet. An offer that finds no other CallActor may wait for such a one.
_LATE = frozenset({"slow", "linking"})


def spread_node(nodes: Iterable[str], actor_nodes: Iterable[str]) -> str | None:
    """The node (of ``nodes``, the live ones that can host a CallActor) holding the
    fewest of ``actor_nodes`` (the node of each of the app's CallActors), the first
    such in ``nodes`` order on a tie; None when there is no node to choose from."""
    candidates = list(dict.fromkeys(nodes))
    if not candidates:
        return None
    counts = Counter(node for node in actor_nodes if node in candidates)
    return min(candidates, key=lambda node: counts[node])


class Placement:
    """The CallActors a shard knows, their load, and the choice of one."""

    def __init__(self) -> None:
        #: CallActor index → calls placed there by this shard.
        self.placed: Counter[int] = Counter()
        #: CallActor index → calls it takes (lowered to ``placed`` when it says it is full).
        self.capacity: dict[int, int] = {}
        #: CallActor index → the reasons it is unavailable.
        self.unavailable: dict[int, set[str]] = {}
        #: CallActor index → the code generation it runs (0: the app's first).
        self.generation: dict[int, int] = {}
        self._rr = 0

    def add(self, idx: int, capacity: int, generation: int = 0) -> bool:
        """Know CallActor ``idx``; False if it was known already."""
        if idx in self.capacity:
            return False
        self.capacity[idx] = capacity
        self.generation[idx] = generation
        return True

    def set_generation(self, idx: int, generation: int) -> None:
        """CallActor ``idx`` runs the handlers of ``generation``."""
        if idx in self.capacity:
            self.generation[idx] = generation

    def forget(self, idx: int) -> None:
        """CallActor ``idx`` was retired (stopped on purpose): never pick it again."""
        self.capacity.pop(idx, None)
        self.placed.pop(idx, None)
        self.unavailable.pop(idx, None)
        self.generation.pop(idx, None)

    def newest(self) -> int | None:
        """The newest generation with an available CallActor (None: none available)."""
        available = [self.generation.get(idx, 0) for idx in self.capacity if idx not in self.unavailable]
        return max(available) if available else None

    def set_unavailable(self, idx: int, reason: str) -> None:
        """Skip ``idx`` for new calls and messages until ``set_available(idx, reason)``."""
        self.unavailable.setdefault(idx, set()).add(reason)

    def set_available(self, idx: int, reason: str) -> None:
        reasons = self.unavailable.get(idx)
        if reasons is not None:
            reasons.discard(reason)
            if not reasons:
                del self.unavailable[idx]

    def is_available(self, idx: int, reason: str | None = None) -> bool:
        """True unless ``idx`` is unavailable (for ``reason``, if given)."""
        reasons = self.unavailable.get(idx, set())
        return reason not in reasons if reason is not None else not reasons

    def live(self) -> list[int]:
        """The available CallActors of the newest generation that has any."""
        newest = self.newest()
        return [
            idx
            for idx in self.capacity
            if idx not in self.unavailable and self.generation.get(idx, 0) == newest
        ]

    def live_with_room(self) -> int:
        """How many available CallActors of the newest generation have room."""
        return sum(1 for idx in self.live() if self.placed[idx] < self.capacity[idx])

    def pick(self, exclude: Iterable[int] = ()) -> int | None:
        """The least loaded available CallActor with room, or None."""
        skip = set(exclude)
        best: int | None = None
        best_load = 2.0
        for idx in self.live():
            if idx in skip:
                continue
            cap = self.capacity[idx] or 1
            load = self.placed[idx] / cap
            if load < best_load and self.placed[idx] < cap:
                best, best_load = idx, load
        return best

    def pick_any(self) -> int | None:
        """The next available CallActor in round-robin (for messages), or None."""
        live = self.live()
        if not live:
            return None
        self._rr = (self._rr + 1) % len(live)
        return live[self._rr]

    def lagging_with_room(self) -> bool:
        """Some CallActor with room is unavailable only because it lags (``slow``) or is not
        linked yet (``linking``): an offer that finds no other may wait for it."""
        return any(
            self._only_late(idx) and self.placed[idx] < capacity for idx, capacity in self.capacity.items()
        )

    def linking_with_room(self) -> bool:
        """Some CallActor with room is unavailable only because its link was never up yet
        (its process is coming up; ``slow`` too once that takes a while)."""
        return any(
            self._only_late(idx) and "linking" in self.unavailable[idx] and self.placed[idx] < capacity
            for idx, capacity in self.capacity.items()
        )

    def any_slow(self) -> bool:
        """Some CallActor lags (rather than only not being linked yet)."""
        return any("slow" in reasons for reasons in self.unavailable.values())

    def _only_late(self, idx: int) -> bool:
        reasons = self.unavailable.get(idx)  # (never empty: set_available drops an empty one)
        return reasons is not None and reasons <= _LATE

    def pick_lagging(self, exclude: Iterable[int] = ()) -> int | None:
        """The CallActor with room that is unavailable only because it lags or is not linked
        yet: one never linked first (its process is coming up, slow or not: a lagging one's
        loop is stalled), then the least loaded."""
        skip = set(exclude)
        lagging = [
            idx
            for idx, capacity in self.capacity.items()
            if idx not in skip and self._only_late(idx) and self.placed[idx] < capacity
        ]
        return min(
            lagging,
            key=lambda idx: (
                "linking" not in self.unavailable[idx],
                "slow" in self.unavailable[idx],
                self.placed[idx] / (self.capacity[idx] or 1),
            ),
            default=None,
        )

    def placed_on(self, idx: int) -> None:
        self.placed[idx] += 1

    def released(self, idx: int) -> None:
        if self.placed[idx] > 0:
            self.placed[idx] -= 1

    def full(self, idx: int) -> None:
        """``idx`` refused a call for lack of room: it takes no more than it has."""
        self.capacity[idx] = self.placed[idx]

    def recount(self, idx: int, calls: int) -> None:
        self.placed[idx] = calls


class RouteRebuild(Generic[E]):
    """What a restarted shard has still to learn from the CallActors, and the events it
    holds meanwhile.

    A CallActor whose ``owned()`` failed or timed out is *unknown*: it is asked again
    (:meth:`due`, :meth:`failed`: backoff from ``first_delay`` doubling to
    ``max_delay``) until it answers (:meth:`resolved` with its calls) or ``deadline``
    seconds have passed since the restart (:meth:`expired`: give it up; the caller
    applies the lost-actor policy to its last known calls and resolves it with them).
    An event for a call the shard cannot route may be one of its calls: while any
    CallActor is unknown it is held (:meth:`hold`), in arrival order, and handed back
    when its call is learned, so the caller routes it then. When no CallActor is
    unknown any more, what is still held is handed back too: truly unroutable.

    Bounded: at most ``max_held`` events are held; when full, :meth:`hold` refuses the
    event (counted in :attr:`overflowed`) and the caller treats it as unroutable now.

    Not covered: an *offer* redelivered for a call of an unknown CallActor (the old
    shard died between that CallActor's acknowledgement and its RELAY ack) looks like
    a new call and is placed; and dial events by a tag only an unknown CallActor knows
    are not held (offers are never held: new callers must not ring until a deadline).
    """

    def __init__(
        self,
        unknown: Iterable[int],
        now: float,
        *,
        deadline: float = 60.0,
        first_delay: float = 0.5,
        max_delay: float = 5.0,
        max_held: int = 10_000,
    ) -> None:
        self.unknown: set[int] = set(unknown)
        self.deadline_at = now + deadline
        self.max_delay = max_delay
        self.max_held = max_held
        self._delay = dict.fromkeys(self.unknown, first_delay)
        self._next_at = dict.fromkeys(self.unknown, now + first_delay)
        self._asking: set[int] = set()
        self._given_up: set[int] = set()
        #: (call_id, event), in arrival order.
        self.held: list[tuple[str, E]] = []
        self.held_total = 0
        self.overflowed = 0

    @property
    def pending(self) -> bool:
        """True while some CallActor is unknown."""
        return bool(self.unknown)

    def due(self, now: float) -> list[int]:
        """Unknown CallActors to ask now (each is being asked until :meth:`failed` or
        :meth:`resolved`)."""
        ready = [
            idx
            for idx in sorted(self.unknown)
            if idx not in self._asking and idx not in self._given_up and self._next_at[idx] <= now
        ]
        self._asking.update(ready)
        return ready

    def failed(self, idx: int, now: float) -> None:
        """Asking ``idx`` failed or timed out: ask again later."""
        self._asking.discard(idx)
        if idx in self.unknown:
            self._delay[idx] = min(2 * self._delay[idx], self.max_delay)
            self._next_at[idx] = now + self._delay[idx]

    def expired(self, now: float) -> list[int]:
        """Unknown CallActors past the deadline: given up (once each); the caller applies
        the lost-actor policy and then calls :meth:`resolved`."""
        if now < self.deadline_at:
            return []
        gone = sorted(self.unknown - self._given_up)
        self._given_up.update(gone)
        return gone

    def resolved(self, idx: int, calls: Iterable[str]) -> list[tuple[str, E]]:
        """``idx`` is known now (it answered with ``calls``, or was given up and ``calls``
        are its last known ones): the held events to route now, in arrival order —
        those of ``calls``, or every one once no CallActor is unknown."""
        if idx not in self.unknown:
            return []
        self.unknown.discard(idx)
        self._asking.discard(idx)
        if not self.unknown:
            released, self.held = self.held, []
            return released
        mine = set(calls)
        released = [entry for entry in self.held if entry[0] in mine]
        if released:
            self.held = [entry for entry in self.held if entry[0] not in mine]
        return released

    def hold(self, call_id: str, event: E) -> bool:
        """Hold an event for ``call_id``, which the shard cannot route yet. False: not
        held (no CallActor is unknown, or the hold is full): it is unroutable now."""
        if not self.unknown:
            return False
        if len(self.held) >= self.max_held:
            self.overflowed += 1
            return False
        self.held.append((call_id, event))
        self.held_total += 1
        return True
