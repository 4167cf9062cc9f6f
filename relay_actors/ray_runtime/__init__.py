"""The Ray runtime: the driver, the three actors, the link between them, admission and placement.

``ray`` is imported only inside this package, so the in-process client never needs it
(a lint rule in ``pyproject.toml`` keeps it that way).

Glossary (one meaning per word, in this package and its docs):

- **app**: one deploy of handlers on Ray: its actors, named ``relay:<app>:<role>[:<n>]``,
  and its record and secrets in the GCS KV store.
- **driver**: the process that runs ``RelayClient(runtime="ray")`` and starts, joins,
  upgrades or stops an app; it hosts no inbound call.
- **shard**: one connection actor and its RELAY session (``RayOptions.connections`` of
  them, on the same contexts); shard ``n`` is ``relay:<app>:connection:<n>``.
- **router**: the router actor, the app's reconciler (lease ledger, CallActor pool,
  call table, upgrades). It never routes an event or places a call.
- **route**: where a shard sends what arrives for a call, dial or message: the CallActor
  that holds it (a shard's ``EventRouter``); **placement** picks that CallActor for a
  new call.
- **pool**: the app's CallActors, as the router's
  :class:`~relay_actors.ray_runtime.pool_core.PoolCore` keeps them; a **pool snapshot**
  (``PoolSnapshot``) is the versioned view of it (actors, nodes, generation, retiring) the
  router pushes to every shard, ordered by (epoch, version): an older one is ignored.
- **generation**: the handlers' code a CallActor runs (0: the app's first); an upgrade
  starts the next one, which takes every new call while older CallActors **retire**
  (stop once they hold nothing) after they **drain** (their calls end, or are hung up
  at the drain deadline).
- **link**: the data path between one shard and one CallActor (a socket with sequence
  numbers, acknowledgements and a resend window: :mod:`~relay_actors.ray_runtime.link_protocol`);
  a process's set of links is its link hub (``LinkHub``) or server (``LinkServer``).
- **item**: one message on a link (an offer, an event, a request, a result, ...): a frozen
  dataclass of :mod:`~relay_actors.ray_runtime.actor_messages`, whose codec alone turns it
  into the JSON array on the wire (and back, refusing a malformed one); a **batch** is the
  items one frame carries.
- **lane**: the control path a call's requests leave through (a
  :class:`~relay_actors.call.CallControl`): the engine in-process, a link to a shard in a
  CallActor, the connection actors for the driver.
- **incarnation**: one life of an actor process: a new random id at each (re)start, so
  a peer tells a restart from a reconnect.
- **epoch**: the number of a router's life in the lease protocol (each router start
  takes the next): a lease request meant for an earlier router is refused.
- **standby**, **spare**, **term**: with ``RayOptions(standby_connections=True)`` a shard
  has two actors, its main seat and its standby seat (``relay:<app>:standby:<n>``); the
  process that serves it holds the current **term** (claimed put-if-absent in the KV
  store), the other is its **spare** (:mod:`~relay_actors.ray_runtime.shard_standby`).
- **lease**, **slot**, **block**: a slot is one active call of the cluster-wide budget;
  shards lease slots from the router in blocks (:mod:`~relay_actors.ray_runtime.admission`).
- **core** and **shell**: a core decides over plain state (no ``ray``, no networking:
  ``shard_core``, ``pool_core``, ``app_lifecycle``, ``admission``, ``placement``, ``link_protocol``;
  ``call_actor_core`` needs no Ray either, only asyncio's futures for its requests); a
  shell (an actor, the driver) does the I/O and carries out what the core decides.

The modules:

- ``driver``: what ``RelayClient(runtime="ray")`` runs in the driver process (start,
  adopt and stop its app; its requests, dials and messages once the app is up:
  ``driver_requests``), over ``app_lifecycle``
  (the start decision, ownership and the status report, sans-IO); ``ray_attach``: how a
  driver comes to have Ray (a local Ray of its own, a cluster it joins, leaving it);
  ``app_control``: an app's status, drain and stop by name, from any process attached to
  its cluster (``relay-actors status``/``stop``, and the driver's own drain and stop);
- ``connection_actor``, ``router``, ``call_actor``: the three actor shells; ``connection_actor``
  over ``shard_core`` (a shard's decisions, sans-IO, with ``shard_recovery``, ``shard_requests``,
  ``shard_room`` (offers waiting for a lagging CallActor, and asking the pool for one more),
  ``shard_pool`` (the router's pool snapshots, retirement), ``shard_startup``, ``shard_standby``
  (which of a shard's two processes serves, sans-IO; its I/O in ``standby_watch``; the
  spare passing Ray calls on: ``standby_forwarding``),
  ``commands_in_doubt`` and, for what it asks its shell to do, ``shard_actions``);
  ``router`` over ``pool_core`` (the pool's decisions, sans-IO);
  ``call_actor`` over ``call_actor_core`` (what each item does, requests, the driver's
  streams, with ``event_dedupe``: the event ids already applied, a bounded window per shard);
  ``shard_handles``: a shard's handle as its callers hold it (reads fall back to the
  standby seat); ``spawn``: the one place actors are created; ``options``: ``RayOptions`` (the
  app's layout, as the user gives it) and the actors' typed options (``RouterOptions``,
  ``ConnectionActorOptions``, ``CallActorOptions``: no secrets);
- ``link_protocol`` (sans-IO), ``actor_link`` (its asyncio shell), ``link_tls``,
  ``actor_messages`` (the typed items and their codec), ``batching``: the data plane
  between the actors; ``actor_info``:
  what every actor's stats say about its process and links;
- ``admission`` and ``placement`` (sans-IO): the call limit and where calls go;
- ``kvstore``: the app's records and secrets in Ray's GCS KV store.
- ``metrics_export`` (the app's metrics endpoint, served by the router), ``tracing_setup``
  (the driver's ``OTEL_*`` settings carried to the actors), ``job_logs`` (which job's logs
  an actor's output shows in), ``gc_tuning`` (the collector's settings in actor processes), ``cpu_priority``
  (on a local Ray we start, Ray's monitoring daemons yield the CPU to the actors).

No module here imports ``driver`` (but this facade), nor another module's private
names; ``tests/test_layout.py`` checks it. Actors import neither ``ray_attach`` nor
``app_control``.
"""

from typing import TYPE_CHECKING, Any

from .actor_messages import STREAM_LOST
from .options import RayOptions, default_app_name, sanitize_app_name

if TYPE_CHECKING:
    from .app_control import app_status, list_apps, stop_app
    from .driver import RayRuntime
    from .driver_requests import DriverTransport, RemoteCall
    from .ray_attach import attach_ray, check_ray_auth, detach_ray, ensure_ray, warn_runtime_env_credentials

#: The driver side's names (name -> its module), imported on first use: an actor process
#: (which imports this package for its own module) never needs them, and a restarted
#: actor is serving again sooner for not importing them.
_DRIVER_SIDE = {
    "DriverTransport": "driver_requests",
    "RayRuntime": "driver",
    "RemoteCall": "driver_requests",
    "app_status": "app_control",
    "list_apps": "app_control",
    "stop_app": "app_control",
    "attach_ray": "ray_attach",
    "check_ray_auth": "ray_attach",
    "detach_ray": "ray_attach",
    "ensure_ray": "ray_attach",
    "warn_runtime_env_credentials": "ray_attach",
}


def __getattr__(name: str) -> Any:
    module = _DRIVER_SIDE.get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "STREAM_LOST",
    "DriverTransport",
    "RayOptions",
    "RayRuntime",
    "RemoteCall",
    "app_status",
    "attach_ray",
    "check_ray_auth",
    "default_app_name",
    "detach_ray",
    "ensure_ray",
    "list_apps",
    "sanitize_app_name",
    "stop_app",
    "warn_runtime_env_credentials",
]
