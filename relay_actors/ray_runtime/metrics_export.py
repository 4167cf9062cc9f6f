"""One app's metrics endpoint, served by its router: ``http://<node>:<port>/metrics``.

The router lives as long as the app and already knows its components, so it
serves the app's series itself (Ray's metrics agent is not used: it exports on a
random port per node, adds a dozen labels of its own, and keeps the series of
dead actors and of other apps). Every ``interval`` seconds :class:`AppMetrics`
asks every component of this app for its ``stats()`` at once (one Ray call each,
all with one timeout), hands the answers to :class:`~relay_actors.metrics.AppSeries`
(the flattening, the monotonic counters and the forgetting of components that are
gone live there) and keeps the rendered families for the scrapes, which only read
them. What is polled and how it is labelled: :mod:`relay_actors.metrics`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..metrics import (
    DEFAULT_INTERVAL,
    DEFAULT_METRICS_PORT,
    STALE_AFTER_POLLS,
    AppSeries,
    Report,
    SeriesCollector,
    families,
    serve_registry,
)
from .actor_messages import actor_name
from .shard_handles import shard_handle

__all__ = ["AppComponents", "AppMetrics", "MetricsConfig"]

log = logging.getLogger("relay_actors.metrics")
#: Longest wait for one component's stats in a poll (a blocked loop must not hold the rest).
MAX_POLL_TIMEOUT = 5.0


@dataclass(frozen=True)
class MetricsConfig:
    """Where an app's endpoint listens, as the driver resolved it.

    ``port``: 0 for any free port, None for no endpoint; ``host``: None for the
    router node's address (127.0.0.1 for a local Ray), never a wildcard unless given
    one; ``interval``: seconds between polls of the components."""

    port: int | None = DEFAULT_METRICS_PORT
    host: str | None = None
    interval: float = DEFAULT_INTERVAL

    def to_dict(self) -> dict[str, Any]:
        return {"port": self.port, "host": self.host, "interval": self.interval}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> MetricsConfig:
        return cls(**d) if d else cls()


#: ``(component, shard, actor, ask)``: one component and how to ask it for its stats.
Source = tuple[str, str, str, Callable[[], Awaitable[dict[str, Any]]]]


class AppMetrics:
    """Polls an app's components and serves their series (see the module docstring).

    Args:
        app: the app's name (the ``app`` label).
        config: where to listen and how often to poll.
        sources: every component of the app now (called at each poll).
    """

    def __init__(self, app: str, config: MetricsConfig, sources: Callable[[], list[Source]]) -> None:
        self.app = app
        self.config = config
        self.sources = sources
        self.interval = config.interval if config.interval > 0 else DEFAULT_INTERVAL
        self.timeout = min(MAX_POLL_TIMEOUT, max(0.5, self.interval))
        self.series = AppSeries(app, stale_after=STALE_AFTER_POLLS * self.interval)
        self._families: list[Any] = []
        self._nodes: dict[str, str] = {}
        self._nodes_read = 0.0
        self.server: Any = None
        self.url: str | None = None
        self.error: str | None = None

    def start(self) -> None:
        """Bind the endpoint (a thread of ``prometheus_client``); a port in use is logged
        with what to do and reported by :meth:`info`, and the app runs on without it."""
        if self.config.port is None:
            return
        host = self.config.host or _node_address()
        try:
            collector = SeriesCollector(lambda: self._families)
            self.server, port = serve_registry(collector, self.config.port, host)
        except OSError as exc:
            self.error = f"cannot listen on {host}:{self.config.port} ({exc.strerror or exc})"
            log.error(
                "app %s: no metrics endpoint: %s; give each app on a node its own port "
                "(RayOptions(metrics_port=...), RELAY_METRICS_PORT, relay-actors run --metrics-port)",
                self.app,
                self.error,
            )
            return
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/metrics"
        log.info("app %s: metrics at %s", self.app, self.url)

    def info(self) -> dict[str, Any]:
        """``metrics_url`` (None without an endpoint) and ``metrics_error`` (why not)."""
        return {"metrics_url": self.url, "metrics_error": self.error}

    async def run(self) -> None:
        """Poll forever (a background task of the router); one failed poll is logged once."""
        if self.server is None:
            return
        failing = False
        while True:
            try:
                await self.poll()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception:
                if not failing:
                    log.warning("app %s: metrics poll failed; retrying", self.app, exc_info=True)
                failing = True
            await asyncio.sleep(self.interval)

    async def poll(self) -> None:
        """Ask every component at once, each with the timeout; update the served series."""
        sources = self.sources()

        async def ask(fn: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any] | None:
            try:
                return await asyncio.wait_for(fn(), self.timeout)
            except Exception:  # dead, restarting or blocked: AppSeries keeps it a while
                return None

        answers = await asyncio.gather(*(ask(fn) for *_, fn in sources))
        node_ids = {a.get("node_id", "") for a in answers if a}
        if node_ids - self._nodes.keys() and time.monotonic() - self._nodes_read > 10.0:
            self._nodes = _node_addresses()
            self._nodes_read = time.monotonic()
        reports = [
            Report(
                component,
                stats,
                shard=shard,
                actor=actor,
                node=self._nodes.get(nid, nid[:8]) if stats and (nid := stats.get("node_id", "")) else "",
            )
            for (component, shard, actor, _), stats in zip(sources, answers, strict=True)
        ]
        self.series.update(time.monotonic(), reports)
        self._families = families(self.series.series())

    def close(self) -> None:
        """Stop serving (the port is free again when this returns)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class AppComponents:
    """The components of one app, for :class:`AppMetrics`: the router (asked in-process),
    its connection actors by name (handles looked up once, again after a failure) and
    the CallActors of the router's pool now."""

    def __init__(self, app: str, shards: int, router: Any, pool: Callable[[], dict[int, Any]]) -> None:
        self.app = app
        self.shards = shards
        self.router = router
        self.pool = pool
        self._handles: dict[str, Any] = {}

    def __call__(self) -> list[Source]:
        sources: list[Source] = [("router", "", "", self.router.stats)]
        for shard in range(self.shards):
            ask = functools.partial(self._ask, actor_name(self.app, "connection", shard))
            sources.append(("connection", str(shard), "", ask))
        for idx, handle in sorted(self.pool().items()):
            sources.append(("call_actor", "", str(idx), handle.stats.remote))
        return sources

    async def _ask(self, name: str) -> dict[str, Any]:
        handle = self._handles.get(name)
        if handle is None:
            shard = int(name.rsplit(":", 1)[1])
            handle = self._handles[name] = shard_handle(self.app, shard)
        try:
            return await handle.stats.remote()
        except Exception:
            self._handles.pop(name, None)
            raise


def _node_address() -> str:
    import ray

    return str(ray.util.get_node_ip_address())


def _node_addresses() -> dict[str, str]:
    import ray

    try:
        return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    except Exception:
        return {}
