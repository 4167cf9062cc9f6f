"""Typed errors of relay-actors.

Every error the framework raises on purpose is a :class:`RelayError` with a
string ``code`` and a human ``message``. Server result codes are strings on the
wire (``"404"``), so the string is kept as it came and :attr:`RelayError.status`
gives the integer view the official SDK exposes as ``code`` (``-1`` when the
code is not numeric, as for client-side failures such as ``"timeout"``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArgumentError",
    "AuthenticationError",
    "ConfigError",
    "ProtocolError",
    "RelayError",
]


class RelayError(Exception):
    """An error from RELAY or from the client's handling of it.

    Attributes:
        code: the server's code as a string (``"404"``, ``"-32000"``) or a
            client-side code (``"timeout"``, ``"connection_closed"``, ...).
        message: what went wrong, for people. Never holds credentials.
        data: the JSON-RPC ``error.data`` object when the server sent one.
    """

    def __init__(self, code: str | int, message: str, data: Any = None) -> None:
        self.code = str(code)
        self.message = str(message)
        self.data = data
        super().__init__(f"RELAY error {self.code}: {self.message}")

    @property
    def status(self) -> int:
        """The code as an integer (what the official SDK calls ``code``); ``-1`` if not numeric."""
        try:
            return int(self.code)
        except ValueError:
            return -1

    @property
    def call_gone(self) -> bool:
        """True for 404 (no such call) and 410 (call ended): normal telephony, not a failure."""
        return self.code in ("404", "410")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the typed fields when the error crosses a process boundary (Ray pickles it).
        return (type(self), (self.code, self.message, self.data))


class ProtocolError(RelayError):
    """A frame that breaks the RELAY/JSON-RPC rules: malformed, oversize, missing fields.

    Codes: ``invalid_json``, ``not_an_object``, ``invalid_frame``,
    ``invalid_params``, ``invalid_field`` (an event field of the wrong type),
    ``frame_too_large``, ``unknown_response``, ``unknown_event``, ``unknown_method``.
    """


class ConfigError(RelayError, ValueError):
    """Bad or missing configuration: a ``ValueError``, as in the official SDK,
    naming the exact argument and environment variable to fix."""

    def __init__(self, message: str) -> None:
        super().__init__("config", message)


class AuthenticationError(RelayError):
    """``signalwire.connect`` was rejected: bad credentials, bad JWT, or an unknown
    ``protocol`` on resume. Keeps the server's code (e.g. ``"-32000"``)."""


class ArgumentError(RelayError, ValueError):
    """A bad argument to a client method (caught before anything is sent). A ``ValueError``."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_argument", message)
