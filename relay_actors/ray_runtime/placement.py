"""Which CallActor takes a call or a message, sans-IO.

A call goes to the least loaded CallActor with room (load = calls placed /
capacity); inbound messages go round-robin over the available ones. A CallActor
can be set unavailable for a reason (``"lost"`` while its loss is handled,
``"draining"``, ``"slow"`` when the data plane sees its link lag) and is then
skipped until it is set available again; a reason set by one detector is not
cleared by another.

Rolling upgrades: each CallActor belongs to a code generation (the handlers it
runs). New calls and messages go only to the newest generation that has an
available CallActor, so once a shard knows a new generation's actors the older
ones take nothing new and drain; should every actor of the newest generation be
unavailable (lost, slow), the next older generation serves rather than the offer
being dropped. A CallActor the router retired is :meth:`forget`-ten.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

__all__ = ["Placement"]


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
