"""Router actor: the reconciler of the Ray runtime.

It owns the hard state and keeps the rest honest:

* the cluster-wide budget of ``max_active_calls``: connection shards lease
  slots in blocks (so the router is not on the per-call path) and give back
  what they do not use; the sum of leases never exceeds the budget;
* the CallActor pool: created between ``min_actors`` and ``max_actors``,
  spread over the nodes (``SPREAD``) or pinned to a custom resource, grown
  when the calls fill it, polled for health; a crashed or restarted CallActor
  (a new incarnation) is reported to every shard, which applies the
  lost-calls policy to the calls it had placed there;
* the call → CallActor table, reported by the shards in batches.

After its own restart it rebuilds all of that from the others: leases from the
shards, the pool by actor name, calls from the CallActors. It never places a
call itself, so a restart cannot assign a call twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from . import metrics
from .actor_messages import NAMESPACE, actor_name
from .call_actor import CallActor, _where
from .tasks import BackgroundTasks

__all__ = ["NAMESPACE", "Router"]

log = logging.getLogger("relay_actors.router")
HEALTH_INTERVAL = 0.5
#: Largest lease block (slots a shard asks for at once).
LEASE_BLOCK = 64


class Router:
    """See the module docstring. Create with :func:`ray.remote`.

    Args:
        app: the app's name.
        options: ``max_active_calls``, ``shards``, ``min_actors``, ``max_actors``,
            ``capacity`` (calls per CallActor), ``handlers`` (cloudpickled),
            ``call_actor`` (options passed to CallActors), ``placement``
            (``"spread"`` or ``{"resource": name}``), ``num_cpus`` per CallActor.
    """

    def __init__(self, app: str, options: dict[str, Any]) -> None:
        self.app = app
        self.options = options
        self.budget = int(options["max_active_calls"])
        self.shards = int(options.get("shards", 1))
        self.min_actors = int(options.get("min_actors", 1))
        self.max_actors = max(self.min_actors, int(options.get("max_actors", self.min_actors)))
        self.capacity = int(options.get("capacity", 5000))
        self.grants: dict[int, int] = {}
        self.pool: dict[int, Any] = {}
        self.incarnations: dict[int, str] = {}
        self.loads: dict[int, int] = {}
        self.calls: dict[str, int] = {}
        #: call_id → the shard that reported it (to reconcile with a restarted shard).
        self.call_shard: dict[str, int] = {}
        self.counters: Counter[str] = Counter()
        self.tasks = BackgroundTasks()
        self._ready = asyncio.Event()
        self._scaling = False
        self._failed: BaseException | None = None
        loop = asyncio.get_running_loop()
        self._start_task = loop.create_task(self._start())
        metrics.export_actor_stats("router", self.stats, {"app": self.app})

    # --- start-up and rebuild -----------------------------------------------------

    async def _start(self) -> None:
        try:
            import ray

            for idx in range(self.max_actors):
                try:
                    self.pool[idx] = ray.get_actor(actor_name(self.app, "call", idx), namespace=NAMESPACE)
                except ValueError:
                    continue
            while len(self.pool) < self.min_actors:
                self._create_actor(self._free_index())
            healths = await asyncio.gather(
                *(h.health.remote() for h in self.pool.values()), return_exceptions=True
            )
            for idx, health in zip(list(self.pool), healths, strict=True):
                if isinstance(health, BaseException):
                    continue
                self.incarnations[idx] = health["incarnation"]
                self.loads[idx] = health["calls"]
            await self._rebuild_calls()
            await self._rebuild_grants()
            self.tasks.spawn(self._health_loop(), "CallActor health loop")
        except BaseException as exc:
            self._failed = exc
            log.exception("router failed to start")
        finally:
            self._ready.set()

    async def _rebuild_calls(self) -> None:
        for shard in range(self.shards):
            owned = await asyncio.gather(
                *(h.owned.remote(shard) for h in self.pool.values()), return_exceptions=True
            )
            for idx, state in zip(list(self.pool), owned, strict=True):
                if not isinstance(state, BaseException):
                    for call_id, _node in state["calls"]:
                        self.calls[call_id] = idx
                        self.call_shard[call_id] = shard

    async def _rebuild_grants(self) -> None:
        import ray

        for shard in range(self.shards):
            try:
                handle = ray.get_actor(actor_name(self.app, "connection", shard), namespace=NAMESPACE)
                state = await asyncio.wait_for(handle.lease_state.remote(), 5.0)
                self.grants[shard] = state["granted"]
            except Exception:
                continue  # not started yet: it registers itself

    async def ready(self) -> dict[str, Any]:
        await self._ready.wait()
        if self._failed is not None:
            raise self._failed
        return {"actors": len(self.pool)}

    def _free_index(self) -> int:
        idx = 0
        while idx in self.pool:
            idx += 1
        return idx

    def _create_actor(self, idx: int) -> Any:
        import ray

        placement = self.options.get("placement", "spread")
        opts: dict[str, Any] = {
            "name": actor_name(self.app, "call", idx),
            "namespace": NAMESPACE,
            "lifetime": "detached",
            "max_restarts": -1,
            "max_task_retries": 0,
            "max_concurrency": 10_000,
            "num_cpus": float(self.options.get("num_cpus", 0.1)),
        }
        if isinstance(placement, dict) and placement.get("resource"):
            opts["resources"] = {placement["resource"]: float(placement.get("amount", 1))}
        else:
            opts["scheduling_strategy"] = "SPREAD"
        call_options = {
            **self.options.get("call_actor", {}),
            "capacity": self.capacity,
            "shards": self.shards,
        }
        handle = (
            ray.remote(CallActor)
            .options(**opts)
            .remote(self.app, idx, self.options["handlers"], call_options)
        )
        self.pool[idx] = handle
        self.loads[idx] = 0
        self.counters["actors_created"] += 1
        return handle

    # --- leases ---------------------------------------------------------------------

    def _free(self) -> int:
        return self.budget - sum(self.grants.values())

    async def register_shard(self, shard: int, in_use: int) -> dict[str, int]:
        """A shard (re)started holding ``in_use`` calls: its lease (at least that) and
        the lease block, sized so that every shard's spare slots stay a small part of
        the budget (64 at most; 20 calls over 2 shards lease 2 at a time)."""
        await self._ready.wait()
        granted = max(self.grants.get(shard, 0), in_use)
        self.grants[shard] = granted
        block = max(1, min(LEASE_BLOCK, self.budget // (4 * self.shards)))
        return {"granted": granted, "block": block}

    async def acquire(self, shard: int, want: int) -> int:
        """Lease up to ``want`` more slots to ``shard``; returns how many."""
        await self._ready.wait()
        got = max(0, min(want, self._free()))
        self.grants[shard] = self.grants.get(shard, 0) + got
        self.counters["slots_leased"] += got
        if got < want:
            self.counters["lease_shortfall"] += want - got
        return got

    async def release(self, shard: int, count: int) -> None:
        self.grants[shard] = max(0, self.grants.get(shard, 0) - count)
        self.counters["slots_returned"] += count

    # --- pool ---------------------------------------------------------------------------

    async def pool_info(self) -> list[tuple[int, Any, int]]:
        await self._ready.wait()
        return [(idx, handle, self.capacity) for idx, handle in self.pool.items()]

    async def want_capacity(self) -> int:
        """A shard found every CallActor full: grow the pool if allowed."""
        if len(self.pool) < self.max_actors:
            self._create_actor(self._free_index())
            await self._tell_shards("refresh_pool")
        return len(self.pool)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            items = list(self.pool.items())
            results = await asyncio.gather(
                *(asyncio.wait_for(h.health.remote(), 10.0) for _, h in items), return_exceptions=True
            )
            for (idx, _handle), health in zip(items, results, strict=True):
                if isinstance(health, BaseException):
                    continue  # restarting: the new incarnation will show
                previous = self.incarnations.get(idx)
                self.incarnations[idx] = health["incarnation"]
                self.loads[idx] = health["calls"]
                if previous is not None and previous != health["incarnation"]:
                    self.counters["call_actor_restarts"] += 1
                    log.error("CallActor %d restarted; its calls are handled by the lost-calls policy", idx)
                    self.tasks.spawn(self._actor_lost(idx), f"CallActor {idx} lost")
            self._autoscale()

    async def _actor_lost(self, idx: int) -> None:
        for call_id in [cid for cid, owner in self.calls.items() if owner == idx]:
            del self.calls[call_id]
            self.call_shard.pop(call_id, None)
        await self._tell_shards("call_actor_lost", idx, self.incarnations.get(idx))

    async def _tell_shards(self, method: str, *args: Any) -> None:
        import ray

        for shard in range(self.shards):
            try:
                handle = ray.get_actor(actor_name(self.app, "connection", shard), namespace=NAMESPACE)
                await getattr(handle, method).remote(*args)
            except Exception as exc:
                log.warning("could not tell shard %d to %s: %r", shard, method, exc)

    def _autoscale(self) -> None:
        if self._scaling or not self.pool:
            return
        total = sum(self.loads.get(idx, 0) for idx in self.pool)
        if total > 0.8 * self.capacity * len(self.pool) and len(self.pool) < self.max_actors:
            self._scaling = True

            async def grow() -> None:
                try:
                    self._create_actor(self._free_index())
                    await self._tell_shards("refresh_pool")
                finally:
                    self._scaling = False

            self.tasks.spawn(grow(), "scale up")

    # --- call table -------------------------------------------------------------------

    async def report(self, shard: int, batch: list[tuple[Any, ...]]) -> None:
        """Placements (``("add", call_id, idx)``), moves of re-homed calls
        (``("move", call_id, idx)``), releases (``("del", call_id)``) and, from a
        (re)started shard, every call it holds (``("sync", [(call_id, idx), ...])``).
        Idempotent: a shard retries a report across a restart of this actor. Applied
        only after the rebuild: a "del" applied while the rebuild reads the CallActors
        would be undone by their answer (read before the call ended), leaking the call."""
        await self._ready.wait()
        for item in batch:
            if item[0] == "move":
                self.calls[item[1]] = item[2]
            elif item[0] == "add":
                if item[1] in self.calls and self.calls[item[1]] != item[2]:
                    self.counters["double_assignments"] += 1
                    log.error("call %s reported on two CallActors", item[1])
                self.calls[item[1]] = item[2]
                self.call_shard[item[1]] = shard
            elif item[0] == "sync":
                # A (re)started shard's calls: those it no longer holds ended while it was
                # down (their "del" died with it); without this they would stay forever.
                held = dict(item[1])
                for cid in [cid for cid, s in self.call_shard.items() if s == shard and cid not in held]:
                    self.calls.pop(cid, None)
                    self.call_shard.pop(cid, None)
                for cid, idx in held.items():
                    self.calls[cid] = idx
                    self.call_shard[cid] = shard
            else:
                self.calls.pop(item[1], None)
                self.call_shard.pop(item[1], None)

    async def active(self) -> dict[str, Any]:
        """Cluster-wide counts: what tests sample to check the limit."""
        return {
            "calls": len(self.calls),
            "leased": sum(self.grants.values()),
            "budget": self.budget,
            "grants": dict(self.grants),
            "actors": len(self.pool),
            "loads": dict(self.loads),
        }

    async def stats(self) -> dict[str, Any]:
        return {**(await self.active()), **self.counters, **_where()}

    async def shutdown(self) -> None:
        await self.tasks.cancel_all()
