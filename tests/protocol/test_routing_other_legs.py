"""Which unroutable events are no error: the states of outbound legs the client does not control."""

from __future__ import annotations

from relay_actors.protocol import constants as c
from relay_actors.protocol.events import RelayEvent
from relay_actors.protocol.routing import EventRouter, Route, is_other_leg


def state(direction: str, call_id: str = "far-leg") -> RelayEvent:
    return RelayEvent(
        c.EVENT_CALL_STATE, {"call_id": call_id, "call_state": "ringing", "direction": direction}, call_id
    )


def test_an_unknown_outbound_legs_state_is_an_other_leg() -> None:
    routed = EventRouter[str]().route(state("outbound"))
    assert routed.route is Route.UNROUTABLE and is_other_leg(routed.event)


def test_an_unknown_inbound_call_or_another_event_is_unroutable() -> None:
    assert not is_other_leg(state("inbound"))
    assert not is_other_leg(RelayEvent(c.EVENT_CALL_PLAY, {"call_id": "x", "direction": "outbound"}, "x"))
