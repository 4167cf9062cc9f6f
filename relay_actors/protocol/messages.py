"""Outbound message tracking by ``message_id``, sans-IO, without the SDK's race.

``messaging.send`` returns the ``message_id``; ``messaging.state`` events then
report progress. The service may emit the first state events before the send
result reaches us. The official SDK registers the message only when the result
arrives and drops those early events, so a fast ``delivered`` is lost and
``wait()`` hangs. Here a state event for an unknown id is kept (bounded, oldest
first out) and applied when the send result registers the id.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from . import constants as c
from .events import RelayEvent

__all__ = ["MessageRecord", "MessageTracker"]


@dataclass(slots=True)
class MessageRecord:
    """An outbound message's delivery state."""

    message_id: str
    state: str = c.MESSAGE_STATE_QUEUED
    reason: str = ""
    done: bool = False
    result: RelayEvent | None = None

    def apply(self, event: RelayEvent) -> bool:
        """Apply one state event; True when it is the first terminal one."""
        if self.done:
            return False
        state = event.params.get("message_state")
        if isinstance(state, str) and state:
            self.state = state
        reason = event.params.get("reason")
        if isinstance(reason, str) and reason:
            self.reason = reason
        if self.state in c.MESSAGE_TERMINAL_STATES:
            self.done = True
            self.result = event
            return True
        return False


@dataclass
class MessageTracker:
    """Tracked outbound messages, plus early state events waiting for their send result."""

    max_early: int = 10_000
    tracked: dict[str, MessageRecord] = field(default_factory=dict)
    early: OrderedDict[str, list[RelayEvent]] = field(default_factory=OrderedDict)
    dropped_early: int = 0

    def sent(self, message_id: str) -> tuple[MessageRecord, list[RelayEvent]]:
        """The send result named ``message_id``: start tracking it. Returns the record
        and the early events already applied to it (in arrival order)."""
        record = MessageRecord(message_id)
        applied = self.early.pop(message_id, [])
        for event in applied:
            record.apply(event)
        if not record.done:
            self.tracked[message_id] = record
        return record, applied

    def feed(self, event: RelayEvent) -> tuple[MessageRecord | None, bool]:
        """Apply a ``messaging.state`` event. Returns (record, finished_now); the record is
        None when the id is not tracked yet (the event is kept for :meth:`sent`)."""
        message_id = event.params.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            return None, False
        record = self.tracked.get(message_id)
        if record is None:
            self.early.setdefault(message_id, []).append(event)
            if len(self.early) > self.max_early:
                self.early.popitem(last=False)
                self.dropped_early += 1
            return None, False
        finished = record.apply(event)
        if finished:
            del self.tracked[message_id]
        return record, finished

    def forget(self, message_id: str) -> None:
        self.tracked.pop(message_id, None)
        self.early.pop(message_id, None)
