"""Typed options: the app's layout on Ray (:class:`RayOptions`, what the user passes) and
one frozen object per actor kind (:class:`RouterOptions`, :class:`ConnectionActorOptions`,
:class:`CallActorOptions`).

The driver builds the actors' from :class:`RayOptions`, the settings and the client's
options (:meth:`RouterOptions.for_app`, :meth:`ConnectionActorOptions.for_app`,
:func:`call_actor_app_part`: plain functions, unit-tested without Ray);
:mod:`~relay_actors.ray_runtime.spawn` hands them to the actors it creates;
each actor reads its fields by name (a typo is a type error, not a silent default).
None holds a secret: actor arguments show in Ray's dashboard. The credentials and the
link secret travel through the app's sealed namespace in the GCS KV store
(:class:`~relay_actors.ray_runtime.kvstore.AppSecrets`), never as an argument.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..config import Settings, is_loopback
from ..errors import ArgumentError
from ..metrics import resolve_metrics_config
from ..protocol import constants as c
from .actor_link import DEFAULT_LINGER, MAX_LINGER

__all__ = [
    "CallActorOptions",
    "ConnectionActorOptions",
    "RayOptions",
    "RouterOptions",
    "call_actor_app_part",
    "default_app_name",
    "sanitize_app_name",
]

_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def default_app_name() -> str:
    """The app's name from the program: ``python ivr.py`` and ``python -m examples.ivr``
    give ``ivr``. Sanitized to letters, digits, ``_``, ``-``; ``relay`` if there is none."""
    main = sys.modules.get("__main__")
    spec_name = str(getattr(getattr(main, "__spec__", None), "name", None) or "")
    parts = [p for p in spec_name.split(".") if p and p != "__main__"]
    name = parts[-1] if parts else ""
    if not name:
        path = getattr(main, "__file__", "") or ""
        name = os.path.splitext(os.path.basename(path))[0]
    return sanitize_app_name(name)


def sanitize_app_name(name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:48]
    return cleaned or "relay"


@dataclass
class RayOptions:
    """How the app is laid out on Ray.

    Attributes:
        app: the app's name; actor names and stored state derive from it. Default:
            the program's name (``ivr`` for ``python ivr.py`` or ``-m examples.ivr``).
        join: if the app already runs, join it (same configuration required) instead
            of failing; a joined driver's ``disconnect()`` leaves the app running.
            With no app running, the driver starts it (and owns it) as usual.
        connections: connection actors (sessions on the same contexts; the service
            spreads offers over them).
        min_call_actors, max_call_actors: CallActor pool size bounds.
        calls_per_actor: calls one CallActor hosts at most.
        placement: ``"spread"`` over the nodes, or ``{"resource": "relay_calls"}`` to
            pin CallActors to nodes that offer that custom resource.
        call_actor_cpus: Ray CPUs reserved per CallActor.
        on_call_actor_lost: ``"hangup"`` (default: end the calls, count them) or
            ``"rehome"`` (move them to another CallActor with ``call.recovered``).
        address: Ray address to attach to (default: ``RAY_ADDRESS``, else a local Ray
            of our own).
        control_resource: a custom resource that pins the control plane (router,
            connection actors) to the nodes offering it, e.g. a dedicated head; by
            default it stays on the driver's node when it can.
        upgrade: if the app already runs, deploy this driver's handlers to it as a
            rolling upgrade (same settings required; the handlers may differ) and take
            it over; with no app running, start it as usual.
        upgrade_drain_timeout: how long the previous generation's calls may go on
            after an upgrade before they are hung up.
        metrics_port: the port of the app's metrics endpoint, served by its router
            (``http://<router node>:<port>/metrics``): default ``RELAY_METRICS_PORT``,
            else 9478; 0 for any free port (``relay-actors status`` shows it), -1 for
            none. Each app on a node needs its own.
        metrics_host: the address it binds: default ``RELAY_METRICS_HOST``, else the
            router node's address (127.0.0.1 for a local Ray); ``0.0.0.0`` only if
            you mean every interface.
        link_linger: the shortest time, in seconds, between two writes of what the
            connection actors and CallActors send each other (default 0: at the end
            of each loop iteration). An item after a quiet spell leaves at once; only
            items that follow a write within the linger wait, up to it, for company.
            At moderate load most of a process's CPU goes to being woken once per
            frame; 0.002 gathers several calls' frames into one write and one wake-up,
            for up to 2 ms more per command and event while traffic flows.
        standby_connections: give each connection actor a warm standby on its node (one
            more process per shard, ~58 MiB): when the serving process dies, the standby
            resumes the session and calls flow again ~0.1 s later, where Ray's restart of
            the process takes 0.6 s or more before the session's resume even begins.
    """

    app: str | None = None
    join: bool = False
    connections: int = 1
    min_call_actors: int = 2
    max_call_actors: int = 8
    calls_per_actor: int = 5000
    placement: Any = "spread"
    call_actor_cpus: float = 0.1
    on_call_actor_lost: str = "hangup"
    address: str | None = None
    control_resource: str | None = None
    metrics_port: int | None = None
    metrics_host: str | None = None
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    upgrade: bool = False
    upgrade_drain_timeout: float = 300.0
    link_linger: float = DEFAULT_LINGER
    standby_connections: bool = False
    #: True when ``app`` was not given (named after the program): ``relay-actors run``
    #: then names the app after the module it runs.
    app_defaulted: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.app is None:
            self.app = default_app_name()
            self.app_defaulted = True
        if self.connections < 1:
            raise ArgumentError("connections must be at least 1")
        if self.min_call_actors < 1 or self.max_call_actors < self.min_call_actors:
            raise ArgumentError("need 1 <= min_call_actors <= max_call_actors")
        if self.join and self.upgrade:
            raise ArgumentError("join and upgrade exclude each other: join shares the running code")
        if self.on_call_actor_lost not in ("hangup", "rehome"):
            raise ArgumentError("on_call_actor_lost must be 'hangup' or 'rehome'")
        if not 0.0 <= self.link_linger <= MAX_LINGER:
            raise ArgumentError(
                f"link_linger must be 0..{MAX_LINGER} seconds (a wait added to every command), "
                f"not {self.link_linger!r}"
            )
        if self.metrics_port is not None and not -1 <= self.metrics_port <= 65535:
            raise ArgumentError(f"metrics_port must be 0..65535 (or -1 for none), not {self.metrics_port}")
        if not isinstance(self.app, str) or not _APP_NAME.match(self.app):
            raise ArgumentError(
                f"app must be a simple name (letters, digits, '_', '-', '.'; up to 63), not {self.app!r}"
            )

    @property
    def name(self) -> str:
        """The app's name (always set after construction)."""
        assert self.app is not None
        return self.app

    def metrics_config(self) -> dict[str, Any]:
        """The endpoint's settings as the router gets them: these options, else the
        driver's environment (actors do not see it), else the defaults."""
        return resolve_metrics_config(self.metrics_port, self.metrics_host)


@dataclass(frozen=True, slots=True)
class RouterOptions:
    """What the router is started with (see :class:`~relay_actors.ray_runtime.router.Router`)."""

    #: The cluster-wide limit of active calls (``Settings.max_active_calls``), leased to
    #: the shards in blocks.
    max_active_calls: int
    #: The app's handlers, cloudpickled: the first generation's code (an upgrade's
    #: replaces it, kept in the KV store).
    handlers: bytes
    #: Connection actors (shards) of the app.
    shards: int = 1
    #: CallActors of the current generation, at least (created at start-up).
    min_actors: int = 1
    #: CallActors of the current generation, at most (the pool grows up to it under load).
    max_actors: int = 1
    #: Calls one CallActor takes (``RayOptions.calls_per_actor``).
    capacity: int = 5000
    #: ``"spread"`` (each new CallActor on the live node with the fewest of the app's), or
    #: ``{"resource": name, "amount": n}`` to pin CallActors to nodes offering that resource.
    placement: str | dict[str, Any] = "spread"
    #: Ray CPUs reserved per CallActor.
    num_cpus: float = 0.1
    #: The app's metrics endpoint (port, host, poll interval: see
    #: :class:`~relay_actors.ray_runtime.metrics_export.MetricsConfig`); None: the defaults.
    metrics: dict[str, Any] | None = None
    #: The app's part of every CallActor's options (field names of
    #: :class:`CallActorOptions`, no secrets); the pool's part (``capacity``, ``shards``) is
    #: added when each is spawned (:meth:`CallActorOptions.from_parts`).
    call_actor: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_actors < self.min_actors:
            object.__setattr__(self, "max_actors", self.min_actors)

    @classmethod
    def for_app(
        cls, settings: Settings, options: RayOptions, handlers: bytes, call_actor: Mapping[str, Any]
    ) -> RouterOptions:
        """A new app's router: its limit, its pool's bounds and placement, the metrics
        endpoint, the first generation's ``handlers`` (cloudpickled) and the app's part of
        every CallActor's options (:func:`call_actor_app_part`)."""
        return cls(
            handlers=handlers,
            max_active_calls=settings.max_active_calls,
            shards=options.connections,
            min_actors=options.min_call_actors,
            max_actors=options.max_call_actors,
            capacity=options.calls_per_actor,
            metrics=options.metrics_config(),
            placement=options.placement,
            num_cpus=options.call_actor_cpus,
            call_actor=dict(call_actor),
        )

    @property
    def spread(self) -> bool:
        """True unless a custom resource pins the CallActors."""
        return not (isinstance(self.placement, dict) and self.placement.get("resource"))


@dataclass(frozen=True, slots=True)
class ConnectionActorOptions:
    """What a connection actor (one shard) is started with (see
    :class:`~relay_actors.ray_runtime.connection_actor.ConnectionActor`). No credentials:
    the actor reads them from the KV store."""

    #: The RELAY host (``host[:port]``).
    host: str
    #: ``"wss"``, or ``"ws"`` where the driver's settings allowed plaintext.
    scheme: str = "wss"
    #: The contexts the session receives on (a resumed session's own win).
    contexts: tuple[str, ...] = ()
    #: The driver passed the plaintext check (loopback, or opted in): the actor, which
    #: sees no environment, must not refuse what was allowed.
    allow_insecure: bool = False
    #: A CA certificate (PEM text, not a secret) the RELAY host's certificate chains to.
    ca_pem: str | None = None
    #: ``"drop"`` or ``"pass"`` an offer over ``max_active_calls``.
    over_limit: str = "drop"
    #: Seconds a RELAY request may take.
    request_timeout: float = c.REQUEST_TIMEOUT
    #: Seconds between the session's pings.
    ping_interval: float = c.CLIENT_PING_INTERVAL
    #: The driver's reconnect delays (:meth:`~relay_actors.backoff.Backoff.options`).
    backoff: Mapping[str, Any] | None = None
    #: ``"hangup"`` or ``"rehome"`` the calls of a lost CallActor.
    on_call_actor_lost: str = "hangup"
    #: Seconds link items may wait for company (``RayOptions.link_linger``).
    link_linger: float = 0.0
    #: The shard has a warm standby (``RayOptions.standby_connections``).
    standby: bool = False
    #: Where the driver found the credentials (a description, no values), for the
    #: message of a rejection.
    credentials_from: str | None = None

    @classmethod
    def for_app(
        cls,
        settings: Settings,
        options: RayOptions,
        client_options: Mapping[str, Any],
        ca_pem: str | None = None,
    ) -> ConnectionActorOptions:
        """A shard's options from the driver's settings, layout and client options
        (``ca_pem``: the text of ``settings.ca_file``, which the actor cannot read)."""
        return cls(
            host=settings.host,
            scheme=settings.scheme,
            # The driver's settings passed the plaintext check (loopback, or opted in):
            # the actor, which sees no environment, must not refuse what was allowed.
            allow_insecure=settings.scheme == "ws" and not is_loopback(settings.host),
            contexts=tuple(settings.contexts),
            ca_pem=ca_pem,
            over_limit=client_options.get("over_limit", "drop"),
            request_timeout=client_options.get("request_timeout", c.REQUEST_TIMEOUT),
            ping_interval=client_options.get("ping_interval", c.CLIENT_PING_INTERVAL),
            backoff=client_options.get("backoff"),
            on_call_actor_lost=options.on_call_actor_lost,
            link_linger=options.link_linger,
            standby=options.standby_connections,
            # Where the driver found the credentials (no values), for a rejection's message.
            credentials_from=settings.credentials_from,
        )


@dataclass(frozen=True, slots=True)
class CallActorOptions:
    """What a CallActor is started with besides its handlers (see
    :class:`~relay_actors.ray_runtime.call_actor.CallActor`). The driver gives the app's
    part as a mapping (:meth:`app_part`: kept by the router, stored with each generation);
    :func:`~relay_actors.ray_runtime.spawn.spawn_call_actor` adds the pool's part."""

    #: Calls it hosts at most (``RayOptions.calls_per_actor``).
    capacity: int = 5000
    #: Connection actors (shards) of the app.
    shards: int = 1
    #: Seconds a handler may run (None: no limit).
    handler_timeout: float | None = None
    #: What a handler's exception does to its call: ``"hangup"`` (default) or ``"keep"``.
    on_handler_error: str = "hangup"
    #: Seconds a request may take (the connection actor enforces it; this actor's safety
    #: net fires a little later).
    request_timeout: float = c.REQUEST_TIMEOUT
    #: Seconds a dial may take before it is given up.
    dial_timeout: float = c.DIAL_TIMEOUT
    #: Seconds link items may wait for company (``RayOptions.link_linger``).
    link_linger: float = 0.0
    #: What the handlers' client shows (``client.project``, ``client.host``): no secrets.
    project: str = ""
    host: str = ""
    #: The app's logging level (the handlers log at it here too); None: Ray's default.
    log_level: int | str | None = None
    #: The driver's Ray job: this actor's output shows in its logs (``ray job logs``).
    log_job: str = ""

    @classmethod
    def from_parts(cls, app_part: Mapping[str, Any], *, capacity: int, shards: int) -> CallActorOptions:
        """The options of a new CallActor: the app's part (a mapping of field names; None
        values take the defaults) and the pool's (``capacity``, ``shards``)."""
        known = {f.name for f in fields(cls)} - {"capacity", "shards"}
        unknown = sorted(set(app_part) - known)
        if unknown:
            raise ArgumentError(f"unknown CallActor options {unknown}; known: {sorted(known)}")
        given = {k: v for k, v in app_part.items() if v is not None}
        return cls(capacity=int(capacity), shards=int(shards), **given)

    def app_part(self) -> dict[str, Any]:
        """The app's part as a JSON-able mapping (what :meth:`from_parts` takes back)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("capacity", "shards")}


def call_actor_app_part(
    settings: Settings,
    options: RayOptions,
    client_options: Mapping[str, Any],
    *,
    log_level: int | str | None,
    log_job: str,
) -> dict[str, Any]:
    """The app's part of every CallActor's options (:meth:`CallActorOptions.from_parts`
    takes it; no secrets): the client's handler and request options, what the handlers'
    client shows, the app's logging level (``relay-actors run --log-level``, its own
    ``logging.basicConfig``, ``SIGNALWIRE_LOG_LEVEL`` through ``configure_logging()``:
    the handlers log at it in the CallActors too) and the driver's Ray job ``log_job``
    (the CallActors' output shows in its logs, also for those made later: an upgrade's,
    the router's scale-ups)."""
    return {
        "handler_timeout": client_options.get("handler_timeout"),
        "on_handler_error": client_options.get("on_handler_error", "hangup"),
        "request_timeout": client_options.get("request_timeout"),
        "dial_timeout": client_options.get("dial_timeout"),
        "link_linger": options.link_linger,
        "project": settings.credentials.project,
        "host": settings.host,
        "log_level": log_level,
        "log_job": log_job,
    }
