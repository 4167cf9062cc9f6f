"""Typed RELAY events.

:func:`parse_event` turns the outer params of a ``signalwire.event`` into a
:class:`RelayEvent` subclass chosen by ``event_type``. Construction only picks
the class; named fields are read lazily from ``params``, so parsing costs next
to nothing on the hot path. Events are plain picklable objects: they cross Ray
process boundaries unchanged.

Every class has the fields of the official SDK's class of the same name (same
names, same sources in ``params``, same defaults), as read-only properties.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, overload

from . import constants as c

__all__ = [
    "EVENT_CLASS_MAP",
    "AIEvent",
    "AuthorizationStateEvent",
    "CallReceiveEvent",
    "CallStateEvent",
    "CallingErrorEvent",
    "CollectEvent",
    "ConferenceEvent",
    "ConnectEvent",
    "DenoiseEvent",
    "DetectEvent",
    "DialEvent",
    "EchoEvent",
    "FaxEvent",
    "HoldEvent",
    "MessageReceiveEvent",
    "MessageStateEvent",
    "PayEvent",
    "PlayEvent",
    "QueueEvent",
    "RecordEvent",
    "ReferEvent",
    "RelayEvent",
    "SendDigitsEvent",
    "StreamEvent",
    "TapEvent",
    "TranscribeEvent",
    "drop_mistyped_fields",
    "parse_event",
]


_E = TypeVar("_E", bound="RelayEvent")


class RelayEvent:
    """One RELAY event: ``event_type``, its inner ``params``, ``call_id`` and ``timestamp``.

    An empty event (``event_type == ""``, ``params == {}``) is what an action
    resolves with when its call is gone, as in the official SDK.
    """

    __slots__ = ("call_id", "event_type", "params", "timestamp")

    def __init__(
        self, event_type: str, params: dict[str, Any], call_id: str = "", timestamp: float = 0.0
    ) -> None:
        self.event_type = event_type
        self.params = params
        self.call_id = call_id
        self.timestamp = timestamp

    # Fields most event types share.
    @property
    def node_id(self) -> str:
        return self.params.get("node_id") or ""

    @property
    def control_id(self) -> str:
        return self.params.get("control_id") or ""

    @property
    def state(self) -> str:
        """The ``state`` field (actions); ``""`` when absent."""
        value = self.params.get("state")
        return value if isinstance(value, str) else ""

    @property
    def tag(self) -> str:
        return self.params.get("tag") or ""

    @classmethod
    def from_payload(cls: type[_E], payload: Mapping[str, Any]) -> _E:
        """This class built from the outer params of a ``signalwire.event``
        (``{"event_type": ..., "params": {...}}``), as in the official SDK."""
        event_type, params, timestamp = _unpack(payload)
        return _build(cls, event_type, params, timestamp)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.event_type!r}, call_id={self.call_id!r}, params={self.params!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RelayEvent):
            return NotImplemented
        return (
            self.event_type == other.event_type
            and self.params == other.params
            and self.call_id == other.call_id
            and self.timestamp == other.timestamp
        )

    __hash__ = None  # type: ignore[assignment]  # mutable params

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.event_type, self.params, self.call_id, self.timestamp))


def _str(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    return value if isinstance(value, str) else ""


def _dict(params: dict[str, Any], key: str) -> dict[str, Any]:
    value = params.get(key)
    return value if isinstance(value, dict) else {}


def _list(params: dict[str, Any], key: str) -> list[Any]:
    value = params.get(key)
    return value if isinstance(value, list) else []


def _number(params: dict[str, Any], key: str) -> Any:
    value = params.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


class CallStateEvent(RelayEvent):
    """``calling.call.state``: the call's state changed (``call_state``, ``end_reason``, ``peer``)."""
    __slots__ = ()

    @property
    def call_state(self) -> str:
        return self.params.get("call_state") or ""

    @property
    def end_reason(self) -> str:
        return self.params.get("end_reason") or ""

    @property
    def direction(self) -> str:
        return self.params.get("direction") or ""

    @property
    def device(self) -> dict[str, Any]:
        return self.params.get("device") or {}

    @property
    def peer(self) -> dict[str, Any]:
        return self.params.get("peer") or {}


class CallReceiveEvent(CallStateEvent):
    """``calling.call.receive``: an inbound call offered to the client."""
    __slots__ = ()

    @property
    def context(self) -> str:
        # Older frames carried the context as ``protocol``.
        return self.params.get("context") or self.params.get("protocol") or ""

    @property
    def project_id(self) -> str:
        return self.params.get("project_id") or ""

    @property
    def segment_id(self) -> str:
        return self.params.get("segment_id") or ""


class PlayEvent(RelayEvent):
    """``calling.call.play``: a play's state (``playing``, ``paused``, ``finished``, ``error``)."""
    __slots__ = ()


class RecordEvent(RelayEvent):
    """``url``/``duration``/``size`` come inside ``record`` or at top level; ``record`` wins."""

    __slots__ = ()

    @property
    def record(self) -> dict[str, Any]:
        return _dict(self.params, "record")

    def _field(self, name: str) -> Any:
        record = self.params.get("record")
        if isinstance(record, dict) and name in record:
            return record[name]
        return self.params.get(name)

    @property
    def url(self) -> str:
        return self._field("url") or ""

    @property
    def duration(self) -> float:
        return self._field("duration") or 0

    @property
    def size(self) -> int:
        return self._field("size") or 0


class CollectEvent(RelayEvent):
    """``calling.call.collect``: a collect's ``result`` (digits, speech, no_input, no_match, ...)."""
    __slots__ = ()

    @property
    def result(self) -> dict[str, Any]:
        value = self.params.get("result")
        return value if isinstance(value, dict) else {}

    @property
    def final(self) -> bool | None:
        """``False`` for a partial result; ``None`` when the server did not say."""
        value = self.params.get("final")
        return value if isinstance(value, bool) else None


class ConnectEvent(RelayEvent):
    """``calling.call.connect``: a bridge's state and its ``peer``."""
    __slots__ = ()

    @property
    def connect_state(self) -> str:
        return self.params.get("connect_state") or ""

    @property
    def peer(self) -> dict[str, Any]:
        return self.params.get("peer") or {}


class DetectEvent(RelayEvent):
    """``calling.call.detect``: what a detect found (machine, human, fax tone, digit)."""
    __slots__ = ()

    @property
    def detect(self) -> dict[str, Any]:
        value = self.params.get("detect")
        return value if isinstance(value, dict) else {}

    @property
    def detect_event(self) -> str:
        """The phase in ``detect.params.event``: ``HUMAN``, ``MACHINE``, ``READY``, ``CED``, a digit, ..."""
        params = self.detect.get("params")
        value = params.get("event") if isinstance(params, dict) else None
        return value if isinstance(value, str) else ""


class FaxEvent(RelayEvent):
    """``calling.call.fax``: a fax's progress and result."""
    __slots__ = ()

    @property
    def fax(self) -> dict[str, Any]:
        value = self.params.get("fax")
        return value if isinstance(value, dict) else {}

    @property
    def fax_type(self) -> str:
        value = self.fax.get("type")
        return value if isinstance(value, str) else ""


class TapEvent(RelayEvent):
    """``calling.call.tap``: a tap's state."""
    __slots__ = ()

    @property
    def tap(self) -> dict[str, Any]:
        return _dict(self.params, "tap")

    @property
    def device(self) -> dict[str, Any]:
        return _dict(self.params, "device")


class StreamEvent(RelayEvent):
    """``calling.call.stream``: a stream's state."""
    __slots__ = ()

    @property
    def url(self) -> str:
        return _str(self.params, "url")

    @property
    def name(self) -> str:
        return _str(self.params, "name")


class SendDigitsEvent(RelayEvent):
    """``calling.call.send_digits``: sending digits finished."""
    __slots__ = ()


class PayEvent(RelayEvent):
    """``calling.call.pay``: a payment's state."""
    __slots__ = ()


class TranscribeEvent(RelayEvent):
    """``calling.call.transcribe``: a transcription's state and recording."""
    __slots__ = ()

    @property
    def url(self) -> str:
        return _str(self.params, "url")

    @property
    def recording_id(self) -> str:
        return _str(self.params, "recording_id")

    @property
    def duration(self) -> float:
        return _number(self.params, "duration")

    @property
    def size(self) -> int:
        return _number(self.params, "size")


class AIEvent(RelayEvent):
    """``calling.call.ai``: an AI agent session's state."""
    __slots__ = ()


class QueueEvent(RelayEvent):
    """``calling.call.queue``: the call's place in a queue."""
    __slots__ = ()

    @property
    def status(self) -> str:
        return self.params.get("status") or ""

    @property
    def queue_id(self) -> str:
        """The queue's id (``params.id``)."""
        return _str(self.params, "id")

    @property
    def queue_name(self) -> str:
        """The queue's name (``params.name``)."""
        return _str(self.params, "name")

    @property
    def position(self) -> int:
        return _number(self.params, "position")

    @property
    def size(self) -> int:
        return _number(self.params, "size")


class ReferEvent(RelayEvent):
    """``calling.call.refer``: a SIP REFER's progress."""
    __slots__ = ()

    @property
    def sip_refer_to(self) -> str:
        return _str(self.params, "sip_refer_to")

    @property
    def sip_refer_response_code(self) -> str:
        """The SIP code answering the REFER, as sent (a string, as the SDK types it)."""
        return str(self.params.get("sip_refer_response_code") or "")

    @property
    def sip_notify_response_code(self) -> str:
        return str(self.params.get("sip_notify_response_code") or "")


class DenoiseEvent(RelayEvent):
    """``calling.call.denoise``: noise reduction on or off."""
    __slots__ = ()

    @property
    def denoised(self) -> bool:
        return bool(self.params.get("denoised"))


class HoldEvent(RelayEvent):
    """``calling.call.hold``: the call went on or off hold."""
    __slots__ = ()


class EchoEvent(RelayEvent):
    """``calling.call.echo``: an echo's state."""
    __slots__ = ()


class ConferenceEvent(RelayEvent):
    """``calling.conference``: a conference's state."""
    __slots__ = ()

    @property
    def conference_id(self) -> str:
        return self.params.get("conference_id") or ""

    @property
    def name(self) -> str:
        return _str(self.params, "name")

    @property
    def status(self) -> str:
        return self.params.get("status") or ""


class CallingErrorEvent(RelayEvent):
    """``calling.error``: an error the server reports about a call."""
    __slots__ = ()

    @property
    def code(self) -> str:
        return str(self.params.get("code") or "")

    @property
    def message(self) -> str:
        return str(self.params.get("message") or "")


class DialEvent(RelayEvent):
    """``calling.call.dial``: a dial's state (dialing, answered, failed) and its answered ``call``."""
    __slots__ = ()

    @property
    def dial_state(self) -> str:
        return self.params.get("dial_state") or ""

    @property
    def call(self) -> dict[str, Any]:
        value = self.params.get("call")
        return value if isinstance(value, dict) else {}


class MessageEvent(RelayEvent):
    __slots__ = ()

    @property
    def message_id(self) -> str:
        return self.params.get("message_id") or ""

    @property
    def message_state(self) -> str:
        return self.params.get("message_state") or ""

    @property
    def reason(self) -> str:
        return self.params.get("reason") or ""

    @property
    def context(self) -> str:
        return _str(self.params, "context")

    @property
    def direction(self) -> str:
        return _str(self.params, "direction")

    @property
    def from_number(self) -> str:
        return _str(self.params, "from_number")

    @property
    def to_number(self) -> str:
        return _str(self.params, "to_number")

    @property
    def body(self) -> str:
        return _str(self.params, "body")

    @property
    def media(self) -> list[str]:
        return _list(self.params, "media")

    @property
    def segments(self) -> int:
        return _number(self.params, "segments")

    @property
    def tags(self) -> list[str]:
        return _list(self.params, "tags")


class MessageReceiveEvent(MessageEvent):
    """``messaging.receive``: an inbound SMS/MMS."""
    __slots__ = ()


class MessageStateEvent(MessageEvent):
    """``messaging.state``: a sent message's state changed."""
    __slots__ = ()


class AuthorizationStateEvent(RelayEvent):
    """``signalwire.authorization.state``: the session's resume token."""
    __slots__ = ()

    @property
    def authorization_state(self) -> str:
        value = self.params.get("authorization_state")
        return value if isinstance(value, str) else ""

    def __repr__(self) -> str:
        # A credential: never shown.
        return "AuthorizationStateEvent(authorization_state='***')"


EVENT_CLASSES: dict[str, type[RelayEvent]] = {
    c.EVENT_AUTHORIZATION_STATE: AuthorizationStateEvent,
    c.EVENT_CALL_RECEIVE: CallReceiveEvent,
    c.EVENT_CALL_STATE: CallStateEvent,
    c.EVENT_CALL_DIAL: DialEvent,
    c.EVENT_CALL_CONNECT: ConnectEvent,
    c.EVENT_CALL_PLAY: PlayEvent,
    c.EVENT_CALL_RECORD: RecordEvent,
    c.EVENT_CALL_COLLECT: CollectEvent,
    c.EVENT_CALL_DETECT: DetectEvent,
    c.EVENT_CALL_FAX: FaxEvent,
    c.EVENT_CALL_TAP: TapEvent,
    c.EVENT_CALL_STREAM: StreamEvent,
    c.EVENT_CALL_PAY: PayEvent,
    c.EVENT_CALL_TRANSCRIBE: TranscribeEvent,
    c.EVENT_CALL_SEND_DIGITS: SendDigitsEvent,
    c.EVENT_CALL_QUEUE: QueueEvent,
    c.EVENT_CALL_AI: AIEvent,
    c.EVENT_CALL_REFER: ReferEvent,
    c.EVENT_CALL_DENOISE: DenoiseEvent,
    c.EVENT_CALL_HOLD: HoldEvent,
    c.EVENT_CALL_ECHO: EchoEvent,
    c.EVENT_CONFERENCE: ConferenceEvent,
    c.EVENT_CALLING_ERROR: CallingErrorEvent,
    c.EVENT_MESSAGING_RECEIVE: MessageReceiveEvent,
    c.EVENT_MESSAGING_STATE: MessageStateEvent,
}


_NONE = type(None)  # null counts as absent
_STR: frozenset[type] = frozenset((str, _NONE))
_NUMBER: frozenset[type] = frozenset((int, float, _NONE))
_DICT: frozenset[type] = frozenset((dict, _NONE))
#: Objects whose own fields are checked too (the dial winner, a recording); a distinct
#: object so the hot loop tells them apart by identity.
_CHECKED_DICT: frozenset[type] = frozenset((dict, _NONE))
#: The type every known inner field must have, whatever the event. Types are matched
#: exactly (JSON gives exactly these), so ``true`` is not a number.
FIELD_TYPES: dict[str, frozenset[type]] = {
    **dict.fromkeys(
        (
            "call_id", "node_id", "control_id", "tag", "call_state", "end_reason", "direction",
            "context", "protocol", "project_id", "segment_id", "state", "dial_state",
            "connect_state", "message_id", "message_state", "reason", "authorization_state",
            "conference_id", "url",
        ),
        _STR,
    ),
    **dict.fromkeys(("device", "peer", "detect", "fax"), _DICT),
    **dict.fromkeys(("call", "record"), _CHECKED_DICT),
    **dict.fromkeys(("duration", "size", "timestamp"), _NUMBER),
    "final": frozenset[type]((bool, _NONE)),
}  # fmt: skip
#: Per event type, the fields whose type differs by event (``result`` is collect's object).
_TYPES_BY_EVENT: dict[str, dict[str, frozenset[type]]] = {
    c.EVENT_CALL_COLLECT: {**FIELD_TYPES, "result": _DICT},
}


def drop_mistyped_fields(event_type: str, params: dict[str, Any]) -> list[str]:
    """Remove, in place, every known field of ``params`` whose type is wrong (a list
    where a ``call_state`` string belongs, a number as ``node_id``, ...), so nothing
    downstream reads one; returns their dotted names for the caller to report.

    The rest of the event stays usable: an ``ended`` state event with a bad
    ``tag`` still ends its call. On the hot path: one dict lookup per field.
    """
    return _drop_mistyped(params, _TYPES_BY_EVENT.get(event_type, FIELD_TYPES), "")


def _drop_mistyped(params: dict[str, Any], types: dict[str, frozenset[type]], prefix: str) -> list[str]:
    own: list[str] | None = None  # this level's bad keys (allocated only when there is one)
    nested: list[str] | None = None
    for key, value in params.items():
        expected = types.get(key)
        if expected is None:
            continue
        if type(value) not in expected:
            own = [key] if own is None else [*own, key]
        elif expected is _CHECKED_DICT and value is not None:
            found = _drop_mistyped(value, FIELD_TYPES, f"{prefix}{key}.")
            if found:
                nested = found if nested is None else nested + found
    if own is None and nested is None:
        return []
    for key in own or ():
        del params[key]
    return [prefix + key for key in own or ()] + (nested or [])


def _timestamp(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return 0.0


#: The official SDK's name of the same map.
EVENT_CLASS_MAP = EVENT_CLASSES


def _unpack(payload: Mapping[str, Any]) -> tuple[str, dict[str, Any], Any]:
    """``(event_type, params, outer timestamp)`` of a ``signalwire.event``'s outer params."""
    if not isinstance(payload, Mapping):
        raise TypeError(f"an event payload is a dict of event_type and params, not {type(payload).__name__}")
    event_type = payload.get("event_type")
    params = payload.get("params")
    return (
        event_type if isinstance(event_type, str) else "",
        params if isinstance(params, dict) else {},
        payload.get("timestamp"),
    )


def _build(cls: type[_E], event_type: str, params: dict[str, Any], timestamp: Any) -> _E:
    ts = _timestamp(timestamp) if timestamp is not None else _timestamp(params.get("timestamp"))
    call_id = params.get("call_id")
    if not isinstance(call_id, str):
        # Dial events carry the call nested; message events carry none.
        call_id = ""
    return cls(event_type, params, call_id, ts)


@overload
def parse_event(payload: Mapping[str, Any]) -> RelayEvent: ...


@overload
def parse_event(payload: str, params: dict[str, Any], timestamp: Any = None) -> RelayEvent: ...


def parse_event(
    payload: Mapping[str, Any] | str, params: dict[str, Any] | None = None, timestamp: Any = None
) -> RelayEvent:
    """Build the typed event (a plain :class:`RelayEvent` when the type is unknown).

    Two forms, told apart by the first argument's type:

    - ``parse_event(payload)``, the official SDK's: ``payload`` is the outer params
      of a ``signalwire.event``, ``{"event_type": ..., "params": {...}}``.
    - ``parse_event(event_type, params, timestamp=None)``: the parts, already split.

    The timestamp is the outer one when present, else the inner ``params.timestamp``
    (the SDK reads only the inner one, which is usually missing).
    """
    if isinstance(payload, str):
        if params is None:
            raise TypeError("parse_event(event_type, params): params is missing")
        return _build(EVENT_CLASSES.get(payload, RelayEvent), payload, params, timestamp)
    if params is not None or timestamp is not None:
        raise TypeError("parse_event(payload) takes the payload dict alone")
    event_type, inner, outer_ts = _unpack(payload)
    return _build(EVENT_CLASSES.get(event_type, RelayEvent), event_type, inner, outer_ts)
