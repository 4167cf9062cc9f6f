"""``Call``: the object an ``on_call`` handler (or ``dial``) gets, with the full call-control API.

A Call is its core (:class:`~relay_actors.call_base.CallBase`: identity and state,
listeners and waits, event delivery, command plumbing, answer/hangup/pass) plus the
verb families of :mod:`relay_actors.verbs`. It speaks to a :class:`CallControl` — the
in-process connection, or the CallActor's link to the connection actor on Ray — so
the same handler code runs in both.

Conventions, as in the official SDK: keyword arguments default to None and
are sent only when given; ``**kw`` extras merge into the params; a
``control_id`` is generated when omitted; commands return the result dict,
``{}`` when the call is already gone (404/410 is normal telephony, not an
error); any other error raises :class:`~relay_actors.errors.RelayError`.
"""

from __future__ import annotations

# The official SDK's ``signalwire.relay.call`` module also holds the actions and the event
# type: ``from relay_actors.call import PlayAction`` works as it does there.
from .action import (
    Action,
    AIAction,
    CollectAction,
    DetectAction,
    FaxAction,
    PayAction,
    PlayAction,
    RecordAction,
    StandaloneCollectAction,
    StreamAction,
    TapAction,
    TranscribeAction,
)
from .call_base import CallBase, CallControl, _device_lists
from .protocol.events import RelayEvent
from .verbs import (
    AIVerbs,
    BridgingVerbs,
    CollectVerbs,
    DetectVerbs,
    FeatureVerbs,
    PlayVerbs,
    RecordVerbs,
    RoomVerbs,
    ServiceVerbs,
)

__all__ = [
    "AIAction",
    "Action",
    "Call",
    "CallControl",
    "CollectAction",
    "DetectAction",
    "FaxAction",
    "PayAction",
    "PlayAction",
    "RecordAction",
    "RelayEvent",
    "StandaloneCollectAction",
    "StreamAction",
    "TapAction",
    "TranscribeAction",
    "_device_lists",
]


class Call(
    PlayVerbs,
    RecordVerbs,
    CollectVerbs,
    DetectVerbs,
    ServiceVerbs,
    AIVerbs,
    BridgingVerbs,
    RoomVerbs,
    FeatureVerbs,
    CallBase,
):
    """One call leg and everything that can be done with it (see the module docstring)."""

    __slots__ = ()
