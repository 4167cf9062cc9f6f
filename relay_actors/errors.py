"""Typed errors of relay-actors.

Every error the framework raises on purpose is a :class:`RelayError`. Its
``code`` is an ``int``, exactly as in the official SDK (``signalwire.relay``
3.7.5): the server's code (``404``, ``-32602``; the wire sends ``"404"``, it is
converted), and ``-1`` for every failure on the client's side. Which client-side
failure it was (``"timeout"``, ``"closed"``, ``"dial_timeout"``, ...) is in
:attr:`RelayError.failure`, ``None`` for an error the server sent.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CLIENT_SIDE",
    "ArgumentError",
    "AuthenticationError",
    "CallEndedError",
    "ConfigError",
    "ConnectionLimitError",
    "ProtocolError",
    "RelayError",
    "unwrap_remote",
]

CLIENT_SIDE = -1
"""The ``code`` of every client-side failure, as the official SDK gives it."""


def _split(code: str | int) -> tuple[int, str | None]:
    """``(code, failure)`` from what the constructor got: a number (int or a numeric
    string, as the wire sends it) is the server's code; any other string names a
    client-side failure, whose code is -1."""
    if isinstance(code, bool):
        raise TypeError("a RelayError code is an int or a string, not a bool")
    if isinstance(code, int):
        return int(code), None
    text = str(code).strip()
    try:
        return int(text), None
    except ValueError:
        return CLIENT_SIDE, text


def _rebuild(cls: type[RelayError], code: int, message: str, data: Any, failure: str | None) -> RelayError:
    """Unpickle any RelayError (subclasses have their own ``__init__`` signatures)."""
    error = cls.__new__(cls)
    RelayError.__init__(error, code, message, data, failure=failure)
    return error


class RelayError(Exception):
    """An error from RELAY or from the client's handling of it.

    ``RelayError(code, message)`` takes the server's code (an int, or the string the
    wire carries, ``"404"``) or, for a client-side failure, its name
    (``RelayError("timeout", ...)``: ``code`` ``-1``, ``failure`` ``"timeout"``).

    Attributes:
        code: an ``int``, as in the official SDK: the server's code (``404``,
            ``-32000``), or ``-1`` for a client-side failure.
        failure: what kind of client-side failure (``"timeout"``, ``"closed"``,
            ``"dial_timeout"``, ``"session_lost"``, ``"queue_full"``,
            ``"connection_lost"``, ``"call_ended"``, ...); ``None`` when the server
            sent the error.
        message: what went wrong, for people. Never holds credentials.
        data: the JSON-RPC ``error.data`` object (or the failed result) when the
            server sent one.
    """

    def __init__(
        self, code: str | int, message: str, data: Any = None, *, failure: str | None = None
    ) -> None:
        number, named = _split(code)
        self.code: int = number
        self.failure: str | None = failure if failure is not None else named
        self.message = str(message)
        self.data = data
        super().__init__(f"RELAY error {self.code}: {self.message}")

    @classmethod
    def from_server(cls, code: Any, message: str, data: Any = None) -> RelayError:
        """An error the server sent: its code as an int, ``-1`` when it is not a number
        (as the SDK does), and never a ``failure``."""
        try:
            number = int(str(code).strip())
        except ValueError:
            number = CLIENT_SIDE
        return cls(number, message, data)

    @property
    def call_gone(self) -> bool:
        """True for 404 (no such call) and 410 (call ended): normal telephony, not a failure."""
        return self.code in (404, 410)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the typed fields when the error crosses a process boundary (Ray pickles it).
        return (_rebuild, (type(self), self.code, self.message, self.data, self.failure))


class ProtocolError(RelayError):
    """A frame that breaks the RELAY/JSON-RPC rules: malformed, oversize, missing fields.

    A client-side failure (``code`` -1); ``failure`` is one of ``invalid_json``,
    ``not_an_object``, ``invalid_frame``, ``invalid_params``,
    ``invalid_field`` (an event field of the wrong type),
    ``frame_too_large``, ``unknown_response``, ``unknown_event``, ``unknown_method``.
    """


class _FixedCodeError(RelayError):
    """A client-side error whose ``failure`` is fixed by its class: built from the message alone."""


class ConfigError(_FixedCodeError, ValueError):
    """Bad or missing configuration: a ``ValueError``, as in the official SDK,
    naming the exact argument and environment variable to fix."""

    def __init__(self, message: str) -> None:
        super().__init__("config", message)


class AuthenticationError(RelayError):
    """``signalwire.connect`` was rejected: bad credentials, bad JWT, or an unknown
    ``protocol`` on resume. Keeps the server's code (e.g. ``-32000``)."""


class ArgumentError(_FixedCodeError, ValueError):
    """A bad argument to a client method (caught before anything is sent). A ``ValueError``."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_argument", message)


class ConnectionLimitError(_FixedCodeError, RuntimeError):
    """More connected clients in this process than ``RELAY_MAX_CONNECTIONS`` allows.
    A ``RuntimeError``, as in the official SDK."""

    def __init__(self, message: str) -> None:
        super().__init__("connection_limit", message)


class CallEndedError(_FixedCodeError, TimeoutError):
    """A wait on a call that has ended (or ends meanwhile): no event will come.

    Raised at once instead of waiting out the timeout, as the official SDK does. It is
    also an ``asyncio.TimeoutError`` (``TimeoutError``), so SDK code that catches that
    takes the same path it would have taken there, only sooner; ``failure`` ``"call_ended"``."""

    def __init__(self, message: str) -> None:
        super().__init__("call_ended", message)


def unwrap_remote(exc: BaseException) -> BaseException:
    """The RelayError a Ray actor raised, out of the ``RayTaskError`` that wraps it (whose
    text is the remote traceback); any other exception as it is."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RelayError):
        return cause
    return exc
