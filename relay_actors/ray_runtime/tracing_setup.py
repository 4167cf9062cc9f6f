"""Tracing on Ray: the driver's ``OTEL_*`` variables travel to the actors with the app's secrets.

The driver stores the variables (:func:`store`) in the deploy's secrets namespace of
Ray's KV store, next to the credentials: ``OTEL_EXPORTER_OTLP_HEADERS`` may hold an
API key, so they are never actor arguments nor a runtime env (both show in Ray's
dashboard). Each actor reads them when it starts (:func:`configure`) and turns
:mod:`relay_actors.tracing` on with a resource naming its app, role, node and name.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from .. import tracing
from . import kvstore

__all__ = ["KEY", "configure", "store"]

log = logging.getLogger("relay_actors.ray_runtime.tracing_setup")

#: The key of the variables in the app's secrets namespace.
KEY = "otel"


async def store(secrets: kvstore.AppSecrets) -> None:
    """The driver's part: keep this process's ``OTEL_*`` variables for the actors
    ({} when tracing is not asked for: the actors then import nothing of it)."""
    await secrets.save(KEY, tracing.environment())


async def configure(secrets: kvstore.AppSecrets, role: str, name: str = "") -> bool:
    """An actor's part: turn tracing on if the driver asked for it. Never fails the actor
    (a broken exporter setting costs the traces, not the calls)."""
    try:
        env = await secrets.load(KEY)
        if not env:
            return False
        return tracing.setup(app=secrets.app, role=role, env=env, resource=_where(name))
    except Exception:
        log.exception("tracing could not be set up; this actor runs without it")
        return False


def _where(name: str) -> dict[str, Any]:
    """This actor's node and name (resource attributes; ``name`` if Ray has none for it)."""
    import ray

    found: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        ctx = ray.get_runtime_context()
        found["ray.node_id"] = ctx.get_node_id()
        found["ray.actor_id"] = ctx.get_actor_id() or ""
        found["ray.actor.name"] = ctx.get_actor_name() or name
        found["host.ip"] = ray.util.get_node_ip_address()
    return found
