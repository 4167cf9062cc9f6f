"""The call state machine, sans-IO.

``created → ringing → answered → ending → ended``; any state may jump ahead,
inbound calls may skip ``ringing``; ``ended`` is terminal. States never go
backwards: a state event older than the current state (a redelivery after a
resume, a reordered frame) is ignored, so duplicates are harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from sys import intern
from typing import Any

from . import constants as c
from .actions import ActionRecord, ActionTable
from .events import RelayEvent

__all__ = ["STATE_RANK", "CallCore", "CallUpdate", "next_state"]

STATE_RANK: dict[str, int] = {state: rank for rank, state in enumerate(c.CALL_STATES)}


def next_state(current: str, incoming: str) -> str | None:
    """The state after ``incoming`` arrives in ``current``; None when it is ignored
    (unknown, equal or backwards)."""
    new_rank = STATE_RANK.get(incoming)
    if new_rank is None:
        return None
    if new_rank <= STATE_RANK.get(current, -1):
        return None
    return incoming


@dataclass(slots=True)
class CallUpdate:
    """What one event did to a call."""

    accepted: bool
    state_changed: bool = False
    finished: list[ActionRecord] = field(default_factory=list)


_DROPPED = CallUpdate(False)


@dataclass(slots=True)
class CallCore:
    """One call leg's protocol state: identity, state, end reason, running actions.

    Slots: a server holds thousands of these."""

    call_id: str
    node_id: str = ""
    tag: str = ""
    direction: str = "inbound"
    context: str = ""
    project_id: str = ""
    segment_id: str = ""
    device: dict[str, Any] = field(default_factory=dict)
    state: str = c.CALL_STATE_CREATED
    end_reason: str = ""
    actions: ActionTable = field(default_factory=ActionTable)

    @classmethod
    def from_params(cls, params: dict[str, Any], direction: str = "inbound") -> CallCore:
        """Build from an offer's or a leg state event's params."""
        state = params.get("call_state")
        device = params.get("device")
        # Fields that many calls share (a few nodes, projects, contexts) are interned: one
        # string each, not one per call from its decoded frame.
        return cls(
            call_id=str(params.get("call_id") or ""),
            node_id=intern(str(params.get("node_id") or "")),
            tag=str(params.get("tag") or ""),
            direction=intern(str(params.get("direction") or direction)),
            context=intern(str(params.get("context") or params.get("protocol") or "")),
            project_id=intern(str(params.get("project_id") or "")),
            segment_id=str(params.get("segment_id") or ""),
            device=device if isinstance(device, dict) else {},
            state=state if state in STATE_RANK else c.CALL_STATE_CREATED,
        )

    @property
    def ended(self) -> bool:
        return self.state == c.CALL_STATE_ENDED

    def at_least(self, state: str) -> bool:
        """True when the call has reached ``state`` or gone past it."""
        return STATE_RANK.get(self.state, -1) >= STATE_RANK[state]

    def apply(self, event: RelayEvent) -> CallUpdate:
        """Feed one event for this call."""
        if self.ended:
            return _DROPPED
        if event.event_type == c.EVENT_CALL_STATE:
            new = next_state(self.state, event.params.get("call_state") or "")
            if new is None:
                return CallUpdate(True)
            self.state = new
            if not self.node_id:
                self.node_id = intern(event.node_id)
            if new == c.CALL_STATE_ENDED:
                self.end_reason = str(event.params.get("end_reason") or "")
                return CallUpdate(True, True, self.actions.finish_all(event))
            return CallUpdate(True, True)
        record = self.actions.feed(event) if event.control_id else None
        return CallUpdate(True, False, [record] if record is not None else [])
