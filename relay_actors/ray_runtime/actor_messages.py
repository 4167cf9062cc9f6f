"""What actors say to each other on the link: one slotted dataclass per item kind (frozen for
the type checker: see :func:`_item`), and the codec that alone turns them into (and from)
the JSON arrays on the wire.

Items travel as orjson in the DATA frames of :mod:`relay_actors.ray_runtime.link_protocol`
(nothing executable crosses a socket): :func:`encode` makes a JSON array tagged by its
first element, :func:`decode` checks one and builds the item, raising
:class:`MalformedItem` for anything else (a peer's bug or a hostile peer costs that item,
never the process). Consumers read attributes and ``match`` on the type; nothing else
indexes a wire array.

Connection actor → CallActor (:data:`ToCallActor`, applied by the CallActor's
:class:`~relay_actors.ray_runtime.call_actor_core.CallActorCore`):

* :class:`OfferItem` ``[OFFER, call_id, params, event_id(, trace)]`` — a new inbound call placed here
* :class:`EventItem` ``[EVENT, call_id, event_type, params, timestamp, event_id]`` — an event of
  one of its calls
* :class:`LegItem` ``[LEG, tag, params]`` — a new leg of a dial this actor made (events follow)
* :class:`DialItem` ``[DIAL, tag, answered, call_info]`` — the outcome of a dial this actor made
* :class:`ResultItem` ``[RESULT, req_id, true, result]`` / :class:`FailureItem`
  ``[RESULT, req_id, false, [code, message, data]]`` — a request's outcome
* :class:`MsgInItem` ``[MSG_IN, params]`` — an inbound message for ``on_message``
* :class:`MsgStateItem` ``[MSG_STATE, event_type, params, timestamp]`` — a state event of a
  message this actor sent
* :class:`LostItem` ``[LOST, call_id, reason]`` — the call is not this actor's any more
  (session or actor lost)
* :class:`AdoptItem` ``[ADOPT, call_id, params]`` — a call re-homed here from a lost
  CallActor (events follow)
* :class:`ResumedItem` ``[RESUMED]`` — the RELAY session is (re)connected and every event the
  server had for it then precedes this item: commands left in doubt by a restart are
  resolved now (:mod:`relay_actors.ray_runtime.commands_in_doubt`)

CallActor → connection actor (:data:`ToShard`, applied by
:meth:`ShardCore.on_link_items <relay_actors.ray_runtime.shard_core.ShardCore.on_link_items>`):

* :class:`RequestItem` ``[REQUEST, req_id, method, params]`` — a request; its result comes back
  the same way
* :class:`RefusedItem` ``[REFUSED, [offer, ...]]`` — offers this actor is too full to take
  (placed elsewhere)
* :class:`DialAbandonedItem` ``[DIAL_ABANDONED, tag]`` — nobody takes this dial: forget it,
  hang up its late legs

A connection actor that restarted is recognised by the link's handshake (a new
incarnation): the CallActor then fails the requests it had in flight to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..errors import RelayError

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:
    try:
        from typing import dataclass_transform
    except ImportError:  # Python 3.10: only the type checker reads the marker

        def dataclass_transform(**_options: Any) -> Any:
            return lambda decorator: decorator


__all__ = [
    "NAMESPACE",
    "STREAM_LOST",
    "WIRE_KINDS",
    "AdoptItem",
    "DialAbandonedItem",
    "DialItem",
    "EventItem",
    "FailureItem",
    "Item",
    "LegItem",
    "LostItem",
    "MalformedItem",
    "MsgInItem",
    "MsgStateItem",
    "OfferItem",
    "RefusedItem",
    "RequestItem",
    "ResultItem",
    "ResumedItem",
    "ToCallActor",
    "ToShard",
    "actor_name",
    "decode",
    "decode_to_call_actor",
    "encode",
]

#: Ray namespace of every relay-actors actor (names carry the app).
NAMESPACE: Final = "relay_actors"

#: The item of a call's event stream (CallActor → driver, ``call_events``) that says the
#: runtime lost the call.
STREAM_LOST: Final = "relay_actors.lost"

# The wire tags (the first element of each array).
OFFER: Final = "offer"
EVENT: Final = "event"
LEG: Final = "leg"
DIAL: Final = "dial"
RESULT: Final = "result"
MSG_IN: Final = "msg_in"
MSG_STATE: Final = "msg_state"
LOST: Final = "lost"
ADOPT: Final = "adopt"
RESUMED: Final = "resumed"
REQUEST: Final = "req"
REFUSED: Final = "refused"
DIAL_ABANDONED: Final = "dial_abandoned"


def actor_name(app: str, role: str, index: int | None = None) -> str:
    """Names of the app's actors: ``relay:<app>:router``, ``relay:<app>:connection:0``, ..."""
    return f"relay:{app}:{role}" if index is None else f"relay:{app}:{role}:{index}"


_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def _item(cls: type[_T]) -> type[_T]:
    """An item kind: a slotted dataclass, frozen for the type checker (assigning a field
    is a mypy error). At run time it is not ``frozen=True``: a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``, which made building an
    item 4-5 times dearer, and every event and command builds one at each end."""
    return dataclass(slots=True)(cls)


class MalformedItem(RelayError):
    """A link item that is not one of the kinds below, or whose fields have the wrong
    shape: the item is dropped (and counted), the link and the other items go on."""

    def __init__(self, message: str) -> None:
        super().__init__("malformed_item", message)


# --- connection actor → CallActor ------------------------------------------------------------


@_item
class OfferItem:
    """A new inbound call placed on this CallActor (``calling.call.receive`` params)."""

    call_id: str
    params: dict[str, Any]
    #: The RELAY event's ack id: the CallActor drops a redelivered duplicate by it.
    event_id: str | None
    #: The trace context (:func:`relay_actors.tracing.placed`); None: tracing is off.
    trace: list[Any] | None = None


@_item
class EventItem:
    """A RELAY event of one of the CallActor's calls."""

    call_id: str
    event_type: str
    params: dict[str, Any]
    timestamp: float
    #: The RELAY event's ack id (duplicates dropped by it); None: nothing to dedupe.
    event_id: str | None


@_item
class LegItem:
    """A new leg of dial ``tag`` (its first state event's params); its events follow."""

    tag: str
    params: dict[str, Any]


@_item
class DialItem:
    """The outcome of dial ``tag``: ``answered`` with the winner's ``call`` object, or failed."""

    tag: str
    answered: bool
    call: dict[str, Any]


@_item
class ResultItem:
    """Request ``req_id`` succeeded with ``result``."""

    req_id: str
    result: dict[str, Any]


@_item
class FailureItem:
    """Request ``req_id`` failed: the :class:`~relay_actors.errors.RelayError` to raise."""

    req_id: str
    code: int | str
    message: str
    data: Any = None

    def error(self) -> RelayError:
        return RelayError(self.code, self.message, self.data)


@_item
class MsgInItem:
    """An inbound message (``messaging.receive`` params) for ``on_message``."""

    params: dict[str, Any]


@_item
class MsgStateItem:
    """A state event of a message this CallActor sent."""

    event_type: str
    params: dict[str, Any]
    timestamp: float


@_item
class LostItem:
    """Call ``call_id`` is not this CallActor's any more (``session_lost``, ``call_actor_lost``)."""

    call_id: str
    reason: str


@_item
class AdoptItem:
    """A call re-homed here from a lost CallActor (its events follow)."""

    call_id: str
    params: dict[str, Any]


@_item
class ResumedItem:
    """The shard's session is resumed, and what it redelivered precedes this item."""


# --- CallActor → connection actor ------------------------------------------------------------


@_item
class RequestItem:
    """A RELAY request of a CallActor; its outcome comes back as a Result/FailureItem."""

    req_id: str
    method: str
    params: dict[str, Any]


@_item
class RefusedItem:
    """Offers the CallActor was too full to take: the shard places them elsewhere."""

    offers: tuple[OfferItem, ...]


@_item
class DialAbandonedItem:
    """Nobody takes dial ``tag`` any more: forget it, hang up its late legs."""

    tag: str


ToCallActor = (
    OfferItem
    | EventItem
    | LegItem
    | DialItem
    | ResultItem
    | FailureItem
    | MsgInItem
    | MsgStateItem
    | LostItem
    | AdoptItem
    | ResumedItem
)
ToShard = RequestItem | RefusedItem | DialAbandonedItem
Item = ToCallActor | ToShard

_TO_CALL_ACTOR = (
    OfferItem,
    EventItem,
    LegItem,
    DialItem,
    ResultItem,
    FailureItem,
    MsgInItem,
    MsgStateItem,
    LostItem,
    AdoptItem,
    ResumedItem,
)

#: The one ResumedItem (it has no fields).
RESUMED_ITEM: Final = ResumedItem()


# --- the codec ---------------------------------------------------------------------------------


def _offer_wire(i: OfferItem) -> list[Any]:
    if i.trace is None:
        return [OFFER, i.call_id, i.params, i.event_id]
    return [OFFER, i.call_id, i.params, i.event_id, i.trace]


_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {
    OfferItem: _offer_wire,
    EventItem: lambda i: [EVENT, i.call_id, i.event_type, i.params, i.timestamp, i.event_id],
    LegItem: lambda i: [LEG, i.tag, i.params],
    DialItem: lambda i: [DIAL, i.tag, i.answered, i.call],
    ResultItem: lambda i: [RESULT, i.req_id, True, i.result],
    FailureItem: lambda i: [RESULT, i.req_id, False, [i.code, i.message, i.data]],
    MsgInItem: lambda i: [MSG_IN, i.params],
    MsgStateItem: lambda i: [MSG_STATE, i.event_type, i.params, i.timestamp],
    LostItem: lambda i: [LOST, i.call_id, i.reason],
    AdoptItem: lambda i: [ADOPT, i.call_id, i.params],
    ResumedItem: lambda i: [RESUMED],
    RequestItem: lambda i: [REQUEST, i.req_id, i.method, i.params],
    RefusedItem: lambda i: [REFUSED, [_offer_wire(o) for o in i.offers]],
    DialAbandonedItem: lambda i: [DIAL_ABANDONED, i.tag],
}


def encode(item: Item) -> list[Any]:
    """The wire array of ``item`` (JSON values only)."""
    return _ENCODERS[type(item)](item)


def _bad(wire: Any, why: str) -> MalformedItem:
    kind = wire[0] if isinstance(wire, list) and wire and isinstance(wire[0], str) else None
    return MalformedItem(f"a link item{f' {kind!r}' if kind else ''} {why}")


def _str(value: Any) -> bool:
    return type(value) is str


def _number(value: Any) -> bool:
    return type(value) in (int, float)


def _dict(value: Any) -> bool:
    return type(value) is dict


def _offer(w: list[Any]) -> OfferItem:
    n = len(w)
    if (
        (n == 4 or (n == 5 and type(w[4]) is list))
        and type(w[1]) is str
        and type(w[2]) is dict
        and (w[3] is None or type(w[3]) is str)
    ):
        return OfferItem(w[1], w[2], w[3], w[4] if n == 5 else None)
    raise _bad(w, "needs [call_id, params, event_id(, trace)]")


def _event(w: list[Any]) -> EventItem:
    # The hot path (every call event): inline checks, no helper calls.
    if (
        len(w) == 6
        and type(w[1]) is str
        and type(w[2]) is str
        and type(w[3]) is dict
        and ((t := type(w[4])) is float or t is int)
        and (w[5] is None or type(w[5]) is str)
    ):
        return EventItem(w[1], w[2], w[3], w[4], w[5])
    raise _bad(w, "needs [call_id, event_type, params, timestamp, event_id]")


def _leg(w: list[Any]) -> LegItem:
    if len(w) == 3 and _str(w[1]) and _dict(w[2]):
        return LegItem(w[1], w[2])
    raise _bad(w, "needs [tag, params]")


def _dial(w: list[Any]) -> DialItem:
    if len(w) == 4 and _str(w[1]) and type(w[2]) is bool and _dict(w[3]):
        return DialItem(w[1], w[2], w[3])
    raise _bad(w, "needs [tag, answered, call]")


def _result(w: list[Any]) -> ResultItem | FailureItem:
    if len(w) == 4 and type(w[1]) is str:
        if w[2] is True and type(w[3]) is dict:
            return ResultItem(w[1], w[3])
        if w[2] is False and type(w[3]) is list and len(w[3]) == 3:
            code, message, data = w[3]
            if type(code) in (int, str) and type(message) is str:
                return FailureItem(w[1], code, message, data)
    raise _bad(w, "needs [req_id, true, result] or [req_id, false, [code, message, data]]")


def _msg_in(w: list[Any]) -> MsgInItem:
    if len(w) == 2 and _dict(w[1]):
        return MsgInItem(w[1])
    raise _bad(w, "needs [params]")


def _msg_state(w: list[Any]) -> MsgStateItem:
    if len(w) == 4 and _str(w[1]) and _dict(w[2]) and _number(w[3]):
        return MsgStateItem(w[1], w[2], w[3])
    raise _bad(w, "needs [event_type, params, timestamp]")


def _lost(w: list[Any]) -> LostItem:
    if len(w) == 3 and _str(w[1]) and _str(w[2]):
        return LostItem(w[1], w[2])
    raise _bad(w, "needs [call_id, reason]")


def _adopt(w: list[Any]) -> AdoptItem:
    if len(w) == 3 and _str(w[1]) and _dict(w[2]):
        return AdoptItem(w[1], w[2])
    raise _bad(w, "needs [call_id, params]")


def _resumed(w: list[Any]) -> ResumedItem:
    if len(w) == 1:
        return RESUMED_ITEM
    raise _bad(w, "has no fields")


def _request(w: list[Any]) -> RequestItem:
    if len(w) == 4 and type(w[1]) is str and type(w[2]) is str and type(w[3]) is dict:
        return RequestItem(w[1], w[2], w[3])
    raise _bad(w, "needs [req_id, method, params]")


def _refused(w: list[Any]) -> RefusedItem:
    if len(w) == 2 and type(w[1]) is list:
        offers = []
        for offer in w[1]:
            if type(offer) is not list or not offer or offer[0] != OFFER:
                raise _bad(w, "lists something other than offers")
            offers.append(_offer(offer))
        return RefusedItem(tuple(offers))
    raise _bad(w, "needs [[offer, ...]]")


def _dial_abandoned(w: list[Any]) -> DialAbandonedItem:
    if len(w) == 2 and _str(w[1]):
        return DialAbandonedItem(w[1])
    raise _bad(w, "needs [tag]")


_DECODERS: dict[str, Callable[[list[Any]], Item]] = {
    OFFER: _offer,
    EVENT: _event,
    LEG: _leg,
    DIAL: _dial,
    RESULT: _result,
    MSG_IN: _msg_in,
    MSG_STATE: _msg_state,
    LOST: _lost,
    ADOPT: _adopt,
    RESUMED: _resumed,
    REQUEST: _request,
    REFUSED: _refused,
    DIAL_ABANDONED: _dial_abandoned,
}

#: Every wire tag (the first element of an item's array).
WIRE_KINDS: Final = frozenset(_DECODERS)


def decode(wire: Any) -> Item:
    """The item of a wire array; :class:`MalformedItem` if it is not one (never another
    exception, whatever JSON value ``wire`` is)."""
    if type(wire) is not list or not wire:
        raise MalformedItem(f"a link item must be a non-empty JSON array, not {type(wire).__name__}")
    decoder = _DECODERS.get(wire[0]) if type(wire[0]) is str else None
    if decoder is None:
        raise MalformedItem(f"unknown link item kind {str(wire[0])[:40]!r}")
    return decoder(wire)


def decode_to_call_actor(wire: Any) -> ToCallActor:
    """:func:`decode` for what only a shard sends (a CallActor's link hands it back after a reset)."""
    item = decode(wire)
    if not isinstance(item, _TO_CALL_ACTOR):
        raise MalformedItem(f"a {type(item).__name__} does not go to a CallActor")
    return item
