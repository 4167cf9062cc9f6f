"""JSON-RPC 2.0 framing for RELAY: one JSON object per WebSocket text frame.

Pure functions, no I/O. :func:`decode` turns one frame into a
:class:`Request`, :class:`Response` or :class:`ErrorResponse`, or raises
:class:`~relay_actors.errors.ProtocolError` with a precise ``failure``; encoders
return ``bytes`` (orjson), which a transport sends as a *text* frame
(``websocket.send(data, text=True)``).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import ProtocolError

__all__ = [
    "MAX_FRAME_SIZE",
    "ErrorResponse",
    "Frame",
    "InvalidRequest",
    "Request",
    "Response",
    "compact_dumps",
    "decode",
    "encode_error",
    "encode_request",
    "encode_result",
    "new_id",
    "wire_logger",
]

#: Largest inbound frame both official SDKs accept (10 MiB).
MAX_FRAME_SIZE = 10 * 1024 * 1024


#: A JSON-RPC id as it was on the wire (numbers stay numbers when echoed back).
WireId = str | int | float


@dataclass(frozen=True, slots=True)
class Request:
    """A request in either direction. ``id`` is None for a notification.

    ``id`` is the text form (a dict key); ``wire_id`` is the number the peer sent
    when its id was a number, so an answer can echo it unchanged."""

    id: str | None
    method: str
    params: dict[str, Any]
    wire_id: int | float | None = None

    @property
    def reply_id(self) -> WireId | None:
        """The id an answer to this request must carry (None: a notification, no answer)."""
        return self.wire_id if self.wire_id is not None else self.id


class InvalidRequest(ProtocolError):
    """A request that breaks the rules (bad method or params) but has a usable id,
    so the receiver can still answer it instead of leaving the sender waiting
    (a server redelivers an unanswered event for ever). ``request`` is what could
    be read of it: its ids, its method ("" when not a non-empty string) and no params."""

    def __init__(self, code: str, message: str, request: Request) -> None:
        super().__init__(code, message)
        self.request = request

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.failure or "", self.message, self.request))


@dataclass(frozen=True, slots=True)
class Response:
    """A success answer. ``result`` is whatever the peer sent (not always an object)."""

    id: str
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """A JSON-RPC error answer. ``id`` may be None (an error about an unparseable request)."""

    id: str | None
    code: int | str
    message: str
    data: Any = None


Frame = Request | Response | ErrorResponse


class _Ids:
    """Request ids shaped like the SDKs' UUIDs: a random prefix per process (new in a
    forked child) and a counter, instead of a system call for 16 random bytes and a
    UUID object per request (a few percent of the connection actor's CPU at burst)."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = str(uuid.uuid4())[:24]  # "8-4-4-4-": 74 random bits
        self.counter = itertools.count(random.getrandbits(40))

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFF:012x}"


_ids = _Ids()


def new_id() -> str:
    """A fresh request id, unique in this process and, with 74 random bits per process,
    across processes; shaped like the SDKs' UUIDv4 strings."""
    return _ids.next()


def _frame_id(value: Any) -> str | None:
    # Ids are opaque; numbers are legal JSON-RPC, keep them as their text so
    # they can be echoed back and used as dict keys.
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return orjson.dumps(value).decode()
    raise ProtocolError("invalid_frame", f"frame id must be a string or number, not {type(value).__name__}")


def decode(data: str | bytes | bytearray | memoryview, max_size: int = MAX_FRAME_SIZE) -> Frame:
    """Parse one frame.

    Raises:
        ProtocolError: ``frame_too_large``, ``invalid_json``, ``not_an_object``,
            ``invalid_frame`` (neither request nor response, bad id or method)
            or ``invalid_params`` (``params`` present but not an object).
    """
    size = len(data)
    if size > max_size:
        raise ProtocolError("frame_too_large", f"frame of {size} bytes exceeds the {max_size}-byte limit")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("invalid_json", f"frame is not valid JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("not_an_object", f"frame is a JSON {type(obj).__name__}, not an object")

    raw_id = obj.get("id")
    frame_id = _frame_id(raw_id)
    method = obj.get("method")
    if method is not None:
        problem: ProtocolError | None = None
        if not isinstance(method, str) or not method:
            problem = ProtocolError("invalid_frame", "request method must be a non-empty string")
            method = ""
        else:
            params = obj.get("params", {})
            if type(params) is not dict:
                problem = ProtocolError(
                    "invalid_params",
                    f"params of {method} must be an object, not {type(params).__name__}",
                )
        wire_id = raw_id if frame_id is not None and type(raw_id) is not str else None
        if problem is not None:
            if frame_id is None:
                raise problem
            request = Request(frame_id, method, {}, wire_id)
            raise InvalidRequest(problem.failure or "", problem.message, request)
        return Request(frame_id, method, params, wire_id)

    if "error" in obj:
        err = obj["error"]
        if isinstance(err, dict):
            code = err.get("code", -1)
            if not isinstance(code, (int, str)) or isinstance(code, bool):
                code = -1
            message = err.get("message", "Unknown error")
            return ErrorResponse(frame_id, code, str(message), err.get("data"))
        return ErrorResponse(frame_id, -1, str(err))

    if "result" in obj:
        if frame_id is None:
            raise ProtocolError("invalid_frame", "response without an id")
        return Response(frame_id, obj["result"])

    raise ProtocolError("invalid_frame", "frame has neither method, result nor error")


def compact_dumps(obj: Any) -> bytes:
    """``orjson.dumps``, compact: orjson's bytes keep the whole buffer it wrote into
    (~4 KiB) however short the value, and a burst's frames and link items wait in queues —
    3,000 acks held 13 MB. A copy of a few hundred bytes costs next to nothing."""
    return bytes(memoryview(orjson.dumps(obj)))


def encode_request(req_id: str | None, method: str, params: dict[str, Any]) -> bytes:
    """Encode a request (``req_id`` None makes a notification)."""
    if req_id is None:
        return compact_dumps({"jsonrpc": "2.0", "method": method, "params": params})
    return compact_dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})


def encode_result(req_id: WireId, result: Any) -> bytes:
    """Encode a success answer (acks and pongs are ``encode_result(id, {})``)."""
    return compact_dumps({"jsonrpc": "2.0", "id": req_id, "result": result})


def encode_error(req_id: WireId | None, code: int, message: str, data: Any = None) -> bytes:
    """Encode a JSON-RPC error answer."""
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return compact_dumps({"jsonrpc": "2.0", "id": req_id, "error": err})


class _FrameContentFilter(logging.Filter):
    """websockets logs every frame at DEBUG with up to 75 characters of its content
    (head and tail). The tail of a ``signalwire.connect`` frame or of a
    ``signalwire.authorization.state`` event is a credential (token, JWT or
    authorization state), so frame records keep only the frame's kind and size."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in ("< %s", "> %s") and isinstance(record.args, tuple) and len(record.args) == 1:
            frame = record.args[0]
            opcode = getattr(frame, "opcode", None)
            if opcode is not None:
                size = len(getattr(frame, "data", b""))
                record.args = (f"{getattr(opcode, 'name', opcode)} [{size} bytes]",)
        return True


def wire_logger(name: str) -> logging.Logger:
    """A logger for a websockets connection whose frame records never show frame content."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _FrameContentFilter) for f in logger.filters):
        logger.addFilter(_FrameContentFilter())
    return logger
