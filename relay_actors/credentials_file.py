"""``SIGNALWIRE_CREDENTIALS_FILE``: the driver's credentials from a file, for Ray jobs.

Under ``ray job submit`` or a KubeRay ``RayJob`` no user shell starts the driver,
and a runtime env's ``env_vars`` are shown in clear by Ray's jobs API. So the
driver (only it: actors resolve their settings with an empty environment) reads
a file named by ``SIGNALWIRE_CREDENTIALS_FILE`` — a root-only file on the head
node, or a Kubernetes Secret mounted on the head pod. Two formats:

* JSON: ``{"project": "...", "token": "...", "space": "example.signalwire.com"}``
  (or ``jwt_token``), or the environment variable names as keys;
* env style: ``SIGNALWIRE_PROJECT_ID=...`` lines (``export``, quotes and ``#``
  comments allowed) — what ``kubectl create secret --from-env-file`` takes.

Values in the file take precedence over the environment for the names it sets.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Any

import orjson

from .errors import ConfigError

__all__ = ["ENV_VAR", "read_credentials_file"]

log = logging.getLogger("relay_actors.credentials_file")

ENV_VAR = "SIGNALWIRE_CREDENTIALS_FILE"
_ALIASES = {
    "project": "SIGNALWIRE_PROJECT_ID",
    "project_id": "SIGNALWIRE_PROJECT_ID",
    "token": "SIGNALWIRE_API_TOKEN",
    "api_token": "SIGNALWIRE_API_TOKEN",
    "jwt_token": "SIGNALWIRE_JWT_TOKEN",
    "jwt": "SIGNALWIRE_JWT_TOKEN",
    "space": "SIGNALWIRE_SPACE",
    "host": "SIGNALWIRE_SPACE",
}
_NAMES = frozenset(_ALIASES.values())


def read_credentials_file(path: str) -> dict[str, str]:
    """The file's settings as environment variable names → values.

    Raises:
        ConfigError: the file cannot be read or parsed (the message never shows values).
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
            mode = os.fstat(fh.fileno()).st_mode
    except OSError as exc:
        raise ConfigError(f"{ENV_VAR} names {path!r}, which cannot be read ({exc.strerror})") from None
    if mode & stat.S_IROTH:
        log.warning(
            "%s %r is readable by every user: chmod 600 it (Kubernetes: defaultMode: 0440 and fsGroup)",
            ENV_VAR,
            path,
        )
    text = data.decode("utf-8", "replace").strip()
    raw = _parse_json(path, text) if text.startswith("{") else _parse_env(path, text)
    found: dict[str, str] = {}
    for key, value in raw.items():
        name = _ALIASES.get(key, key)
        if name not in _NAMES:
            raise ConfigError(
                f"{ENV_VAR} {path!r}: unknown setting {key!r} (use project, token, jwt_token, space, "
                "or SIGNALWIRE_PROJECT_ID, SIGNALWIRE_API_TOKEN, SIGNALWIRE_JWT_TOKEN, SIGNALWIRE_SPACE)"
            )
        if value:
            found[name] = value
    return found


def _parse_json(path: str, text: str) -> dict[str, str]:
    try:
        value: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ConfigError(f"{ENV_VAR} {path!r} starts with '{{' but is not valid JSON") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"{ENV_VAR} {path!r}: the JSON must be an object of strings")
    return value


def _parse_env(path: str, text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{ENV_VAR} {path!r} line {number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[key.strip()] = value
    return found
