"""The one place the app's actors are created: their Ray options, placement and names.

Every actor is named (``relay:<app>:router``, ``relay:<app>:connection:<n>``,
``relay:<app>:call:<n>``: :func:`~relay_actors.ray_runtime.actor_messages.actor_name`) in the
``relay_actors`` namespace, detached (it outlives its driver: an app is stopped on
purpose), restarted by Ray without end (``max_restarts=-1``) and allowed many
concurrent method calls (its loop serves them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .actor_messages import NAMESPACE, actor_name
from .options import CallActorOptions

__all__ = ["spawn_call_actor", "spawn_control_actor"]

_COMMON: dict[str, Any] = {
    "namespace": NAMESPACE,
    "lifetime": "detached",
    "max_restarts": -1,
    "max_concurrency": 10_000,
    # Ray keeps an event record of every method call in the GCS (~1 KiB each, up to 100k):
    # our report/lease/stats calls run all the time, and a 30-min soak grew the GCS by
    # 64 MiB. Our own metrics and traces say what these calls did.
    "enable_task_events": False,
}


#: One Ray actor class per class, made once per process: Ray prepares and exports an actor
#: class on its first creation (~80 ms of this process's time here), so a new
#: ``ray.remote(cls)`` for every actor paid that for each CallActor, router and shard.
_ACTOR_CLASSES: dict[type, Any] = {}


def _actor_class(cls: type) -> Any:
    actor_class = _ACTOR_CLASSES.get(cls)
    if actor_class is None:
        import ray

        actor_class = _ACTOR_CLASSES[cls] = ray.remote(cls)
    return actor_class


def spawn_control_actor(
    app: str,
    role: str,
    index: int | None,
    cls: type,
    args: tuple[Any, ...],
    *,
    control_resource: str | None,
    **options: Any,
) -> Any:
    """The router or a connection actor (``role``): no CPUs, pinned to the nodes offering
    ``control_resource`` if given, else kept on this (the driver's) node when it can."""
    import ray

    if control_resource:
        options["resources"] = {control_resource: 0.001}
    else:
        # Soft: with no CPUs asked, Ray otherwise scatters the control plane over worker
        # nodes, and losing a worker node then restarts the session too, not just CallActors.
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=True
        )
    return (
        _actor_class(cls)
        .options(name=actor_name(app, role, index), num_cpus=0, **_COMMON, **options)
        .remote(*args)
    )


def spawn_call_actor(
    app: str,
    index: int,
    node: str | None,
    placement: str | dict[str, Any],
    num_cpus: float,
    handlers: bytes,
    app_options: Mapping[str, Any],
    *,
    capacity: int,
    shards: int,
) -> Any:
    """CallActor ``index`` with ``handlers`` (cloudpickled) and its options: the app's
    part (:meth:`CallActorOptions.from_parts`, an unknown name refused here) and the
    pool's (``capacity``, ``shards``). On ``node`` (soft affinity: a node that cannot take
    it, or dies, lets Ray place it elsewhere), or on a node offering
    ``placement["resource"]``, else by Ray's SPREAD."""
    options = CallActorOptions.from_parts(app_options, capacity=capacity, shards=shards)

    from .call_actor import CallActor

    ray_options: dict[str, Any] = {"num_cpus": float(num_cpus), "max_task_retries": 0}
    if isinstance(placement, dict) and placement.get("resource"):
        ray_options["resources"] = {placement["resource"]: float(placement.get("amount", 1))}
    elif node is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray_options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
    else:
        ray_options["scheduling_strategy"] = "SPREAD"
    return (
        _actor_class(CallActor)
        .options(name=actor_name(app, "call", index), **_COMMON, **ray_options)
        .remote(app, index, handlers, options)
    )
