"""The Ray runtime, driver side: start (or re-adopt) the app's actors and talk to them.

``RelayClient(..., runtime="ray")`` uses this. It attaches to the Ray cluster
the driver runs in (``ray job submit``, ``RAY_ADDRESS``) or starts a local one
kept on 127.0.0.1; stores the credentials in the GCS key-value store (never in
actor arguments, which Ray's dashboard shows); creates the router (which
creates the CallActor pool) and ``connections`` connection actors, all named
and detached in the ``relay_actors`` namespace; and stops what it started on
:meth:`RayRuntime.stop`. Actors of the same app that already run (a driver
restarted) are re-adopted, not duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from . import kvstore
from .actor_messages import NAMESPACE, actor_name
from .config import Settings
from .errors import ArgumentError, RelayError

__all__ = ["RayOptions", "RayRuntime", "RemoteCall", "ensure_ray"]

log = logging.getLogger("relay_actors.ray_runtime")


@dataclass
class RayOptions:
    """How the app is laid out on Ray.

    Attributes:
        app: the app's name; actor names and stored state derive from it.
        connections: connection actors (sessions on the same contexts; the service
            spreads offers over them).
        min_call_actors, max_call_actors: CallActor pool size bounds.
        calls_per_actor: calls one CallActor hosts at most.
        placement: ``"spread"`` over the nodes, or ``{"resource": "relay_calls"}`` to
            pin CallActors to nodes that offer that custom resource.
        call_actor_cpus: Ray CPUs reserved per CallActor.
        on_call_actor_lost: ``"hangup"`` (default: end the calls, count them) or
            ``"rehome"`` (move them to another CallActor with ``call.recovered``).
        address: Ray address to attach to (default: ``RAY_ADDRESS``, else a local Ray).
        control_resource: a custom resource that pins the control plane (router,
            connection actors) to the nodes offering it, e.g. a dedicated head; by
            default it stays on the driver's node when it can.
    """

    app: str = "default"
    connections: int = 1
    min_call_actors: int = 2
    max_call_actors: int = 8
    calls_per_actor: int = 5000
    placement: Any = "spread"
    call_actor_cpus: float = 0.1
    on_call_actor_lost: str = "hangup"
    address: str | None = None
    control_resource: str | None = None
    init_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ArgumentError("connections must be at least 1")
        if self.min_call_actors < 1 or self.max_call_actors < self.min_call_actors:
            raise ArgumentError("need 1 <= min_call_actors <= max_call_actors")
        if self.on_call_actor_lost not in ("hangup", "rehome"):
            raise ArgumentError("on_call_actor_lost must be 'hangup' or 'rehome'")
        if not self.app or ":" in self.app or "/" in self.app:
            raise ArgumentError(f"app must be a simple name, not {self.app!r}")


def ensure_ray(address: str | None = None, **init_kwargs: Any) -> bool:
    """Attach to Ray, or start a local one on loopback. Returns True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=NAMESPACE, **init_kwargs)
        return False
    # A local Ray of our own: keep every socket on 127.0.0.1 and stay quiet.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {
        "namespace": NAMESPACE,
        "_node_ip_address": "127.0.0.1",
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        **init_kwargs,
    }
    ray.init(**kwargs)
    return True


@dataclass
class RemoteCall:
    """A call dialled from the driver on Ray: it lives (with its handler) in a CallActor."""

    call_id: str
    node_id: str
    tag: str
    actor: int
    _runtime: RayRuntime = field(repr=False)

    async def hangup(self, reason: str = "hangup") -> dict[str, Any]:
        return await self._runtime.execute(
            "calling.end", {"call_id": self.call_id, "node_id": self.node_id, "reason": reason}
        )

    async def execute(self, verb: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send ``calling.<verb>`` for this call."""
        payload = {"call_id": self.call_id, "node_id": self.node_id, **(params or {})}
        return await self._runtime.execute(f"calling.{verb}", payload)


class RayRuntime:
    """Starts, reaches and stops the app's actors (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        options: RayOptions,
        handlers: dict[str, Any],
        client_options: dict[str, Any],
    ) -> None:
        self.settings = settings
        self.options = options
        self.handlers = handlers
        self.client_options = client_options
        self.router: Any = None
        self.connections: list[Any] = []
        self.started_ray = False
        self._created: list[Any] = []
        self._rr = 0
        # The CA certificate (public) travels to the connection actors as text.
        self._ca_pem: str | None = None
        if settings.ca_file:
            with open(settings.ca_file) as fh:
                self._ca_pem = fh.read()

    def _name(self, role: str, index: int | None = None) -> str:
        return actor_name(self.options.app, role, index)

    async def start(self) -> None:
        self.started_ray = ensure_ray(self.options.address, **self.options.init_kwargs)
        creds = self.settings.credentials
        await kvstore.put(
            f"{self.options.app}/credentials",
            {"project": creds.project, "token": creds.token, "jwt_token": creds.jwt_token},
        )
        # The secret that authenticates the direct links between actors: kept when
        # re-adopting running actors (they hold it), made afresh otherwise.
        if not await kvstore.get(f"{self.options.app}/link_secret"):
            from .actor_link import new_secret

            await kvstore.put(f"{self.options.app}/link_secret", new_secret())
        from ray import cloudpickle

        handlers = cloudpickle.dumps(self.handlers)
        router_options = {
            "max_active_calls": self.settings.max_active_calls,
            "shards": self.options.connections,
            "min_actors": self.options.min_call_actors,
            "max_actors": self.options.max_call_actors,
            "capacity": self.options.calls_per_actor,
            "placement": self.options.placement,
            "num_cpus": self.options.call_actor_cpus,
            "handlers": handlers,
            "call_actor": {
                "handler_timeout": self.client_options.get("handler_timeout"),
                "request_timeout": self.client_options.get("request_timeout"),
                "dial_timeout": self.client_options.get("dial_timeout"),
            },
        }
        from .router import Router

        self.router = self._get_or_create(
            self._name("router"), Router, (self.options.app, router_options), num_cpus=0
        )
        await self.router.ready.remote()
        conn_options = {
            "host": self.settings.host,
            "scheme": self.settings.scheme,
            "contexts": list(self.settings.contexts),
            "ca_pem": self._ca_pem,
            "over_limit": self.client_options.get("over_limit", "drop"),
            "request_timeout": self.client_options.get("request_timeout"),
            "ping_interval": self.client_options.get("ping_interval"),
            "on_call_actor_lost": self.options.on_call_actor_lost,
        }
        from .connection_actor import ConnectionActor

        self.connections = [
            self._get_or_create(
                self._name("connection", shard),
                ConnectionActor,
                (self.options.app, shard, conn_options),
                num_cpus=0,
                max_task_retries=0,
            )
            for shard in range(self.options.connections)
        ]
        await asyncio.gather(*(conn.ready.remote() for conn in self.connections))

    def _get_or_create(self, name: str, cls: type, args: tuple[Any, ...], **opts: Any) -> Any:
        import ray

        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            pass
        if self.options.control_resource:
            opts["resources"] = {self.options.control_resource: 0.001}
        elif "scheduling_strategy" not in opts:
            # The control plane (router, connection actors) stays on the driver's node when
            # it can (soft): with no CPUs asked, Ray otherwise scatters it over worker nodes,
            # and losing a worker node then restarts the session too, not just CallActors.
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=True
            )
        handle: Any = (
            ray.remote(cls)
            .options(
                name=name,
                namespace=NAMESPACE,
                lifetime="detached",
                max_restarts=-1,
                max_concurrency=10_000,
                get_if_exists=True,
                **opts,
            )
            .remote(*args)
        )
        self._created.append(handle)
        return handle

    async def stop(self) -> None:
        """Close the sessions, stop handlers, remove the actors and the stored credentials."""
        import ray

        for conn in self.connections:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.shutdown.remote(), 10.0)
        pool: list[Any] = []
        if self.router is not None:
            with contextlib.suppress(Exception):
                pool = [h for _, h, _ in await asyncio.wait_for(self.router.pool_info.remote(), 10.0)]
        for handle in pool:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(handle.shutdown.remote(), 10.0)
        for handle in [*self.connections, *pool, self.router]:
            if handle is not None:
                with contextlib.suppress(Exception):
                    ray.kill(handle, no_restart=True)
        shards = (
            f"shard/{s}/{what}"
            for s in range(self.options.connections)
            for what in ("resume", "incarnation", "unconfirmed")
        )
        for key in ("credentials", "link_secret", "router_epoch", *shards):
            with contextlib.suppress(Exception):
                await kvstore.delete(f"{self.options.app}/{key}")
        self.connections = []
        self.router = None

    # --- requests from the driver ----------------------------------------------------

    def _conn(self) -> Any:
        if not self.connections:
            raise RelayError("closed", "the Ray runtime is not running")
        self._rr = (self._rr + 1) % len(self.connections)
        return self.connections[self._rr]

    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self._conn().execute.remote(method, params)

    async def receive(self, contexts: list[str], method: str) -> None:
        # Every shard receives the same contexts: the service spreads offers over them.
        await asyncio.gather(
            *(conn.execute.remote(method, {"contexts": contexts}) for conn in self.connections)
        )

    async def _call_actor(self) -> Any:
        pool = await self.router.pool_info.remote()
        if not pool:
            raise RelayError("closed", "no CallActor is running")
        self._rr = (self._rr + 1) % len(pool)
        return pool[self._rr][1]

    async def dial(self, devices: Any, handler: Any, options: dict[str, Any]) -> RemoteCall:
        from ray import cloudpickle

        actor = await self._call_actor()
        blob = cloudpickle.dumps(handler) if handler is not None else None
        info = await actor.dial_remote.remote(devices, blob, options)
        return RemoteCall(info["call_id"], info["node_id"], info["tag"], info["actor"], self)

    async def send_message(self, params: dict[str, Any], wait: float | None) -> dict[str, Any]:
        actor = await self._call_actor()
        return await actor.send_message_remote.remote(params, wait)

    async def protocol(self) -> str:
        if not self.connections:
            return ""
        return (await self.connections[0].stats.remote())["protocol"]

    async def stats(self) -> dict[str, Any]:
        router = await self.router.stats.remote() if self.router is not None else {}
        shards = await asyncio.gather(*(c.stats.remote() for c in self.connections), return_exceptions=True)
        pool = await self.router.pool_info.remote() if self.router is not None else []
        actors = await asyncio.gather(*(h.stats.remote() for _, h, _ in pool), return_exceptions=True)
        return {
            "router": router,
            "connections": [s for s in shards if not isinstance(s, BaseException)],
            "call_actors": [a for a in actors if not isinstance(a, BaseException)],
        }
