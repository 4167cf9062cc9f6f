"""Small helpers shared by the method handlers: result shapes and parameter checks."""

from __future__ import annotations

from typing import Any

__all__ = ["InvalidParams", "require", "result"]


class InvalidParams(Exception):
    """A request lacks a required parameter: answered with a JSON-RPC ``INVALID_PARAMS`` error."""


def require(params: dict[str, Any], *names: str) -> None:
    """Raise :class:`InvalidParams` naming the first of ``names`` absent or null in ``params``."""
    for name in names:
        if params.get(name) is None:
            raise InvalidParams(f"missing required parameter {name!r}")


def result(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """A RELAY result: string ``code``, ``message`` and extra fields."""
    return {"code": code, "message": message, **extra}
