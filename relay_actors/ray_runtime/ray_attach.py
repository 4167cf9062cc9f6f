"""How a driver process comes to have Ray: a local Ray of its own (on loopback, quiet,
its monitoring daemons below our actors), a cluster it joins (its token checked first),
and leaving it. Drivers and the operator commands use this; actors never do.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from typing import Any

from ..errors import RelayError
from .actor_messages import NAMESPACE
from .cpu_priority import lower_daemons

__all__ = [
    "LOCAL_RAY_CONFIG",
    "LOCAL_RAY_ENV",
    "attach_ray",
    "check_ray_auth",
    "detach_ray",
    "ensure_ray",
    "gcs_address",
    "node_ips",
    "ship_module_by_value",
    "warn_runtime_env_credentials",
]

log = logging.getLogger("relay_actors.ray_runtime")

#: Environment variables that must not arrive through a runtime env.
_SECRET_ENV = ("SIGNALWIRE_API_TOKEN", "SIGNALWIRE_JWT_TOKEN")


#: Ray's own timers on a local Ray we start (``_system_config``; a cluster started elsewhere
#: keeps its operator's settings). Idle, the tree's processes wake thousands of times a
#: second; these polls are for multi-node object transfer, plasma pressure, disk usage,
#: idle-worker reaping and event-loop statistics, none of which a single node needs ten
#: times a second. Measured on 2 cores: the raylet 0.8% → 0.5% of a core idle (145 → 92
#: wake-ups/s). Liveness, the OOM monitor, metrics and task events keep Ray's defaults.
LOCAL_RAY_CONFIG: dict[str, Any] = {
    "raylet_check_gc_period_milliseconds": 1000,
    "kill_idle_workers_interval_ms": 1000,
    "object_manager_timer_freq_ms": 1000,
    "local_fs_monitor_interval_ms": 1000,
    "event_stats": False,
    "debug_dump_period_milliseconds": 60_000,
    # Ray starts its workers at nice 15, below its own daemons, for batch work. Ours carry
    # live calls: at nice 15 every 5-s burst of the dashboard agent ran ahead of them
    # (see cpu_priority, which also lowers the daemons).
    "worker_niceness": 0,
}
#: Environment of the processes a local Ray starts: the log monitor globs Ray's log folder
#: for new files every 0.5 s instead of every 0.1 s (1.0% → 0.4% of a core idle).
LOCAL_RAY_ENV = {"RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0"}


def ensure_ray(address: str | None = None, **init_kwargs: Any) -> bool:
    """Attach to Ray, or start a local Ray of our own on loopback. Returns True if we started it.

    ``address`` (else ``RAY_ADDRESS``) names a running cluster; without one we start
    our own (``address="local"``: never the cluster some other ``ray start`` left on
    this machine). Raises ``RelayError("ray_auth")`` in one line when the cluster wants
    Ray's token authentication and this process does not have it."""
    from .job_logs import keep_per_call_lines

    keep_per_call_lines()
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        check_ray_auth(address)
        ray.init(address=address, namespace=NAMESPACE, **init_kwargs)
        warn_runtime_env_credentials()
        return False
    # A local Ray of our own: keep every socket on 127.0.0.1 and stay quiet.
    if os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0") == "0":
        # Ray reads this variable when it is imported, which it may well be by now; the
        # processes it starts read it from the environment.
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for name, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(name, value)
    init_kwargs["_system_config"] = {**LOCAL_RAY_CONFIG, **(init_kwargs.get("_system_config") or {})}
    kwargs: dict[str, Any] = {
        "address": "local",
        "namespace": NAMESPACE,
        "_node_ip_address": "127.0.0.1",
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        **init_kwargs,
    }
    # Ray notes on start that it turned token authentication on, and how to turn it off:
    # on a local Ray of ours it stays on, and the note was the first line a new user saw.
    auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = auth_log.level
    auth_log.setLevel(logging.ERROR)
    try:
        ray.init(**kwargs)
    finally:
        auth_log.setLevel(level)
    lower_daemons()  # (the raylet's dashboard agent is up once ray.init returns)
    return True


def detach_ray() -> None:
    """Disconnect this driver from Ray, if it is connected (a local Ray of ours stops with
    it): after this no actor's output reaches this process's terminal, so a line printed
    next stays the last one (say, the error of an app that did not start, while Ray still
    forwarded what its actors logged as they were torn down)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def attach_ray(address: str | None = None) -> None:
    """Attach to a running cluster (for ``status``/``stop``: never start one): ``address``,
    else ``RAY_ADDRESS``, else the last ``ray start`` on this machine, as Ray's own CLI
    (``ray status``, ``ray job logs``) finds it."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address == "local":
        address = _last_ray_start()
    if not address:
        raise RelayError(
            "no_ray",
            "no Ray cluster found: none named (--address, RAY_ADDRESS) and no ray start on this machine "
            "under Ray's default temp dir (a head started with --temp-dir elsewhere, or on another "
            "machine, is not found): pass --address HEAD_IP:6379 or set RAY_ADDRESS",
        )
    ensure_ray(address, logging_level=logging.WARNING, log_to_driver=False)


def _last_ray_start() -> str | None:
    """The GCS address the last ``ray start`` on this machine wrote (``/tmp/ray/ray_current_cluster``)."""
    try:
        from ray._private.utils import read_ray_address

        return read_ray_address(None) or None
    except Exception:  # a Ray without this helper: as if none was found
        return None


def check_ray_auth(address: str, timeout: float = 5.0) -> None:
    """Ask the cluster's GCS whether we may talk to it, before ``ray.init`` (which
    would retry for ~20 s, logging a line a second, then blame a crashed instance).

    Only a refusal is reported; anything else (unreachable, slow) is left to ``ray.init``."""
    if not re.match(r"^[\w.\-\[\]:]+:\d+$", address):
        return  # ray://, auto, http://...: not a GCS address we can probe
    refused: list[BaseException] = []

    def probe() -> None:
        try:
            from ray._raylet import GcsClient  # type: ignore[attr-defined]

            GcsClient(address=address)
        except BaseException as exc:  # only an auth refusal is ours to report
            if type(exc).__name__ == "AuthenticationError":
                refused.append(exc)

    # A daemon thread: an unreachable GCS keeps the probe busy for ~40 s; we do not wait.
    thread = threading.Thread(target=probe, name="ray-auth-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if refused and os.environ.get("RAY_AUTH_MODE") == "token":
        raise RelayError(
            "ray_auth",
            f"the Ray cluster at {address} refused this process's Ray token: put the cluster's token "
            "in ~/.ray/auth_token (or name its file with RAY_AUTH_TOKEN_PATH)",
        )
    if refused:
        mode = os.environ.get("RAY_AUTH_MODE", "") or "unset"
        raise RelayError(
            "ray_auth",
            f"the Ray cluster at {address} requires token authentication and this process has none "
            f"(RAY_AUTH_MODE is {mode}): set RAY_AUTH_MODE=token and put the cluster's token in "
            "~/.ray/auth_token (or name its file with RAY_AUTH_TOKEN_PATH)",
        )


def warn_runtime_env_credentials() -> None:
    """Loudly warn when SignalWire secrets came in through the job's runtime env: Ray's
    jobs API and dashboard show a runtime env's ``env_vars`` in clear."""
    import ray

    try:
        runtime_env = ray.get_runtime_context().runtime_env or {}
        env_vars = dict(runtime_env.get("env_vars") or {})
    except Exception:  # a best-effort check
        return
    leaked = [name for name in _SECRET_ENV if name in env_vars]
    if leaked:
        message = (
            f"WARNING: {', '.join(leaked)} arrived through this job's runtime_env: Ray's jobs API "
            "(ray job list, GET /api/jobs/) and dashboard show it in clear to anyone who can reach "
            "the cluster. Rotate that token, and give the driver its credentials with "
            "SIGNALWIRE_CREDENTIALS_FILE naming a file on the head node instead (see cluster/README.md)."
        )
        log.warning(message)
        print(f"relay-actors: {message}", file=sys.stderr, flush=True)


def gcs_address() -> str:
    """The address of the Ray cluster this process is attached to."""
    import ray

    return str(ray.get_runtime_context().gcs_address)


def node_ips() -> dict[str, str]:
    """Node id -> node address of the cluster this process is attached to ({} if unknown)."""
    import ray

    try:
        return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    except Exception:  # ids then
        return {}


def ship_module_by_value(module_name: str) -> None:
    """Handlers of the app's module travel to CallActors by value: the module need not be
    importable on the worker nodes (its other imports must be)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[module_name])
