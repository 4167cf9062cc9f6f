"""A bounded window of recent ids: "have I seen this id lately?" in O(1).

A RELAY server redelivers the events it saw no ack for, and the runtime remembers
the calls it took from a CallActor; each keeps the last ``size`` ids it met and
forgets the oldest beyond that, so its memory is fixed however long it runs. Used
by :class:`~relay_actors.protocol.session.ClientSession` (redelivered events and
requests), :class:`~relay_actors.ray_runtime.event_dedupe.EventDedupe` (events a
CallActor already applied, per shard) and the shard core's fenced calls.
"""

from __future__ import annotations

from collections import deque

__all__ = ["RecentIds"]


class RecentIds:
    """The last ``size`` distinct ids remembered, in order of arrival; the oldest goes first.

    ``size`` may be changed later: it takes effect at the next :meth:`remember`.
    A set answers membership and a deque keeps the order, so every step is O(1)
    (and lighter than an ``OrderedDict``'s linked entries).
    """

    __slots__ = ("_ids", "_order", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        self.size = size
        self._ids: set[str] = set()
        self._order: deque[str] = deque()

    def __contains__(self, id_: object) -> bool:
        return id_ in self._ids

    def __len__(self) -> int:
        return len(self._order)

    def seen_before(self, id_: str) -> bool:
        """True if ``id_`` is among the recent ids; otherwise remember it and say False."""
        if id_ in self._ids:
            return True
        self._add(id_)
        return False

    def remember(self, id_: str) -> None:
        """Remember ``id_`` (nothing changes if it is already among the recent ids)."""
        if id_ not in self._ids:
            self._add(id_)

    def _add(self, id_: str) -> None:
        ids, order = self._ids, self._order
        ids.add(id_)
        order.append(id_)
        while len(order) > self.size:
            ids.discard(order.popleft())
