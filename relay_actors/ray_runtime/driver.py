"""The Ray runtime, driver side: start, join, drain and stop an app's actors.

``RelayClient(..., runtime="ray")`` uses this. It attaches to the Ray cluster the
driver runs in (``ray job submit``, ``RAY_ADDRESS``) or starts a local Ray of its
own (``address="local"``, kept on 127.0.0.1). An app is a named set of detached
actors (``relay:<app>:router``, ``relay:<app>:connection:<n>``, ``relay:<app>:call:<n>``
in the ``relay_actors`` namespace) plus its record and secrets in the GCS
key-value store (:mod:`relay_actors.ray_runtime.kvstore`; credentials never travel as actor
arguments, which Ray's dashboard shows).

Lifecycle, on purpose and never by accident:

* a driver that finds no app of its name **creates** it and owns it: its
  :meth:`RayRuntime.stop` (``disconnect()``) stops the app;
* a driver that finds the app running fails with a ``RelayError("app_running")``
  naming the way out, unless it asked to **join** (``RayOptions(join=True)``) with
  the same configuration (compared as an HMAC fingerprint stored in the record);
  a joined driver's ``stop()`` leaves the app alone;
* a driver that asks to **upgrade** it (``RayOptions(upgrade=True)``,
  ``relay-actors run --upgrade``) with the same settings but new handler code
  deploys that code as a new generation of CallActors (see
  :meth:`~relay_actors.ray_runtime.router.Router.upgrade`): new calls go to it, the
  older CallActors drain and are stopped, no call is dropped; the app's ownership
  moves to this driver, and the previous owner sees it and exits, leaving the app;
* :func:`~relay_actors.ray_runtime.app_control.stop_app` (``relay-actors stop APP``)
  drains and stops an app from anywhere, including one whose driver is gone; a start
  that finds a record whose actors are gone (a crash) reclaims it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..config import Settings
from ..errors import RelayError, unwrap_remote
from ..protocol import constants as c
from . import kvstore, tracing_setup  # tracing hook: tracing_setup
from .actor_messages import actor_name
from .app_control import actor_or_none, call_with_timeout, drain_app, teardown_app
from .app_lifecycle import (
    AppRecord,
    DriverInfo,
    Ownership,
    StartAction,
    app_gone,
    create_race,
    decide_start,
    handover_notice,
    ownership,
)
from .driver_requests import DriverRequests
from .options import ConnectionActorOptions, RayOptions, RouterOptions, call_actor_app_part
from .ray_attach import ensure_ray
from .shard_handles import ShardHandle, shard_handle
from .spawn import spawn_control_actor

__all__ = ["RayRuntime"]

log = logging.getLogger("relay_actors.ray_runtime")

#: How long the driver waits for the router and the connection actors to be ready.
START_TIMEOUT = 120.0


# --- the app's identity ---------------------------------------------------------------------


def config_fingerprint(
    settings: Settings,
    options: RayOptions,
    handlers: dict[str, Any],
    client_options: dict[str, Any],
    with_handlers: bool = True,
) -> str:
    """An HMAC of the app's configuration under its credentials: two drivers with the
    same credentials and settings get the same value; it reveals neither. Without the
    handlers: what an upgrade must keep."""
    creds = settings.credentials
    config = {
        "host": settings.host,
        "scheme": settings.scheme,
        "contexts": sorted(settings.contexts),
        "max_active_calls": settings.max_active_calls,
        "connections": options.connections,
        "call_actors": [options.min_call_actors, options.max_call_actors, options.calls_per_actor],
        "placement": options.placement,
        "on_call_actor_lost": options.on_call_actor_lost,
        "control_resource": options.control_resource,
        "link_linger": options.link_linger,
        "standby_connections": options.standby_connections,
        "client": {k: client_options.get(k) for k in sorted(client_options)},
        "handlers": {
            k: f"{getattr(h, '__module__', '')}.{getattr(h, '__qualname__', '')}" if h else None
            for k, h in sorted(handlers.items())
        }
        if with_handlers
        else None,
    }
    key = f"{creds.project}\0{creds.token}\0{creds.jwt_token}".encode()
    return hmac.new(key, orjson.dumps(config, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()


class RayRuntime:
    """Starts (or joins), reaches and stops one app's actors (see the module docstring)."""

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
        #: True once this driver created the app: then (and only then) stop() stops it.
        self.owner = False
        self.record: AppRecord | None = None
        #: What the driver asks of the app once it is up (requests, dials, messages, reads).
        self.requests = DriverRequests(
            self,
            float(client_options.get("request_timeout") or c.REQUEST_TIMEOUT),
            float(client_options.get("dial_timeout") or c.DIAL_TIMEOUT),
        )
        #: This driver's mark in the app's record while it owns the app (an upgrade
        #: moves the ownership: the record then names another driver).
        self.owner_id = os.urandom(8).hex()
        #: The code generation this driver deployed (0: the app's first).
        self.generation = 0
        #: Set when another driver took the app over (an upgrade): the line to end with.
        self.handed_over: str | None = None
        #: ``(step, time.monotonic())`` as :meth:`start` went (``benchmarks/bench_start.py`` reads them).
        self.start_steps: list[tuple[str, float]] = []
        # The CA certificate (public) travels to the connection actors as text.
        self._ca_pem: str | None = None
        if settings.ca_file:
            with open(settings.ca_file) as fh:
                self._ca_pem = fh.read()

    @property
    def app(self) -> str:
        return self.options.name

    def _name(self, role: str, index: int | None = None) -> str:
        return actor_name(self.app, role, index)

    async def start(self) -> None:
        """Create the app, join it (``join=True``), upgrade it (``upgrade=True``), reclaim
        a crashed one, or refuse with a clear error (see
        :func:`~relay_actors.ray_runtime.app_lifecycle.decide_start`)."""
        self._step("start")
        self.started_ray = ensure_ray(self.options.address, **self.options.init_kwargs)
        self._step("ray attached")
        fingerprint = config_fingerprint(self.settings, self.options, self.handlers, self.client_options)
        stored = await kvstore.read_record(self.app)
        record = AppRecord.from_dict(stored) if stored is not None else None
        self._step("app record read")
        decision = decide_start(
            self.app,
            record,
            actor_or_none(self._name("router")) is not None,
            join=self.options.join,
            upgrade=self.options.upgrade,
            fingerprint=fingerprint,
            settings_fingerprint=self._settings_fingerprint(),
            now=time.time(),
        )
        if decision.error is not None:
            raise decision.error
        if decision.action is StartAction.RECLAIM:
            assert record is not None
            log.warning(
                "reclaiming Ray app %r, whose router is gone (%s)", self.app, record.describe(time.time())
            )
            await teardown_app(self.app, stored)  # its records, and any actor of it left behind
            await self._create(fingerprint)
        elif decision.action is StartAction.CREATE:
            await self._create(fingerprint)
        else:
            assert record is not None
            await self._attach(record)
            if decision.action is StartAction.UPGRADE:
                await self._upgrade(record, fingerprint)
            else:
                log.info("joined running Ray app %r (%s)", self.app, record.describe(time.time()))

    def _step(self, name: str) -> None:
        self.start_steps.append((name, time.monotonic()))

    def _settings_fingerprint(self) -> str:
        return config_fingerprint(
            self.settings, self.options, self.handlers, self.client_options, with_handlers=False
        )

    def _driver_info(self) -> DriverInfo:
        import ray

        return DriverInfo(os.getpid(), ray.util.get_node_ip_address(), ray.get_runtime_context().get_job_id())

    async def _attach(self, record: AppRecord) -> None:
        """Reach the running app's actors and wait until they are ready."""
        self.record = record
        self.router = self._get(self._name("router"))
        self.connections = [shard_handle(self.app, shard) for shard in range(record.connections)]
        await self._wait_ready()

    async def _upgrade(self, record: AppRecord, fingerprint: str) -> None:
        """Deploy this driver's handlers to the running app as its next generation and
        take the app over (see the module docstring)."""
        from ray import cloudpickle

        app = self.app
        try:
            result = await call_with_timeout(
                self.router.upgrade.remote(
                    cloudpickle.dumps(self.handlers),
                    self._call_actor_options(),
                    float(self.options.upgrade_drain_timeout),
                ),
                START_TIMEOUT,
            )
        except Exception as exc:  # the router's RelayError arrives wrapped by Ray
            cause = getattr(exc, "cause", exc)
            if isinstance(cause, RelayError):
                raise RelayError(cause.code, cause.message, failure=cause.failure) from None
            raise RelayError("upgrade_failed", f"upgrade of Ray app {app!r} failed: {exc!r}") from None
        # The app is this driver's from now on; the previous owner sees the record change.
        current = await kvstore.read_record(app)
        self.record = (AppRecord.from_dict(current) if current else record).taken_over(
            fingerprint=fingerprint,
            driver=self._driver_info(),
            owner=self.owner_id,
            generation=int(result["generation"]),
        )
        await kvstore.update_record(app, self.record.to_dict())
        self.owner = True
        self.generation = self.record.generation
        log.info(
            "upgraded Ray app %r to generation %d: new calls go to CallActors %s; CallActors %s drain "
            "(up to %g s) and stop",
            app,
            self.generation,
            result["call_actors"],
            result["retiring"],
            self.options.upgrade_drain_timeout,
        )

    def _get(self, name: str) -> Any:
        handle = actor_or_none(name)
        if handle is None:
            raise app_gone(name)
        return handle

    async def _create(self, fingerprint: str) -> None:
        from .actor_link import new_secret
        from .link_tls import generate_identity

        app = self.app
        record = AppRecord(
            app=app,
            state="starting",
            created=time.time(),
            secrets=os.urandom(16).hex(),
            fingerprint=fingerprint,
            settings_fingerprint=self._settings_fingerprint(),
            owner=self.owner_id,
            # A local Ray this driver started ends with it: such an app cannot be handed over.
            local_ray=self.started_ray,
            driver=self._driver_info(),
            host=self.settings.host,
            contexts=tuple(self.settings.contexts),
            connections=self.options.connections,
            max_call_actors=self.options.max_call_actors,
            max_active_calls=self.settings.max_active_calls,
        )
        if not await kvstore.create_record(app, record.to_dict()):
            raise create_race(app)
        self.owner = True
        self.record = record
        creds = self.settings.credentials
        secrets = kvstore.AppSecrets(app, kvstore.secrets_namespace(record.to_dict()))
        await secrets.store(
            {"project": creds.project, "token": creds.token, "jwt_token": creds.jwt_token},
            new_secret(),
            generate_identity(),
        )
        await tracing_setup.store(secrets)  # tracing hook
        self._step("secrets stored")
        self._create_actors()
        self._step("actors asked for")
        await self._wait_ready()
        self.record = dataclasses.replace(record, state="running")
        await kvstore.update_record(app, self.record.to_dict())
        self._step("record running")

    def _call_actor_options(self) -> dict[str, Any]:
        """What CallActors are given besides the handlers (no secrets)."""
        import ray

        return call_actor_app_part(
            self.settings,
            self.options,
            self.client_options,
            log_level=logging.getLogger().getEffectiveLevel(),
            log_job=ray.get_runtime_context().get_job_id(),
        )

    def _create_actors(self) -> None:
        from ray import cloudpickle

        from .connection_actor import ConnectionActor
        from .router import Router

        handlers = cloudpickle.dumps(self.handlers)
        router_options = RouterOptions.for_app(
            self.settings, self.options, handlers, self._call_actor_options()
        )
        self._start_call_actors(router_options)
        control = self.options.control_resource
        self.router = spawn_control_actor(
            self.app, "router", None, Router, (self.app, router_options), control_resource=control
        )
        conn_options = ConnectionActorOptions.for_app(
            self.settings, self.options, self.client_options, self._ca_pem
        )
        mains = [
            spawn_control_actor(
                self.app,
                "connection",
                shard,
                ConnectionActor,
                (self.app, shard, conn_options),
                control_resource=control,
                max_task_retries=0,
            )
            for shard in range(self.options.connections)
        ]
        standbys = [
            # Each shard's warm spare (see shard_standby), beside it on this node.
            spawn_control_actor(
                self.app,
                "standby",
                shard,
                ConnectionActor,
                (self.app, shard, conn_options, "standby"),
                control_resource=control,
                max_task_retries=0,
            )
            if conn_options.standby
            else None
            for shard in range(self.options.connections)
        ]
        self.connections = [
            ShardHandle(self.app, shard, main, standby)
            for shard, (main, standby) in enumerate(zip(mains, standbys, strict=True))
        ]

    def _start_call_actors(self, router_options: RouterOptions) -> None:
        """A new app's first CallActors, created here beside the router rather than by it
        once it is up: their processes start in parallel with its (one process start off
        the time to ready). The router adopts them by name, as a restarted router adopts
        its pool; where each goes is the pool core's choice, as the router would make it."""
        import ray

        from .router import CallActors, hosting_nodes, new_pool

        pool = new_pool(router_options)
        if pool.spread:
            pool.set_nodes(hosting_nodes(ray.nodes()))
        actors = CallActors(self.app, router_options)
        for spawn in pool.fill():
            actors.create(spawn, pool.handlers, pool.call_actor_options)

    async def _wait_ready(self) -> None:
        """The router first (it creates the pool the shards link to), then every shard."""
        try:
            await asyncio.wait_for(self.router.ready.remote(), START_TIMEOUT)
            self._step("router ready")
            # Every shard's answer is taken (no "unhandled error" from Ray for the others);
            # a RelayError (rejected credentials, bad settings) comes out as itself, not
            # wrapped in Ray's traceback.
            answers = await asyncio.wait_for(
                asyncio.gather(*(conn.ready.remote() for conn in self.connections), return_exceptions=True),
                START_TIMEOUT,
            )
            failed = next((a for a in answers if isinstance(a, BaseException)), None)
            if failed is not None:
                raise unwrap_remote(failed) from None
            self._step("shards ready")
        except asyncio.TimeoutError:
            raise RelayError(
                "timeout", f"Ray app {self.app!r} did not come up within {START_TIMEOUT:.0f} s"
            ) from None

    async def drain(self, timeout: float, progress: Callable[[str], None] | None = None) -> int:
        """Stop taking offers and wait up to ``timeout`` s for active calls to end;
        returns the calls still active."""
        record = self.record.to_dict() if self.record is not None else None
        return await drain_app(self.app, record, self.connections, self.router, timeout, progress)

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """Stop the app if this driver created it (draining first for ``drain_timeout``
        s); a driver that joined a running app leaves it alone."""
        owner, self.owner = self.owner, False
        if owner and await self._still_ours():
            if drain_timeout > 0:
                await self.drain(drain_timeout)
            await teardown_app(self.app, self.record.to_dict() if self.record is not None else None)
        self.connections = []
        self.router = None

    async def _ownership(self, as_owner: bool = True) -> tuple[Ownership, AppRecord | None]:
        """Whose the app is now (:func:`~relay_actors.ray_runtime.app_lifecycle.ownership`),
        and its stored record. The KV store unreachable: ours (stop what we can)."""
        try:
            stored = await kvstore.read_record(self.app)
        except Exception:
            return Ownership.OURS, self.record
        current = AppRecord.from_dict(stored) if stored is not None else None
        if self.record is None:
            return Ownership.OURS, current
        return ownership(self.record, current, as_owner=as_owner), current

    async def _still_ours(self, as_owner: bool = True) -> bool:
        """The app's record is still this deploy's (not stopped, nor replaced, elsewhere)
        and, ``as_owner``, still names this driver as its owner (no upgrade took it over)."""
        return (await self._ownership(as_owner))[0] is Ownership.OURS

    async def stopped_elsewhere(self, interval: float = 2.0) -> None:
        """Return once the app was stopped by someone else (``relay-actors stop APP``),
        or, if this driver owns it, taken over by an upgrade (:attr:`handed_over` says so)."""
        # The KV store has no watch: poll the record, every ``interval`` s.
        while (found := await self._ownership(as_owner=self.owner))[0] is Ownership.OURS:  # noqa: ASYNC110
            await asyncio.sleep(interval)
        outcome, current = found
        if outcome is Ownership.HANDED_OVER and current is not None:
            self.handed_over = handover_notice(self.app, current)
            # Success, not a warning; said once, by whoever ran the app (its last line).
            log.debug("%s", self.handed_over)
            return
        log.warning("Ray app %r was stopped elsewhere (relay-actors stop); this driver ends", self.app)
