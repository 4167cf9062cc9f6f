"""A shard core's view of the CallActor pool: the router's snapshots, retirement, drain.

The router pushes one versioned :class:`~relay_actors.ray_runtime.pool_core.PoolSnapshot`
on every change (and a starting shard pulls it); a shard applies it only if newer than
the one it has, so a late, repeated or reordered one changes nothing. A CallActor leaves
a shard only by :meth:`ShardPool.retire`, which the router asks of every shard before it
stops one (an older generation, drained), and which refuses while the shard still has
anything with it. Owned by :class:`~relay_actors.ray_runtime.shard_core.ShardCore`
(``core.pool``), sans-IO like it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from ..protocol.routing import EventRouter
from .placement import Placement
from .pool_core import PoolSnapshot
from .shard_actions import Command, CommandPurpose, ShardEffects

if TYPE_CHECKING:
    from .shard_recovery import ShardRecovery
    from .shard_room import ShardRoomWait

__all__ = ["PoolUser", "ShardPool"]

log = logging.getLogger("relay_actors.ray_runtime.connection_actor")


class PoolUser(Protocol):
    """What :class:`ShardPool` reads of its shard core (and the drain deadline's hang-ups)."""

    shard: int
    fx: ShardEffects
    counters: Counter[str]
    routes: EventRouter[int]
    placement: Placement
    dial_owner: dict[str, int]
    msg_owner: dict[str, int]
    node_of: dict[str, str]
    recovery: ShardRecovery
    room: ShardRoomWait


class ShardPool:
    """The pool as one shard knows it (see module docstring)."""

    def __init__(self, core: PoolUser) -> None:
        self.core = core
        #: The newest pool snapshot applied (None: none yet).
        self.snapshot: PoolSnapshot | None = None
        #: CallActors the router retired after an upgrade (never linked to again).
        self.retired: set[int] = set()

    def add_call_actors(self, pool: Iterable[tuple[int, int]], generations: dict[int, int]) -> list[int]:
        """The pool as the router has it (``(index, capacity)`` pairs and each one's code
        generation): know the new CallActors; returns every CallActor to link to."""
        placement = self.core.placement
        for idx, capacity in pool:
            if idx not in self.retired and placement.add(idx, capacity, generations.get(idx, 0)):
                # Until its link is up (:meth:`ShardCore.call_actor_linked`), a call placed on
                # a new CallActor would wait for its process to start (~1 s).
                placement.set_unavailable(idx, "linking")
        for idx, generation in generations.items():
            placement.set_generation(idx, generation)
        self.core.room.place_waiting()  # (a CallActor added for them)
        return list(placement.capacity)

    def apply(self, snapshot: PoolSnapshot) -> list[int] | None:
        """A pool snapshot (pushed by the router, or asked for at start-up): applied only
        if newer than the one this shard has (otherwise nothing changes: None). Returns
        every CallActor to link to."""
        if not snapshot.newer_than(self.snapshot):
            self.core.counters["pool_snapshots_ignored"] += 1
            return None
        self.snapshot = snapshot
        return self.add_call_actors(
            ((idx, snapshot.capacity) for idx, _gen in snapshot.actors), dict(snapshot.actors)
        )

    def linking(self) -> list[int]:
        """The CallActors this shard knows whose link has never been up yet."""
        return [idx for idx, reasons in self.core.placement.unavailable.items() if "linking" in reasons]

    def knows(self, idx: int) -> bool:
        return idx in self.core.placement.capacity

    def busy_with(self, idx: int, unacknowledged: int) -> int:
        """What this shard still has with CallActor ``idx`` (0: it may be retired): calls,
        dials, messages awaiting states, ``unacknowledged`` link items, and 1 if it was not
        asked yet since a restart (it may hold anything)."""
        core = self.core
        calls = sum(1 for owner in core.routes.calls.values() if owner == idx)
        dials = sum(1 for owner in core.dial_owner.values() if owner == idx)
        messages = sum(1 for owner in core.msg_owner.values() if owner == idx)
        return calls + dials + messages + unacknowledged + int(core.recovery.is_unknown(idx))

    def retire(self, idx: int, unacknowledged: int) -> bool:
        """The router retires CallActor ``idx``: never place on it again. False (nothing
        done) if this shard still has something with it."""
        if self.busy_with(idx, unacknowledged):
            return False
        self.retired.add(idx)
        self.core.placement.forget(idx)
        self.core.recovery.forget(idx)
        return True

    def end_calls_on(self, idx: int) -> int:
        """CallActor ``idx``'s drain deadline passed: hang up its calls (their ``ended``
        events reach it as for any call) and stop tracking its messages. Returns how many."""
        core = self.core
        call_ids = [cid for cid, owner in core.routes.calls.items() if owner == idx]
        for cid in call_ids:
            params = {"call_id": cid, "node_id": core.node_of.get(cid, ""), "reason": "hangup"}
            core.fx.act(Command(CommandPurpose.END_DRAINED, "calling.end", params, cid))
        core.counters["calls_hung_up_drain_timeout"] += len(call_ids)
        waiting = [mid for mid, owner in core.msg_owner.items() if owner == idx]
        for mid in waiting:
            del core.msg_owner[mid]
        if waiting:
            core.counters["messages_untracked_drain_timeout"] += len(waiting)
            log.warning(
                "shard %d: %d messages of CallActor %d had no final state at its drain deadline; "
                "their later states are dropped",
                core.shard,
                len(waiting),
                idx,
            )
        return len(call_ids)
