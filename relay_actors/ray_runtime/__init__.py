"""The Ray runtime: the driver, the three actors, the link between them, admission and placement.

``ray`` is imported only inside this package, so the in-process client never needs it
(a lint rule in ``pyproject.toml`` keeps it that way). The layers:

- ``driver``: what ``RelayClient(runtime="ray")`` runs in the driver process (start,
  adopt, stop, status of an app);
- ``connection_actor``, ``router``, ``call_actor``: the three actor shells;
- ``link_protocol`` (sans-IO), ``actor_link`` (its asyncio shell), ``link_tls``,
  ``actor_messages``, ``batching``: the data plane between the actors;
- ``admission`` and ``placement`` (sans-IO): the call limit and where calls go;
- ``kvstore``: the app's records and secrets in Ray's GCS KV store.
"""

from .driver import (
    STREAM_LOST,
    DriverTransport,
    RayOptions,
    RayRuntime,
    RemoteCall,
    app_status,
    attach_ray,
    check_ray_auth,
    default_app_name,
    ensure_ray,
    list_apps,
    sanitize_app_name,
    stop_app,
    warn_runtime_env_credentials,
)

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
    "ensure_ray",
    "list_apps",
    "sanitize_app_name",
    "stop_app",
    "warn_runtime_env_credentials",
]
