"""What every actor's ``stats()`` says about where it runs and about its links."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["link_stats", "where"]


def where() -> dict[str, Any]:
    """This process's pid and Ray node id (for stats: fault tests and placement checks)."""
    import ray

    return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


def link_stats(peers: Any) -> dict[str, Any]:
    """Per-peer link figures for ``stats()`` (metrics: ``relay_link_*``) of a
    :class:`~relay_actors.ray_runtime.actor_link.LinkHub` or ``LinkServer`` (None: no links)."""
    if peers is None:
        return {}
    return {
        peer: {**session.stats(), "connected": peer in peers.wires}
        for peer, session in peers.sessions.items()
    } | {"_process": dict(peers.counters)}
