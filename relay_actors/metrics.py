"""Prometheus metrics of every component (stub: the exporter is being built).

Components keep plain counters in their ``stats()``; exporters read them
periodically, so nothing is added to the per-frame path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["export_actor_stats"]


def export_actor_stats(
    component: str, stats: Callable[[], Awaitable[dict[str, Any]]], tags: dict[str, str]
) -> None:
    """Start exporting an actor's ``stats()`` through ``ray.util.metrics`` (in the actor's loop)."""
