"""Client configuration: constructor arguments, else environment variables, else defaults.

Follows the official client (argument > env > default) with errors that name
the exact argument and variable to fix. Secrets are kept out of ``repr`` and
out of anything that is pickled to other processes by name (see ``Settings``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backoff import Backoff
from .errors import ArgumentError, ConfigError
from .protocol import constants as c
from .protocol.session import Credentials

__all__ = [
    "ALLOW_INSECURE_ENV",
    "ClientOptions",
    "Settings",
    "configure_logging",
    "context_list",
    "is_loopback",
    "max_connections",
    "resolve_settings",
    "updated_contexts",
]

log = logging.getLogger("relay_actors.config")

_BAD_HOST_CHARS = ("@", "/", "?", "#", " ", "\r", "\n", "\t")

#: The explicit opt-in to ``ws://`` towards a host that is not this machine.
ALLOW_INSECURE_ENV = "SIGNALWIRE_RELAY_ALLOW_INSECURE"
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """Resolved client settings. ``credentials`` never shows in ``repr``."""

    credentials: Credentials = field(repr=False)
    host: str = c.DEFAULT_HOST
    contexts: tuple[str, ...] = ()
    max_active_calls: int = c.DEFAULT_MAX_ACTIVE_CALLS
    #: ``wss`` by default; ``ws`` only when asked for (the local emulator).
    scheme: str = "wss"
    ca_file: str | None = None
    #: Where the credentials came from, for messages (never their values): e.g.
    #: ``"SIGNALWIRE_PROJECT_ID and SIGNALWIRE_API_TOKEN in SIGNALWIRE_CREDENTIALS_FILE '/x'"``.
    credentials_from: str = "the project= argument and the token= argument"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"


@dataclass(frozen=True)
class ClientOptions:
    """How a client behaves, beyond :class:`Settings` (``RelayClient``'s keyword arguments):
    its call host's options and its connection's. On Ray the actors' clients get the same."""

    over_limit: str = "drop"
    handler_timeout: float | None = None
    on_handler_error: str = "hangup"
    request_timeout: float = c.REQUEST_TIMEOUT
    ping_interval: float = c.CLIENT_PING_INTERVAL
    dial_timeout: float = c.DIAL_TIMEOUT
    backoff: Backoff | None = None

    def host_options(self) -> dict[str, Any]:
        """The call host's part (``CallHost``'s keyword arguments)."""
        return {
            "over_limit": self.over_limit,
            "handler_timeout": self.handler_timeout,
            "on_handler_error": self.on_handler_error,
            "dial_timeout": self.dial_timeout,
        }

    def for_actors(self) -> dict[str, Any]:
        """The options as they travel to the app's actors (the backoff's settings, not its state)."""
        return {
            **self.host_options(),
            "request_timeout": self.request_timeout,
            "ping_interval": self.ping_interval,
            "backoff": self.backoff.options() if self.backoff is not None else None,
        }


#: Where a RelayClient runs its calls: this process, or a Ray app.
RUNTIMES = ("local", "ray")


def check_runtime(runtime: str) -> str:
    """``runtime`` if it is one of :data:`RUNTIMES`; otherwise an error saying which are."""
    if runtime not in RUNTIMES:
        raise ArgumentError(f"runtime must be 'local' or 'ray', not {runtime!r}")
    return runtime


def _validate_host(host: str) -> str:
    if not host or any(ch in host for ch in _BAD_HOST_CHARS) or "://" in host:
        raise ConfigError(
            f"host must be a host name, optionally with a port (example.signalwire.com or 127.0.0.1:8443), "
            f"not {host!r}: pass host=... or set SIGNALWIRE_SPACE"
        )
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ConfigError(f"host {host!r} has an invalid port: pass host=... or set SIGNALWIRE_SPACE")
    if not name:
        raise ConfigError(f"host {host!r} has no name: pass host=... or set SIGNALWIRE_SPACE")
    return host


def host_name(host: str) -> str:
    """The name or address part of ``host`` (``[::1]:443`` → ``::1``, ``a.b:80`` → ``a.b``)."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        return host.rpartition(":")[0]
    return host  # a name, or a bare IPv6 address


def is_loopback(host: str) -> bool:
    """True when ``host`` (optionally with a port) is this machine: 127.0.0.0/8, ::1 or localhost.

    Only literal addresses and the name ``localhost`` count; any other name may
    resolve anywhere, so it is not trusted with a token sent in clear."""
    name = host_name(host).lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _check_plaintext(scheme: str, host: str, allow_insecure: bool | None, env: Mapping[str, str]) -> None:
    """``ws://`` sends the token in clear: only to loopback, unless the caller opts in."""
    if scheme != "ws" or is_loopback(host):
        return
    if allow_insecure is None:
        allow_insecure = env.get(ALLOW_INSECURE_ENV, "").strip().lower() in _TRUE
    if not allow_insecure:
        raise ConfigError(
            f"scheme 'ws' sends the credentials in clear and is refused for {host!r}, which is not a "
            "loopback host (127.0.0.0/8, ::1, localhost): use scheme='wss' (unset SIGNALWIRE_RELAY_SCHEME), "
            f"or opt in explicitly with allow_insecure=True or {ALLOW_INSECURE_ENV}=1"
        )
    log.warning(
        "connecting to %s over plaintext ws:// (allow_insecure): the credentials travel in clear", host
    )


def _max_active_calls(value: int | None, env: Mapping[str, str]) -> int:
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"max_active_calls must be an integer, not {value!r}: "
                "fix max_active_calls=... or set RELAY_MAX_ACTIVE_CALLS"
            )
        if value < 1:
            raise ConfigError(
                f"max_active_calls must be at least 1, not {value}: "
                "fix max_active_calls=... or set RELAY_MAX_ACTIVE_CALLS"
            )
        return value
    raw = env.get("RELAY_MAX_ACTIVE_CALLS", "").strip()
    if not raw:
        return c.DEFAULT_MAX_ACTIVE_CALLS
    try:
        return max(1, int(raw))
    except ValueError:
        # As the official client: a bad env value falls back to the default, but we say so.
        log.warning("RELAY_MAX_ACTIVE_CALLS=%r is not an integer; using %d", raw, c.DEFAULT_MAX_ACTIVE_CALLS)
        return c.DEFAULT_MAX_ACTIVE_CALLS


def resolve_settings(
    project: str | None = None,
    token: str | None = None,
    jwt_token: str | None = None,
    host: str | None = None,
    contexts: Sequence[str] | None = None,
    max_active_calls: int | None = None,
    *,
    scheme: str | None = None,
    ca_file: str | None = None,
    allow_insecure: bool | None = None,
    env: Mapping[str, str] | None = None,
    credentials_from: str | None = None,
) -> Settings:
    """Resolve settings the way the official client does.

    ``scheme`` is ``wss`` unless given or set in ``SIGNALWIRE_RELAY_SCHEME``.
    ``allow_insecure`` (else ``SIGNALWIRE_RELAY_ALLOW_INSECURE=1``) permits
    ``scheme='ws'`` towards a host that is not loopback; without it, that is refused.
    ``credentials_from`` overrides where the credentials are said to come from (a Ray
    actor gets them from the driver, which knows).

    Raises:
        ConfigError: (a ``ValueError``) naming the argument and environment
            variable to fix: missing credentials, bad host, bad limit, bad contexts,
            plaintext towards a remote host.
    """
    source = _EnvSource(env)
    credentials = _credentials(project, token, jwt_token, source)
    if credentials_from is None:
        credentials_from = _credentials_origin(credentials, project, token, jwt_token, source)
    env = source.env
    host = _validate_host((host or env.get("SIGNALWIRE_SPACE", "") or c.DEFAULT_HOST).strip())
    ctx = _context_names(contexts)
    scheme = scheme or env.get("SIGNALWIRE_RELAY_SCHEME") or "wss"
    if scheme not in ("ws", "wss"):
        raise ConfigError(
            f"scheme must be 'wss' (default) or 'ws' (local emulator only), not {scheme!r}: "
            "fix scheme=... or SIGNALWIRE_RELAY_SCHEME"
        )
    _check_plaintext(scheme, host, allow_insecure, env)
    ca_file = ca_file or env.get("SIGNALWIRE_RELAY_CA_FILE") or None
    if ca_file and not os.path.isfile(ca_file):
        raise ConfigError(f"CA file {ca_file!r} does not exist: fix ca_file=... or SIGNALWIRE_RELAY_CA_FILE")
    return Settings(
        credentials=credentials,
        host=host,
        contexts=tuple(dict.fromkeys(ctx)),
        max_active_calls=_max_active_calls(max_active_calls, env),
        scheme=scheme,
        ca_file=ca_file,
        credentials_from=credentials_from,
    )


class _EnvSource:
    """Where settings not given as arguments come from: ``env`` as given, or this process's
    environment filled in by its ``SIGNALWIRE_CREDENTIALS_FILE`` (Ray jobs), if any."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        #: The variables the credentials file set (none when ``env`` was given).
        self.in_file: dict[str, str] = {}
        #: `` in SIGNALWIRE_CREDENTIALS_FILE '<path>'`` when there is one, for messages.
        self.file_note = ""
        if env is None:
            env = os.environ
            path = env.get("SIGNALWIRE_CREDENTIALS_FILE")
            if path:
                from .credentials_file import read_credentials_file

                self.in_file = read_credentials_file(path)
                env = {**env, **self.in_file}
                self.file_note = f" in SIGNALWIRE_CREDENTIALS_FILE {path!r}"
        self.env: Mapping[str, str] = env

    def origin(self, given: str | None, arg: str, variable: str) -> str:
        """Where ``arg`` came from: the argument (``given``), the credentials file or the environment."""
        if given:
            return f"the {arg}= argument"
        return f"{variable}{self.file_note}" if variable in self.in_file else f"{variable} (environment)"


def _credentials(
    project: str | None, token: str | None, jwt_token: str | None, source: _EnvSource
) -> Credentials:
    """The JWT, else the project and the token; a :class:`ConfigError` when they are missing."""
    env, file_note = source.env, source.file_note
    project = project or env.get("SIGNALWIRE_PROJECT_ID", "")
    token = token or env.get("SIGNALWIRE_API_TOKEN", "")
    jwt_token = jwt_token or env.get("SIGNALWIRE_JWT_TOKEN", "")
    if not jwt_token:
        if not project:
            raise ConfigError(
                "project is required: pass project=... or set SIGNALWIRE_PROJECT_ID "
                f"{'(it is not' + file_note + ') ' if file_note else ''}"
                "(or use jwt_token=... / SIGNALWIRE_JWT_TOKEN)"
            )
        if not token:
            raise ConfigError(
                "token is required: pass token=... or set SIGNALWIRE_API_TOKEN "
                f"{'(it is not' + file_note + ') ' if file_note else ''}"
                "(or use jwt_token=... / SIGNALWIRE_JWT_TOKEN)"
            )
    return Credentials(project, token, jwt_token)


def _credentials_origin(
    credentials: Credentials,
    project: str | None,
    token: str | None,
    jwt_token: str | None,
    source: _EnvSource,
) -> str:
    """Where the credentials came from, for messages (never their values)."""
    if credentials.jwt_token:
        return source.origin(jwt_token, "jwt_token", "SIGNALWIRE_JWT_TOKEN")
    project_from = source.origin(project, "project", "SIGNALWIRE_PROJECT_ID")
    return f"{project_from} and {source.origin(token, 'token', 'SIGNALWIRE_API_TOKEN')}"


def _context_names(contexts: Sequence[str] | None) -> tuple[str, ...]:
    """``contexts`` as a tuple of non-empty names; a :class:`ConfigError` for a string or a bad name."""
    if isinstance(contexts, str):
        raise ConfigError("contexts must be a list of context names, not a string: pass contexts=[...]")
    ctx = tuple(contexts or ())
    if any(not isinstance(x, str) or not x for x in ctx):
        raise ConfigError(f"contexts must be non-empty strings: {list(ctx)!r}")
    return ctx


def max_connections(env: Mapping[str, str] | None = None) -> int | None:
    """``RELAY_MAX_CONNECTIONS``: how many in-process clients may be connected at once
    in this process (at least 1; a non-integer counts as 1, as in the official SDK).

    ``None`` when unset: no limit. The SDK's default is 1; ours is none, because
    one process running several clients (or tests) is normal here.
    """
    env = os.environ if env is None else env
    raw = env.get("RELAY_MAX_CONNECTIONS", "").strip()
    if not raw:
        return None
    try:
        return max(1, int(raw))
    except ValueError:
        log.warning("RELAY_MAX_CONNECTIONS=%r is not an integer; using 1", raw)
        return 1


# --- logging, from SIGNALWIRE_LOG_MODE / _LEVEL / _FORMAT ------------------------------

#: Control characters are stripped from log lines (no forged lines), as the SDK does.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_logging_configured = False


class _ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s [%(levelname)s] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return _CONTROL_CHARS.sub("", super().format(record))


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, with the SDK's keys: ``timestamp``, ``level``, ``logger``, ``event``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _CONTROL_CHARS.sub("", record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(*, force: bool = False, env: Mapping[str, str] | None = None) -> None:
    """Send relay-actors' logs (the ``relay_actors`` logger tree) where the environment says,
    as the official SDK's ``signalwire.configure_logging()`` does for its own:

    - ``SIGNALWIRE_LOG_MODE``: ``off``, ``stderr``, ``default`` (stdout) or ``auto``/unset
      (``off`` under CGI, else ``default``);
    - ``SIGNALWIRE_LOG_LEVEL``: ``debug``, ``info`` (default), ``warning``, ``error``, ``critical``;
    - ``SIGNALWIRE_LOG_FORMAT``: ``console`` (default) or ``json``.

    Like the SDK, importing the library configures nothing (the app's logging applies)
    and this runs once: later calls do nothing unless ``force=True``.
    """
    global _logging_configured
    if _logging_configured and not force:
        return
    env = os.environ if env is None else env
    mode = env.get("SIGNALWIRE_LOG_MODE", "").strip().lower()
    level_name = env.get("SIGNALWIRE_LOG_LEVEL", "info").strip().lower()
    fmt = env.get("SIGNALWIRE_LOG_FORMAT", "console").strip().lower()
    if mode in ("", "auto"):
        mode = "off" if env.get("GATEWAY_INTERFACE") else "default"
    logger = logging.getLogger("relay_actors")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.propagate = False  # as the SDK: our lines are not repeated by the root logger
    if mode == "off":
        logger.addHandler(logging.NullHandler())
        logger.setLevel(logging.CRITICAL + 10)
    else:
        level = _LOG_LEVELS.get(level_name, logging.INFO)
        handler = logging.StreamHandler(sys.stderr if mode == "stderr" else sys.stdout)
        handler.setLevel(level)
        handler.setFormatter(_JsonFormatter() if fmt == "json" else _ConsoleFormatter())
        logger.addHandler(handler)
        logger.setLevel(level)
    _logging_configured = True


def context_list(contexts: Sequence[str] | str) -> list[str]:
    """The contexts of a ``receive``/``unreceive``: a str is one context (as in the
    SDK), duplicates dropped. Raises ArgumentError for an empty or non-str name."""
    if isinstance(contexts, str):
        contexts = [contexts]
    ctx = list(dict.fromkeys(contexts or ()))
    if any(not isinstance(x, str) or not x for x in ctx):
        raise ArgumentError(f"contexts must be non-empty strings: {ctx!r}")
    return ctx


def updated_contexts(current: Sequence[str], method: str, contexts: Sequence[str]) -> list[str]:
    """``current`` after a successful ``signalwire.receive``/``unreceive`` of ``contexts``."""
    if method == c.METHOD_RECEIVE:
        return [*current, *(x for x in contexts if x not in current)]
    return [x for x in current if x not in contexts]
