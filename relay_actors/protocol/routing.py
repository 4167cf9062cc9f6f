"""Where each RELAY event goes, sans-IO.

:class:`EventRouter` holds the client's correlation tables — calls by
``call_id`` (mapped to whatever owns the call: a Call object in-process, a
CallActor on Ray), pending dials by ``tag`` and outbound messages by
``message_id`` — and answers, for every event, one :class:`Route`. It decides
nothing about admission: an offer comes back as ``Route.OFFER`` and the caller
registers the call (or drops it) with :meth:`EventRouter.add_call`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from . import constants as c
from .dials import DialOutcome, DialTracker
from .events import RelayEvent
from .messages import MessageRecord, MessageTracker

__all__ = ["EventRouter", "Route", "Routed", "is_other_leg"]

T = TypeVar("T")


class Route(str, Enum):
    """The kinds of destination an event can have."""

    AUTH_STATE = "auth_state"  # handled by the session (resume state)
    OFFER = "offer"  # a new inbound call: admit it or drop it
    DIAL_LEG = "dial_leg"  # a new leg of a pending dial: register it, then deliver to it
    CALL = "call"  # deliver to ``target``
    DIAL_DONE = "dial_done"  # a pending dial ended: ``dial`` holds the outcome
    MESSAGE_IN = "message_in"  # an inbound message
    MESSAGE_STATE = "message_state"  # a tracked message moved on (``message``)
    MESSAGE_EARLY = "message_early"  # state for a message whose send result is not in yet (kept)
    CONFERENCE = "conference"  # conference-level event without a call_id
    UNROUTABLE = "unroutable"  # no owner (unknown or ended call, stale dial event): dropped


@dataclass(slots=True)
class Routed(Generic[T]):
    """One routing decision."""

    route: Route
    event: RelayEvent
    target: T | None = None
    call_ended: bool = False
    dial: DialOutcome | None = None
    message: MessageRecord | None = None
    message_done: bool = False


@dataclass
class EventRouter(Generic[T]):
    """Correlation tables and the routing decision for every event (see module docstring)."""

    calls: dict[str, T] = field(default_factory=dict)
    dials: DialTracker = field(default_factory=DialTracker)
    messages: MessageTracker = field(default_factory=MessageTracker)

    def add_call(self, call_id: str, target: T) -> None:
        self.calls[call_id] = target

    def remove_call(self, call_id: str) -> T | None:
        return self.calls.pop(call_id, None)

    def route(self, event: RelayEvent) -> Routed[T]:
        et = event.event_type
        params = event.params
        if et == c.EVENT_CALL_STATE:
            call_id = event.call_id
            if call_id and call_id not in self.calls and self.dials.is_new_leg(params):
                return Routed(Route.DIAL_LEG, event)
            target = self.calls.get(call_id)
            if target is None:
                return Routed(Route.UNROUTABLE, event)
            ended = params.get("call_state") == c.CALL_STATE_ENDED
            if ended:
                del self.calls[call_id]
            return Routed(Route.CALL, event, target, call_ended=ended)
        if et == c.EVENT_CALL_RECEIVE:
            return Routed(Route.OFFER, event)
        if et == c.EVENT_CALL_DIAL:
            outcome = self.dials.on_dial_event(params)
            if outcome is not None:
                return Routed(Route.DIAL_DONE, event, dial=outcome)
            # Progress, or a dial event for no pending tag: goes to the named call if known.
            call = params.get("call")
            cid = call.get("call_id") if isinstance(call, dict) else None
            target = self.calls.get(cid) if isinstance(cid, str) else None
            if target is None:
                return Routed(Route.UNROUTABLE, event)
            return Routed(Route.CALL, event, target)
        if et == c.EVENT_MESSAGING_STATE:
            record, done = self.messages.feed(event)
            if record is None:
                return Routed(Route.MESSAGE_EARLY, event)
            return Routed(Route.MESSAGE_STATE, event, message=record, message_done=done)
        if et == c.EVENT_MESSAGING_RECEIVE:
            return Routed(Route.MESSAGE_IN, event)
        if et == c.EVENT_AUTHORIZATION_STATE:
            return Routed(Route.AUTH_STATE, event)
        target = self.calls.get(event.call_id) if event.call_id else None
        if target is not None:
            return Routed(Route.CALL, event, target)
        if et == c.EVENT_CONFERENCE:
            return Routed(Route.CONFERENCE, event)
        return Routed(Route.UNROUTABLE, event)


def is_other_leg(event: RelayEvent) -> bool:
    """An unroutable event that is no error: the state of an outbound leg this client does
    not control, such as the far leg a ``connect`` (a transfer) rang. The service reports
    those legs on the subscription too; the SDK ignores them, and so does the client, counting
    them apart (``events_other_legs``) so that ``events_unroutable`` keeps meaning "lost"."""
    return event.event_type == c.EVENT_CALL_STATE and event.params.get("direction") == "outbound"

