"""Operating an app by name from any process attached to its cluster: its live status,
the list of apps, drain and stop (``relay-actors status``/``stop``, the demo's metrics
link, and the driver's own drain and stop), over its actors' names and its KV records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import RelayError
from ..protocol import constants as c
from . import kvstore
from .actor_messages import NAMESPACE, actor_name
from .app_lifecycle import status_report
from .ray_attach import attach_ray, node_ips

__all__ = [
    "CALL_TIMEOUT",
    "active_calls",
    "actor_or_none",
    "app_actor_names",
    "app_status",
    "call_with_timeout",
    "drain_app",
    "list_apps",
    "metrics_endpoint",
    "stop_app",
    "teardown_app",
]

log = logging.getLogger("relay_actors.ray_runtime")

#: Every control call to an actor has this deadline.
CALL_TIMEOUT = 10.0


def actor_or_none(name: str) -> Any:
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def app_actor_names(app: str) -> list[str]:
    import ray

    prefix = f"relay:{app}:"
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a.get("namespace") == NAMESPACE and a["name"].startswith(prefix)
    )


async def call_with_timeout(ref: Any, timeout: float = CALL_TIMEOUT) -> Any:
    return await asyncio.wait_for(ref, timeout)


async def drain_app(
    app: str,
    record: dict[str, Any] | None,
    connections: list[Any],
    router: Any,
    timeout: float,
    progress: Callable[[str], None] | None,
) -> int:
    """Unsubscribe every shard from the app's contexts (the service then offers new calls
    to other consumers, or to nobody), then wait for the active calls to end."""
    say = progress or (lambda line: log.info("%s", line))
    contexts = list((record or {}).get("contexts") or [])
    if contexts:
        results = await asyncio.gather(
            *(
                call_with_timeout(conn.execute.remote(c.METHOD_UNRECEIVE, {"contexts": contexts}))
                for conn in connections
            ),
            return_exceptions=True,
        )
        for shard, result in enumerate(results):
            if isinstance(result, BaseException):
                log.warning("app %r shard %d: unreceive failed (%r)", app, shard, result)
    active = await active_calls(router, connections)
    if active:
        calls = f"{active} active call{'s' * (active != 1)}"
        say(f"draining {app}: {calls}, new offers refused (up to {timeout:g} s)")
    deadline = time.monotonic() + timeout
    while active and time.monotonic() < deadline:
        # Polling the router (no event to wait on across processes), with a deadline.
        await asyncio.sleep(0.25)
        active = await active_calls(router, connections)
    return active


async def active_calls(router: Any, connections: list[Any]) -> int:
    """Active calls by the router's table and by the shards' own (the router learns of
    calls in batches, a little later): the larger. Unreachable actors count 0."""
    asks = [router.active.remote()] if router is not None else []
    asks += [conn.lease_state.remote() for conn in connections]
    answers = await asyncio.gather(*(call_with_timeout(a) for a in asks), return_exceptions=True)
    counts = [a for a in answers if not isinstance(a, BaseException)]
    by_router = int(counts[0]["calls"]) if router is not None and counts and "calls" in counts[0] else 0
    by_shards = sum(int(a.get("in_use", 0)) for a in counts if "in_use" in a)
    return max(by_router, by_shards)


async def teardown_app(app: str, record: dict[str, Any] | None) -> int:
    """Shut the app's actors down (sessions first), kill them, delete its KV records.
    Returns the number of actors removed."""
    import ray

    names = app_actor_names(app)
    handles = {name: actor_or_none(name) for name in names}
    handles = {name: h for name, h in handles.items() if h is not None}

    async def shutdown(role: str) -> None:
        await asyncio.gather(
            *(call_with_timeout(h.shutdown.remote()) for n, h in handles.items() if n.split(":")[2] == role),
            return_exceptions=True,
        )

    for role in ("connection", "call", "router"):
        await shutdown(role)
    for handle in handles.values():
        with contextlib.suppress(Exception):
            ray.kill(handle, no_restart=True)
    await kvstore.delete_app(app, record)
    return len(handles)


async def stop_app(
    app: str,
    *,
    address: str | None = None,
    drain_timeout: float = 30.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Drain and stop the Ray app ``app`` wherever its driver is (or was): stop taking
    offers, wait up to ``drain_timeout`` s for active calls, shut down and remove its
    actors and its KV records. ``address``: the cluster (else ``RAY_ADDRESS`` or the
    Ray this process is attached to).

    Raises:
        RelayError: ``not_found`` if no app of that name has actors or records.
    """
    attach_ray(address)
    say = progress or (lambda line: log.info("%s", line))
    record = await kvstore.read_record(app)
    names = app_actor_names(app)
    if record is None and not names:
        known = ", ".join(await kvstore.apps()) or "none"
        raise RelayError("not_found", f"no Ray app named {app!r} (apps: {known})")
    router = actor_or_none(actor_name(app, "router"))
    shards = int((record or {}).get("connections", 0)) or sum(":connection:" in n for n in names)
    connections = [h for h in (actor_or_none(actor_name(app, "connection", i)) for i in range(shards)) if h]
    left = await drain_app(app, record, connections, router, drain_timeout, say) if router is not None else 0
    removed = await teardown_app(app, record)
    say(
        f"stopped {app}: {removed} actors removed, records deleted"
        + (f"; {left} calls were still active after the drain timeout" if left else "")
    )
    return {"app": app, "actors_removed": removed, "calls_left": left}


async def list_apps(address: str | None = None) -> list[dict[str, Any]]:
    """Every app with a record: name, state, driver, and whether its router is up."""
    attach_ray(address)
    found = []
    for app in await kvstore.apps():
        record = await kvstore.read_record(app) or {}
        found.append(
            {
                "app": app,
                "state": record.get("state", "?") if actor_or_none(actor_name(app, "router")) else "dead",
                "created": record.get("created"),
                "driver": record.get("driver"),
                "contexts": record.get("contexts"),
                "max_active_calls": record.get("max_active_calls"),
            }
        )
    return found


async def app_status(app: str, *, address: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """One app's live state, from its actors' ``stats()`` (each asked with ``timeout``):
    shards, active calls against the limit, CallActors per node, error counters (see
    :func:`~relay_actors.ray_runtime.app_lifecycle.status_report`)."""
    attach_ray(address)
    record = await kvstore.read_record(app)
    router = actor_or_none(actor_name(app, "router"))
    if record is None and router is None:
        known = ", ".join(await kvstore.apps()) or "none"
        raise RelayError("not_found", f"no Ray app named {app!r} (apps: {known})")
    unreachable: list[str] = []

    async def ask(name: str, ref: Any) -> Any:
        try:
            return await call_with_timeout(ref, timeout)
        except Exception as exc:  # reported, the rest of the table still shows
            unreachable.append(f"{name}: {type(exc).__name__}")
            return None

    router_stats = pool = generations = None
    if router is not None:
        router_stats = await ask("router", router.stats.remote())
        pool = await ask("router", router.pool_info.remote())
        generations = await ask("router", router.generations_info.remote())
    shards = int((record or {}).get("connections", 1))
    conn_handles = [(i, actor_or_none(actor_name(app, "connection", i))) for i in range(shards)]
    conn_stats = await asyncio.gather(
        *(ask(f"connection {i}", h.stats.remote()) for i, h in conn_handles if h is not None)
    )
    actor_stats = await asyncio.gather(*(ask(f"CallActor {i}", h.stats.remote()) for i, h, _ in pool or []))
    return status_report(
        app,
        record,
        router_stats,
        router_up=router is not None,
        capacity={idx: cap for idx, _, cap in pool or []},
        generations=generations,
        shard_stats=conn_stats,
        actor_stats=actor_stats,
        ips=node_ips(),
        unreachable=unreachable,
        now=time.time(),
    )


async def metrics_endpoint(app: str, timeout: float = 5.0) -> dict[str, Any]:
    """``metrics_url`` of the app's endpoint (None if it has none) and ``metrics_error``
    (why not), as its router says."""
    router = actor_or_none(actor_name(app, "router"))
    if router is None:
        return {"metrics_url": None, "metrics_error": f"app {app!r} has no router"}
    stats = await call_with_timeout(router.stats.remote(), timeout)
    return {"metrics_url": stats.get("metrics_url"), "metrics_error": stats.get("metrics_error")}
