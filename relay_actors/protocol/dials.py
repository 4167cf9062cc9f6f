"""Outbound dial correlation by ``tag``, sans-IO.

``calling.dial``'s result carries no ``call_id``: the legs announce themselves
through ``calling.call.state`` events carrying the dial's ``tag``, and the
final ``calling.call.dial`` event names the winner in ``params.call``. A dial
is registered under its tag *before* the request goes out, and stays pending
across a reconnect (the official SDK fails it and orphans the call leg).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import constants as c

__all__ = ["DialOutcome", "DialTracker", "PendingDial"]


@dataclass(slots=True)
class PendingDial:
    """A dial waiting for its final ``calling.call.dial`` event."""

    tag: str
    #: call_id → params of the first state event of each leg seen so far.
    legs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DialOutcome:
    """How a dial ended: ``answered`` with the winner's ``call`` object, or ``failed``."""

    tag: str
    answered: bool
    call: dict[str, Any]
    losers: tuple[str, ...] = ()


@dataclass
class DialTracker:
    """Pending dials by tag."""

    pending: dict[str, PendingDial] = field(default_factory=dict)

    def start(self, tag: str) -> PendingDial:
        """Register a dial before sending ``calling.dial``."""
        dial = PendingDial(tag)
        self.pending[tag] = dial
        return dial

    def cancel(self, tag: str) -> PendingDial | None:
        """Forget a dial (timed out, cancelled, or its request failed)."""
        return self.pending.pop(tag, None)

    def is_new_leg(self, params: dict[str, Any]) -> bool:
        """For a ``calling.call.state`` event: True when it announces a new leg of a
        pending dial (the caller registers the leg, then routes the event to it)."""
        tag = params.get("tag")
        if not tag or not isinstance(tag, str):
            return False
        dial = self.pending.get(tag)
        if dial is None:
            return False
        call_id = params.get("call_id")
        if not isinstance(call_id, str) or not call_id or call_id in dial.legs:
            return False
        dial.legs[call_id] = params
        return True

    def on_dial_event(self, params: dict[str, Any]) -> DialOutcome | None:
        """For a ``calling.call.dial`` event: the outcome if it ends a pending dial,
        else None (progress, or no such pending tag)."""
        tag = params.get("tag")
        if not isinstance(tag, str) or tag not in self.pending:
            return None
        state = params.get("dial_state")
        call = params.get("call")
        call = call if isinstance(call, dict) else {}
        if state == c.DIAL_STATE_ANSWERED and call.get("call_id"):
            dial = self.pending.pop(tag)
            winner = call["call_id"]
            return DialOutcome(tag, True, call, tuple(cid for cid in dial.legs if cid != winner))
        if state == c.DIAL_STATE_FAILED:
            dial = self.pending.pop(tag)
            return DialOutcome(tag, False, {}, tuple(dial.legs))
        return None
