"""Per-session record of every frame in and out, with credentials masked."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import orjson

__all__ = ["Journal", "mask_credentials"]

#: Keys whose values are credentials: never shown in the journal.
SECRET_KEYS = frozenset({"token", "jwt_token", "authorization_state"})


def mask_credentials(value: Any) -> Any:
    """A copy of ``value`` with every credential value replaced by ``***``."""
    if isinstance(value, dict):
        return {k: "***" if k in SECRET_KEYS else mask_credentials(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_credentials(v) for v in value]
    return value


class Journal:
    """Bounded frame log keyed by session protocol (``""`` before a successful connect).

    Frames are kept as they crossed the wire and decoded (and masked) only when
    read: recording sits on the emulator's hot path, reading does not.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: dict[str, deque[tuple[float, str, str | bytes]]] = {}

    def record(self, session: str, direction: str, data: str | bytes) -> None:
        """Store one frame; ``direction`` is ``in`` (client->server) or ``out``."""
        entries = self._entries.get(session)
        if entries is None:
            entries = self._entries[session] = deque(maxlen=self.limit)
        entries.append((time.time(), direction, data))

    def frames(self, session: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Frames per session (one session when ``session`` is given), credentials masked."""
        if session is not None:
            return {session: [_decoded(entry) for entry in self._entries.get(session, ())]}
        return {key: [_decoded(entry) for entry in entries] for key, entries in self._entries.items()}

    def rename(self, old: str, new: str) -> None:
        """Move the frames recorded before connect under the session's protocol."""
        entries = self._entries.pop(old, None)
        if entries:
            self._entries.setdefault(new, deque(maxlen=self.limit)).extend(entries)

    def clear(self) -> None:
        """Forget every frame."""
        self._entries.clear()


def _decoded(entry: tuple[float, str, str | bytes]) -> dict[str, Any]:
    t, direction, data = entry
    try:
        frame: Any = mask_credentials(orjson.loads(data))
    except orjson.JSONDecodeError:
        frame = {"raw": data if isinstance(data, str) else data.decode("utf-8", "replace")}
    return {"t": t, "dir": direction, "frame": frame}
