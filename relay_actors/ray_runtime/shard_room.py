"""Offers waiting for a CallActor to take calls again, and the requests for one more, sans-IO.

An admitted offer that finds every CallActor with room only *late* — its loop lags
(``slow``: stalled handlers, a GC pause) or its link is not up yet (``linking``) — waits
for one rather than being dropped below the limit, its slot kept: bounded in number
(:data:`MAX_WAITING_FOR_ROOM`) and in time (:class:`WaitForRoom` rounds of the shell's
``ROOM_WAIT``). The first to wait while a CallActor lags asks the router for one more
(:class:`WantCapacity`); while that request is unanswered and the new CallActor is not
known yet, an offer whose round ends waits another one (:data:`MAX_ROOM_ROUNDS` at most)
instead of going to a loop that may stay stalled. Once a CallActor takes calls again
the offers go there, oldest first; once the wait is over the offer goes to a late one
(:meth:`~relay_actors.ray_runtime.placement.Placement.pick_lagging`: one coming up
first). Owned by :class:`~relay_actors.ray_runtime.shard_core.ShardCore` (``core.room``).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Protocol

from .placement import Placement
from .shard_actions import ShardEffects, WaitForRoom, WantCapacity

if TYPE_CHECKING:
    from ..protocol.events import RelayEvent

__all__ = ["MAX_ROOM_ROUNDS", "MAX_WAITING_FOR_ROOM", "ShardRoomWait", "Waiting"]

#: An offer waiting for a slot or for room: the event and its ack id.
Waiting = tuple["RelayEvent", "str | None"]

#: Offers waiting for a lagging CallActor at most (beyond: placed on one at once).
MAX_WAITING_FOR_ROOM = 10_000
#: Rounds of the room wait an offer may wait while the router has not answered a request
#: for one more CallActor: on a busy machine a new CallActor takes seconds to start, and
#: the lagging one the offer would go to instead may stay stalled (with ``ROOM_WAIT`` =
#: 3 s: 12 s at most, inside a ~30 s ring time).
MAX_ROOM_ROUNDS = 4

_WANT_CAPACITY = WantCapacity()


class RoomUser(Protocol):
    """What :class:`ShardRoomWait` uses of its shard core."""

    fx: ShardEffects
    counters: Counter[str]
    placement: Placement

    def place(self, event: RelayEvent, ack_id: str | None, *, wait: bool = True) -> bool: ...

    def offer_dropped(self, call_id: str) -> None: ...


class ShardRoomWait:
    """The offers waiting for room and the requests for one more CallActor (see module docstring)."""

    __slots__ = ("capacity_asked", "core", "waiting")

    def __init__(self, core: RoomUser) -> None:
        self.core = core
        self.waiting: OrderedDict[str, Waiting] = OrderedDict()
        #: Requests for one more CallActor (:class:`WantCapacity`) the router has not answered.
        self.capacity_asked = 0

    def wait(self, event: RelayEvent, ack_id: str | None) -> bool:
        """Keep an admitted offer that found only late CallActors waiting; False when too
        many wait already (the caller places it on a late one at once)."""
        if len(self.waiting) >= MAX_WAITING_FOR_ROOM:
            return False
        core = self.core
        self.waiting[event.call_id] = (event, ack_id)
        core.counters["offers_waited_for_room"] += 1
        core.fx.act(WaitForRoom(event.call_id))
        if len(self.waiting) == 1 and core.placement.any_slow():
            # The first to wait: every CallActor lags or is not linked yet. The pool adds
            # one, within its bounds, unless none lags (a link about to come up).
            self.want_capacity()
        return True

    def withdraw(self, call_id: str) -> Waiting | None:
        """The offer of a call that ended while it waited: never placed."""
        return self.waiting.pop(call_id, None)

    def place_waiting(self) -> None:
        """A CallActor takes calls again: place the offers that waited, oldest first."""
        placement = self.core.placement
        while self.waiting and placement.pick() is not None:
            _call_id, (event, ack_id) = self.waiting.popitem(last=False)
            self.core.place(event, ack_id)

    def want_capacity(self) -> None:
        """Ask the router for one more CallActor; the shell answers with
        :meth:`capacity_answered` whatever the outcome."""
        self.capacity_asked += 1
        self.core.fx.act(_WANT_CAPACITY)

    def capacity_answered(self) -> None:
        """The router answered a :class:`WantCapacity` (a CallActor it added is in the pool
        this shard has by then), or the request failed or timed out."""
        self.capacity_asked = max(0, self.capacity_asked - 1)

    def over(self, call_id: str, rounds: int = 1) -> None:
        """The offer waited ``rounds`` rounds (:class:`WaitForRoom`): placed now, or dropped
        — unless the pool is still growing for it and the new CallActor is not known yet,
        when it waits another round (bounded by :data:`MAX_ROOM_ROUNDS`)."""
        core = self.core
        if (
            call_id in self.waiting
            and self.capacity_asked
            and rounds < MAX_ROOM_ROUNDS
            and not core.placement.linking_with_room()  # (one is coming: it takes the offer)
        ):
            core.counters["room_waits_extended"] += 1
            core.fx.act(WaitForRoom(call_id, rounds + 1))
            return
        waiting = self.waiting.pop(call_id, None)
        if waiting is not None and not core.place(*waiting, wait=False):
            core.offer_dropped(call_id)
