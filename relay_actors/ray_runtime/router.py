"""Router actor: the reconciler of the Ray runtime.

It owns the hard state and keeps the rest honest:

* the cluster-wide budget of ``max_active_calls``: connection shards lease
  slots in blocks (so the router is not on the per-call path) and give back
  what they do not use; the rules (epochs, numbered requests, what a rebuild
  may count as free) are in :mod:`relay_actors.ray_runtime.admission`, whose
  :class:`~relay_actors.ray_runtime.admission.LeaseLedger` this actor only carries;
* the CallActor pool: created between ``min_actors`` and ``max_actors``,
  spread over the nodes (``SPREAD``) or pinned to a custom resource, grown
  when the calls fill it, polled for health; a crashed or restarted CallActor
  (a new incarnation) is reported to every shard, which applies the
  lost-calls policy to the calls it had placed there;
* the call → CallActor table, reported by the shards in batches.

After its own restart it rebuilds all of that from the others: leases from the
shards (asked until each has reported; nothing is leased before), the pool by
actor name, calls from the CallActors. It never places a
call itself, so a restart cannot assign a call twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from ..tasks import BackgroundTasks
from . import kvstore, metrics_export
from .actor_messages import NAMESPACE, actor_name
from .admission import LEASE_BLOCK, LeaseLedger, LeaseReply, LeaseRequest
from .call_actor import CallActor, _where

__all__ = ["LEASE_BLOCK", "NAMESPACE", "Router"]

log = logging.getLogger("relay_actors.ray_runtime.router")
HEALTH_INTERVAL = 0.5
#: How often shards that have not reported their leases since a restart are asked again.
ASK_INTERVAL = 0.5


class Router:
    """See the module docstring. Create with :func:`ray.remote`.

    Args:
        app: the app's name.
        options: ``max_active_calls``, ``shards``, ``min_actors``, ``max_actors``,
            ``capacity`` (calls per CallActor), ``handlers`` (cloudpickled),
            ``call_actor`` (options passed to CallActors), ``placement``
            (``"spread"`` or ``{"resource": name}``), ``num_cpus`` per CallActor,
            ``metrics`` (the app's metrics endpoint: port, host, poll interval; see
            :mod:`relay_actors.ray_runtime.metrics_export`).
    """

    def __init__(self, app: str, options: dict[str, Any]) -> None:
        self.app = app
        self.options = options
        self.budget = int(options["max_active_calls"])
        self.shards = int(options.get("shards", 1))
        self.min_actors = int(options.get("min_actors", 1))
        self.max_actors = max(self.min_actors, int(options.get("max_actors", self.min_actors)))
        self.capacity = int(options.get("capacity", 5000))
        #: Set at start-up, once this router's epoch is known.
        self.ledger: LeaseLedger | None = None
        self.pool: dict[int, Any] = {}
        self.incarnations: dict[int, str] = {}
        self.loads: dict[int, int] = {}
        self.calls: dict[str, int] = {}
        #: call_id → the shard that reported it (to reconcile with a restarted shard).
        self.call_shard: dict[str, int] = {}
        self.counters: Counter[str] = Counter()
        #: Per shard, the last reply counted in the lease counters (a retry is not recounted).
        self._last_replies: dict[int, LeaseReply] = {}
        self.tasks = BackgroundTasks()
        self._ready = asyncio.Event()
        self._scaling = False
        self._failed: BaseException | None = None
        loop = asyncio.get_running_loop()
        self._start_task = loop.create_task(self._start())
        # The app's metrics endpoint lives here: the router lives as long as the app.
        self.metrics = metrics_export.AppMetrics(
            app,
            metrics_export.MetricsConfig.from_dict(options.get("metrics")),
            metrics_export.AppComponents(app, self.shards, self, lambda: self.pool),
        )
        self.metrics.start()
        self.tasks.spawn(self.metrics.run(), "metrics poll")

    # --- start-up and rebuild -----------------------------------------------------

    async def _start(self) -> None:
        try:
            import ray

            # Each router a higher epoch than any before it: requests a shard meant for
            # an earlier one are refused, never applied to this one's ledger.
            secrets = await kvstore.AppSecrets.open(self.app)
            epoch = int(await secrets.load("router_epoch") or 0) + 1
            await secrets.save("router_epoch", epoch)
            self.ledger = LeaseLedger(self.budget, self.shards, epoch)
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
            self.tasks.spawn(self._ask_shards(), "lease rebuild")
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

    async def _ask_shards(self) -> None:
        """Ask the shards that have not reported in this epoch to report, until all have.
        One that cannot be asked (not started, restarting, slow) stays unknown, which
        reserves the budget (see :mod:`relay_actors.ray_runtime.admission`): "could not ask" is
        "retry", never "free". A shard that calls first learns the epoch anyway."""
        import ray

        assert self.ledger is not None
        while unknown := self.ledger.unknown():
            for shard in unknown:
                try:
                    handle = ray.get_actor(actor_name(self.app, "connection", shard), namespace=NAMESPACE)
                    await asyncio.wait_for(handle.lease_state.remote(self.ledger.epoch), 5.0)
                except Exception as exc:
                    log.info("shard %d not asked for its leases yet (%r); retrying", shard, exc)
            await asyncio.sleep(ASK_INTERVAL)

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

    def _ledger(self) -> LeaseLedger:
        if self.ledger is None:
            raise RuntimeError(f"the router did not start: {self._failed!r}")
        return self.ledger

    async def register_shard(self, shard: int) -> dict[str, int]:
        """A shard (re)starts: the lease block (spare slots a shard keeps stay a small
        part of the budget) and this router's epoch. Changes nothing: the shard then
        reports its leases with :meth:`lease`."""
        await self._ready.wait()
        ledger = self._ledger()
        return {"block": ledger.block, "epoch": ledger.epoch}

    async def lease(self, request: LeaseRequest) -> LeaseReply | None:
        """One request of a shard (``sync``, ``acquire``, ``release``); idempotent: a
        retried request gets the same reply and is applied once. None: stale, ignore."""
        await self._ready.wait()
        reply = self._ledger().handle(request)
        if reply is not None and reply != self._last_replies.get(request.shard):
            self._last_replies[request.shard] = reply
            if reply.kind == "granted":
                self.counters["slots_leased"] += reply.count
                self.counters["lease_shortfall"] += request.count - reply.count
            elif reply.kind == "released":
                self.counters["slots_returned"] += request.count
        return reply

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
            "leased": self.ledger.leased() if self.ledger else 0,
            "budget": self.budget,
            "grants": self.ledger.grants() if self.ledger else {},
            "unknown_shards": len(self.ledger.unknown()) if self.ledger else self.shards,
            "lease_epoch": self.ledger.epoch if self.ledger else 0,
            "actors": len(self.pool),
            "loads": dict(self.loads),
        }

    async def stats(self) -> dict[str, Any]:
        return {**(await self.active()), **self.counters, **_where(), **self.metrics.info()}

    async def shutdown(self) -> None:
        self.metrics.close()
        await self.tasks.cancel_all()
