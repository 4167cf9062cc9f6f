"""Which RELAY events a CallActor has already applied: drop the redelivered ones.

What can reach a CallActor twice, and why a small window per shard is enough:

* A WebSocket drop or a server ``signalwire.disconnect``: the connection actor's
  process lives on, and its RELAY session (one per connection, kept across the
  reconnect) drops what the server redelivers by its own window of recent ids
  (``ClientSession.recent_events``) before it reaches a link. So does a server that
  sends an event twice.
* A link that breaks and reconnects: frames are resent and dropped by sequence
  number (:mod:`relay_actors.ray_runtime.link_protocol`); items are never
  applied twice through one link.
* A restart of a connection actor (``kill -9``): the new process has a fresh session,
  and the server redelivers every event it had not seen acknowledged. The connection
  actor acknowledges an event to RELAY as soon as the CallActor has acknowledged the
  frame that carried it, so what the CallActor applied and may see again is what it
  applied last from *that* shard, within about one ack's round trip (plus what the
  dead process had not written yet) — never older events, whose acks the server had.
  The redelivered events come, in their first order, through the restarted shard
  only, before anything new from it (the emulator and RELAY resend in order right
  after the resume).

So the window is per shard (another shard's traffic during the outage cannot push
the restarted shard's ids out) and holds that shard's last :data:`WINDOW` ids: the
same bound the RELAY session uses for the same question (events redelivered that
were already handed on), thousands of events of one shard's traffic, far above what
is ever in flight between an apply and the server's receipt of its ack. Being
ordered, the redelivery checks each id before it could be evicted by the new ones.

Its memory is fixed (≈ 0.6 MiB per shard when full) rather than per call: the
previous 100,000-id window cost ~17 MiB per CallActor and ~1 KiB per call until full.
"""

from __future__ import annotations

from ..protocol.recent_ids import RecentIds

__all__ = ["WINDOW", "EventDedupe"]

#: Event ids remembered per shard (see the module's docstring for why this is enough).
WINDOW = 4096


class EventDedupe:
    """Redelivered events of each connection shard, recognised by event id.

    Args:
        window: ids remembered per shard (:data:`WINDOW` unless a test says otherwise).
    """

    __slots__ = ("_shards", "window")

    def __init__(self, window: int = WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.window = window
        self._shards: dict[int, RecentIds] = {}

    def seen_before(self, shard: int, event_id: str | None) -> bool:
        """True if ``event_id`` already came from ``shard`` (a redelivery: drop it);
        otherwise remember it. An event without an id is never a duplicate. (The caller
        counts what it drops: ``CallActorCore.counters["duplicate_events"]``.)"""
        if not event_id:
            return False
        window = self._shards.get(shard)
        if window is None:
            window = self._shards[shard] = RecentIds(self.window)
        return window.seen_before(event_id)

    def __len__(self) -> int:
        """Ids remembered, over all shards."""
        return sum(len(w) for w in self._shards.values())
