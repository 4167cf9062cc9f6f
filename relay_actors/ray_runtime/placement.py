"""Which CallActor takes a call or a message, sans-IO.

A call goes to the least loaded CallActor with room (load = calls placed /
capacity); inbound messages go round-robin over the available ones. A CallActor
can be set unavailable for a reason (``"lost"`` while its loss is handled,
``"draining"``, ``"slow"`` when the data plane sees its link lag) and is then
skipped until it is set available again; a reason set by one detector is not
cleared by another.
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
        self._rr = 0

    def add(self, idx: int, capacity: int) -> bool:
        """Know CallActor ``idx``; False if it was known already."""
        if idx in self.capacity:
            return False
        self.capacity[idx] = capacity
        return True

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
        return [idx for idx in self.capacity if idx not in self.unavailable]

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
