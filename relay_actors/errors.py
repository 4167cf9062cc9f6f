"""Typed errors of relay-actors.

Every error the framework raises on purpose is a :class:`RelayError` with a
``code`` and a human ``message``. Server result codes are strings on the wire
(``"404"``), so ``code`` is that string, kept as it came — but an
:class:`ErrorCode`, a ``str`` that also compares with integers the way the
official SDK's integer ``code`` does (``e.code == 404``; non-numeric client-side
codes such as ``"timeout"`` equal ``-1``, the SDK's code for them).
:attr:`RelayError.status` is the plain integer.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArgumentError",
    "AuthenticationError",
    "CallEndedError",
    "ConfigError",
    "ConnectionLimitError",
    "ErrorCode",
    "ProtocolError",
    "RelayError",
]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ErrorCode(str):
    """A RELAY error code: the string as sent (``"404"``, ``"timeout"``), equal to
    that string **and** to the integer the official SDK would hold (``404``; ``-1``
    for a non-numeric code), and ordered against integers (``400 <= code < 500``).

    Hashing is the string's, so sets and dicts keyed by the string codes keep
    working; ``e.code in {404, 410}`` (an int-keyed set or dict) does not — use
    ``e.status`` there, or a tuple (``e.code in (404, 410)``), which compares with ``==``.
    """

    __slots__ = ()

    @property
    def status(self) -> int:
        """The integer view: the number, or ``-1`` when the code is not numeric."""
        try:
            return int(str(self))
        except ValueError:
            return -1

    def __int__(self) -> int:
        return self.status

    def __eq__(self, other: object) -> bool:
        if _is_int(other):
            return self.status == other
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    # Against an int: numerically, as the SDK's int code; otherwise as a string.
    def __lt__(self, other: object) -> bool:
        if _is_int(other):
            return self.status < other  # type: ignore[operator]
        return str.__lt__(self, other)  # type: ignore[operator]

    def __le__(self, other: object) -> bool:
        if _is_int(other):
            return self.status <= other  # type: ignore[operator]
        return str.__le__(self, other)  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        if _is_int(other):
            return self.status > other  # type: ignore[operator]
        return str.__gt__(self, other)  # type: ignore[operator]

    def __ge__(self, other: object) -> bool:
        if _is_int(other):
            return self.status >= other  # type: ignore[operator]
        return str.__ge__(self, other)  # type: ignore[operator]

    # Defining __eq__ would drop the hash: keep the string's (see the class docstring).
    __hash__ = str.__hash__

    def __repr__(self) -> str:
        return str.__repr__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ErrorCode, (str(self),))


class RelayError(Exception):
    """An error from RELAY or from the client's handling of it.

    Attributes:
        code: an :class:`ErrorCode`: the server's code as a string (``"404"``,
            ``"-32000"``) or a client-side code (``"timeout"``, ``"connection_closed"``,
            ...); it also equals the official SDK's integer (``e.code == 404``;
            ``-1`` for the client-side codes).
        message: what went wrong, for people. Never holds credentials.
        data: the JSON-RPC ``error.data`` object when the server sent one.
    """

    def __init__(self, code: str | int, message: str, data: Any = None) -> None:
        self.code = ErrorCode(code)
        self.message = str(message)
        self.data = data
        super().__init__(f"RELAY error {self.code}: {self.message}")

    @property
    def status(self) -> int:
        """The code as an integer (what the official SDK calls ``code``); ``-1`` if not numeric."""
        return self.code.status

    @property
    def call_gone(self) -> bool:
        """True for 404 (no such call) and 410 (call ended): normal telephony, not a failure."""
        return self.code in ("404", "410")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the typed fields when the error crosses a process boundary (Ray pickles it).
        return (type(self), (str(self.code), self.message, self.data))


class ProtocolError(RelayError):
    """A frame that breaks the RELAY/JSON-RPC rules: malformed, oversize, missing fields.

    Codes: ``invalid_json``, ``not_an_object``, ``invalid_frame``,
    ``invalid_params``, ``invalid_field`` (an event field of the wrong type),
    ``frame_too_large``, ``unknown_response``, ``unknown_event``, ``unknown_method``.
    """


class _FixedCodeError(RelayError):
    """An error whose code is fixed by its class: built from the message alone."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,))


class ConfigError(_FixedCodeError, ValueError):
    """Bad or missing configuration: a ``ValueError``, as in the official SDK,
    naming the exact argument and environment variable to fix."""

    def __init__(self, message: str) -> None:
        super().__init__("config", message)


class AuthenticationError(RelayError):
    """``signalwire.connect`` was rejected: bad credentials, bad JWT, or an unknown
    ``protocol`` on resume. Keeps the server's code (e.g. ``"-32000"``)."""


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
    takes the same path it would have taken there, only sooner; code ``call_ended``."""

    def __init__(self, message: str) -> None:
        super().__init__("call_ended", message)
