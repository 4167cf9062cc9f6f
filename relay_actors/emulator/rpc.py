"""Small helpers shared by the method handlers: result shapes and parameter checks."""

from __future__ import annotations

from typing import Any

__all__ = ["InvalidParams", "require", "require_device_lists", "result"]


class InvalidParams(Exception):
    """A request lacks a required parameter: answered with a JSON-RPC ``INVALID_PARAMS`` error."""


def require(params: dict[str, Any], *names: str) -> None:
    """Raise :class:`InvalidParams` naming the first of ``names`` absent or null in ``params``."""
    for name in names:
        if params.get(name) is None:
            raise InvalidParams(f"missing required parameter {name!r}")


def require_device_lists(params: dict[str, Any]) -> list[Any]:
    """The ``devices`` param (``calling.dial``, ``calling.connect``): present and a list of device
    lists, else :class:`InvalidParams`."""
    require(params, "devices")
    devices = params["devices"]
    if not isinstance(devices, list):
        raise InvalidParams("devices must be a list of device lists")
    return devices


def result(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """A RELAY result: string ``code``, ``message`` and extra fields."""
    return {"code": code, "message": message, **extra}
