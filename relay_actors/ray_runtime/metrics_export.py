"""Each actor's ``stats()`` exported through Ray's metrics agent (``ray.util.metrics``).

The metric definitions and the flattening of stats into samples live in
:mod:`relay_actors.metrics`, shared with the in-process client.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from ..metrics import BASE_TAGS, DEFAULT_INTERVAL, METRICS, Capper, MetricDef, flatten

log = logging.getLogger("relay_actors.metrics")



def _ray_metric(d: MetricDef) -> Any:
    from ray.util import metrics as ray_metrics

    cls = ray_metrics.Counter if d.kind == "counter" else ray_metrics.Gauge
    return cls(d.name, description=d.help, tag_keys=d.tag_keys)


class RayExporter:
    """Feeds one actor's stats into ``ray.util.metrics`` (see :func:`export_actor_stats`)."""

    def __init__(
        self, component: str, tags: dict[str, str], make: Callable[[MetricDef], Any] | None = None
    ) -> None:
        self.component = component
        self.base = {k: "" for k in BASE_TAGS}
        self.base.update({k: str(v) for k, v in tags.items() if k in BASE_TAGS})
        self.base["component"] = component
        self.metrics: dict[str, Any] = {}
        make = make or _ray_metric
        for d in METRICS.values():
            self.metrics[d.name] = make(d)
        self.cap = Capper()
        self.last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def _tags(self, d: MetricDef, sample_tags: tuple[tuple[str, str], ...]) -> dict[str, str]:
        tags = dict(self.base)
        for k in d.extra:
            tags[k] = ""
        tags.update(sample_tags)
        return tags

    def record(self, stats: dict[str, Any]) -> None:
        current: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for s in flatten(self.component, stats, self.cap):
            d = METRICS[s.name]
            key = (s.name, s.tags)
            current[key] = s.value
            metric = self.metrics[s.name]
            if d.kind == "counter":
                prev = self.last.get(key, 0.0)
                # A decrease means the counter restarted from zero: what it holds now is new.
                delta = s.value - prev if s.value >= prev else s.value
                if delta > 0:
                    metric.inc(delta, tags=self._tags(d, s.tags))
            else:
                metric.set(s.value, tags=self._tags(d, s.tags))
        for key in self.last.keys() - current.keys():
            name, stags = key
            d = METRICS[name]
            if d.kind == "gauge":  # gone (a CallActor removed): do not keep its last value
                self.metrics[name].set(0.0, tags=self._tags(d, stags))
        # Counters that vanished keep their last value, so a reappearance counts from it.
        self.last = {**{k: v for k, v in self.last.items() if METRICS[k[0]].kind == "counter"}, **current}


def _interval() -> float:
    try:
        return float(os.environ.get("RELAY_METRICS_INTERVAL", DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL


_RUNNING: set[asyncio.Task[None]] = set()


def export_actor_stats(
    component: str, stats: Callable[[], Awaitable[dict[str, Any]]], tags: dict[str, str]
) -> asyncio.Task[None] | None:
    """Start exporting an actor's ``stats()`` through ``ray.util.metrics``.

    Call it from the actor's ``__init__`` (an async actor: its event loop is
    running). A background task then reads ``stats()`` every
    ``RELAY_METRICS_INTERVAL`` seconds (default 2) and records counters (the
    increase since the last read; a decrease is taken as a restart from zero,
    never a negative increment) and gauges (the value now). It does nothing
    (returns None) outside a Ray worker, without a running loop, or with the
    interval set to 0. It never raises into the actor: failures are logged,
    once, and the next round tries again. Each round costs one ``stats()`` call
    and one metric update per exported series; there are at most a few
    hundred of those, so it never holds the loop long.
    """
    try:
        interval = _interval()
        if interval <= 0:
            return None
        loop = asyncio.get_running_loop()
        import ray

        if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
            return None  # not inside a Ray actor (a unit test constructing the class)
        exporter = RayExporter(component, tags)
    except Exception:  # no loop, no Ray, or metrics unavailable: the actor runs on
        log.debug("metrics export for %s not started", component, exc_info=True)
        return None
    task = loop.create_task(_export_loop(exporter, stats, interval), name=f"relay-metrics-{component}")
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    return task


async def _export_loop(
    exporter: RayExporter, stats: Callable[[], Awaitable[dict[str, Any]]], interval: float
) -> None:
    failing = False
    while True:
        try:
            exporter.record(await stats())
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception:
            if not failing:
                log.warning("metrics export of %s failed; retrying", exporter.component, exc_info=True)
            failing = True
        await asyncio.sleep(interval)
