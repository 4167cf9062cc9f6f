"""Typed options of the actors, one frozen object per actor kind.

The driver builds them from :class:`~relay_actors.ray_runtime.driver.RayOptions`, the
settings and the client's options; each actor reads its fields by name (a typo is a
type error, not a silent default). None holds a secret: actor arguments show in Ray's
dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RouterOptions"]


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
    #: The options every CallActor is given besides its handlers (no secrets); the router
    #: adds ``capacity`` and ``shards``.
    call_actor: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_actors < self.min_actors:
            object.__setattr__(self, "max_actors", self.min_actors)

    @property
    def spread(self) -> bool:
        """True unless a custom resource pins the CallActors."""
        return not (isinstance(self.placement, dict) and self.placement.get("resource"))
