"""Router actor: the reconciler of the Ray runtime.

It owns the hard state and keeps the rest honest:

* the cluster-wide budget of ``max_active_calls``: connection shards lease
  slots in blocks (so the router is not on the per-call path) and give back
  what they do not use; the rules (epochs, numbered requests, what a rebuild
  may count as free) are in :mod:`relay_actors.ray_runtime.admission`, whose
  :class:`~relay_actors.ray_runtime.admission.LeaseLedger` this actor only carries;
* the CallActor pool: created between ``min_actors`` and ``max_actors``,
  spread over the nodes (each new one on the node with the fewest of the app's:
  :func:`~relay_actors.ray_runtime.placement.spread_node`) or pinned to a custom resource, grown
  when the calls fill it, polled for health; a crashed or restarted CallActor
  (a new incarnation) is reported to every shard, which applies the
  lost-calls policy to the calls it had placed there;
* the call → CallActor table, reported by the shards in batches;
* rolling upgrades (:meth:`Router.upgrade`): a new code generation of CallActors
  with the new handlers; once every shard knows them, new calls go there only
  (:mod:`relay_actors.ray_runtime.placement`), and the older generation is retired:
  each old CallActor is stopped once it holds nothing (no call, handler, dial or
  unacknowledged item on any shard) — the shards forget it first, so its stop is
  never taken for a loss — and past the drain deadline its calls are hung up.

After its own restart it rebuilds all of that from the others: leases from the
shards (asked until each has reported; nothing is leased before), the pool by
actor name, calls from the CallActors. It never places a
call itself, so a restart cannot assign a call twice.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter
from typing import Any

from ..errors import RelayError
from ..tasks import BackgroundTasks
from . import kvstore, metrics_export
from .actor_messages import NAMESPACE, actor_name
from .admission import LEASE_BLOCK, LeaseLedger, LeaseReply, LeaseRequest
from .call_actor import CallActor, _where
from .gc_tuning import tune_gc
from .job_logs import show_in_job
from .placement import spread_node

__all__ = ["LEASE_BLOCK", "NAMESPACE", "Router"]

log = logging.getLogger("relay_actors.ray_runtime.router")
HEALTH_INTERVAL = 0.5
#: Health rounds between two looks at the cluster's nodes (where CallActors may go).
NODES_EVERY = 20
#: How often shards that have not reported their leases since a restart are asked again.
ASK_INTERVAL = 0.5
#: How long new CallActors of an upgrade get to come up (start, unpickle the handlers).
UPGRADE_START_TIMEOUT = 90.0
#: Deadline of each control call made while retiring a generation (shards, CallActors).
RETIRE_CALL_TIMEOUT = 5.0


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
        #: Rolling upgrades: the generation new CallActors run, each actor's, the current
        #: handlers (cloudpickled) and CallActor options, the retiring actors' drain
        #: deadlines (wall clock) and the retired indices (never reused: a shard that
        #: forgot one must not take a new actor of that number for it).
        self.generation = 0
        self.generations: dict[int, int] = {}
        self.handlers: bytes = options["handlers"]
        self.call_actor_options: dict[str, Any] = dict(options.get("call_actor", {}))
        self.retiring: dict[int, float] = {}
        self.retired: set[int] = set()
        #: The node of each CallActor (as it reports, else where it was asked to go),
        #: and the live nodes that can host one: where new ones go (spread_node).
        self.actor_nodes: dict[int, str] = {}
        self.nodes: list[str] = []
        #: Created by an upgrade and not up yet: not shown to the shards.
        self._admitting: set[int] = set()
        self._upgrade_lock = asyncio.Lock()
        self._retire_task: asyncio.Task[Any] | None = None
        self._secrets: kvstore.AppSecrets | None = None
        self._save_lock = asyncio.Lock()
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
        tune_gc()  # set up: freeze what start-up made (see gc_tuning)

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
            await self._load_generations(secrets)
            for idx in sorted(set(range(self.max_actors)) | set(self.generations)):
                try:
                    self.pool[idx] = ray.get_actor(actor_name(self.app, "call", idx), namespace=NAMESPACE)
                except ValueError:
                    continue
            await self._refresh_nodes()
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
                if health.get("node"):
                    self.actor_nodes[idx] = health["node"]
            await self._rebuild_calls()
            self.tasks.spawn(self._ask_shards(), "lease rebuild")
            self.tasks.spawn(self._health_loop(), "CallActor health loop")
            self._start_retiring()
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

    async def _refresh_nodes(self) -> None:
        """The live nodes that can host a CallActor (they offer CPU), from the GCS; kept
        as they were if it does not answer in time."""
        import ray

        try:
            nodes = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, ray.nodes), 10.0)
        except Exception as exc:
            log.info("could not list the cluster's nodes (%r); spreading as before", exc)
            return
        self.nodes = sorted(
            str(n["NodeID"]) for n in nodes if n.get("Alive") and (n.get("Resources") or {}).get("CPU", 0) > 0
        )

    def _free_index(self) -> int:
        idx = 0
        while idx in self.pool or idx in self.retired:
            idx += 1
        return idx

    def _create_actor(self, idx: int) -> Any:
        """A CallActor of the current generation (its handlers and options)."""
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
            current = [
                node
                for i, node in self.actor_nodes.items()
                if i in self.pool and self.generations.get(i, 0) == self.generation
            ]
            node = spread_node(self.nodes, current)
            if node is None:
                opts["scheduling_strategy"] = "SPREAD"
            else:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                # Soft: a node that cannot take it (or dies) lets Ray place it elsewhere.
                opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
                self.actor_nodes[idx] = node
        call_options = {
            **self.call_actor_options,
            "capacity": self.capacity,
            "shards": self.shards,
        }
        handle = ray.remote(CallActor).options(**opts).remote(self.app, idx, self.handlers, call_options)
        self.pool[idx] = handle
        self.loads[idx] = 0
        self.generations[idx] = self.generation
        self.counters["actors_created"] += 1
        if self.generation:
            self._persist_generations()
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

    async def pool_info(self, current_only: bool = False) -> list[tuple[int, Any, int]]:
        """``(index, handle, capacity)`` of every CallActor (of the current generation
        only with ``current_only``: where the driver sends its dials and messages)."""
        await self._ready.wait()
        return [
            (idx, handle, self.capacity)
            for idx, handle in self.pool.items()
            if idx not in self._admitting
            and (not current_only or self.generations.get(idx, 0) == self.generation)
        ]

    def _current(self) -> list[int]:
        """The CallActors of the current generation (those the pool bounds apply to)."""
        return [idx for idx in self.pool if self.generations.get(idx, 0) == self.generation]

    async def want_capacity(self) -> int:
        """A shard found every CallActor full: grow the pool if allowed."""
        if len(self._current()) < self.max_actors:
            await self._refresh_nodes()  # (nodes may have joined since)
            self._create_actor(self._free_index())
            await self._tell_shards("refresh_pool")
        return len(self.pool)

    async def _health_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            rounds += 1
            if rounds % NODES_EVERY == 0:
                await self._refresh_nodes()
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
                if health.get("node"):
                    self.actor_nodes[idx] = health["node"]
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
        current = self._current()
        if self._scaling or not current:
            return
        total = sum(self.loads.get(idx, 0) for idx in current)
        if total > 0.8 * self.capacity * len(current) and len(current) < self.max_actors:
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
                # Those on CallActors it could not ask (``item[2]``) are kept: unknown is
                # not "ended" (the shard reports them once it learns them).
                held = dict(item[1])
                unasked = set(item[2]) if len(item) > 2 else set()
                mine = [cid for cid, s in self.call_shard.items() if s == shard]
                for cid in [cid for cid in mine if cid not in held and self.calls.get(cid) not in unasked]:
                    self.calls.pop(cid, None)
                    self.call_shard.pop(cid, None)
                for cid, idx in held.items():
                    self.calls[cid] = idx
                    self.call_shard[cid] = shard
            else:
                self.calls.pop(item[1], None)
                self.call_shard.pop(item[1], None)

    async def calls_on(self, shard: int, idx: int) -> list[str]:
        """The calls ``shard`` last reported on CallActor ``idx`` (for a restarted shard
        that could never ask that CallActor itself before it was lost)."""
        await self._ready.wait()
        return [cid for cid, on in self.calls.items() if on == idx and self.call_shard.get(cid) == shard]

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

    # --- rolling upgrade ----------------------------------------------------------------

    async def generations_info(self) -> dict[str, Any]:
        """The current generation and each CallActor's (the shards place by it)."""
        await self._ready.wait()
        return {
            "generation": self.generation,
            "actors": {idx: gen for idx, gen in self.generations.items() if idx not in self._admitting},
            "retiring": sorted(self.retiring),
            # The job of the driver that owns the app now (whose logs show the actors').
            "log_job": self.call_actor_options.get("log_job") if self.generation else None,
        }

    async def upgrade(
        self, handlers: bytes, call_actor: dict[str, Any], drain_timeout: float
    ) -> dict[str, Any]:
        """Deploy new handler code: start a new generation of CallActors (as many as the
        current one has, at least ``min_actors``) with ``handlers``; once they are up,
        tell every shard, which then places new calls there only; retire the older
        CallActors (see the module docstring), hanging up what they still hold after
        ``drain_timeout`` s. If the new CallActors do not come up (their code fails to
        load), they are removed and ``RelayError("upgrade_failed")`` raised: the running
        generation goes on serving, untouched."""
        await self._ready.wait()
        async with self._upgrade_lock:
            count = max(self.min_actors, min(len(self._current()), self.max_actors))
            created: dict[int, Any] = {}
            generation = self.generation + 1
            for _ in range(count):
                idx = self._free_index()
                self._admitting.add(idx)
                created[idx] = self._spawn_generation_actor(idx, handlers, call_actor, generation)
            try:
                healths = await asyncio.wait_for(
                    asyncio.gather(*(h.health.remote() for h in created.values())), UPGRADE_START_TIMEOUT
                )
            except Exception as exc:
                await self._discard(created)
                self.counters["upgrades_failed"] += 1
                raise RelayError(
                    "upgrade_failed",
                    f"the new CallActors of app {self.app!r} did not come up ({type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}); the running "
                    f"generation {self.generation} goes on serving",
                ) from None
            self.generation, self.handlers, self.call_actor_options = generation, handlers, call_actor
            show_in_job(str(call_actor.get("log_job") or ""))
            for (idx, _), health in zip(created.items(), healths, strict=True):
                self.incarnations[idx] = health["incarnation"]
                self.loads[idx] = health["calls"]
                if health.get("node"):
                    self.actor_nodes[idx] = health["node"]
            self._admitting.difference_update(created)
            deadline = time.time() + drain_timeout
            # Every older CallActor (also one a scale-up made meanwhile) retires.
            for idx in self.pool:
                if self.generations.get(idx, 0) < generation:
                    self.retiring.setdefault(idx, deadline)
            await self._save_generations()
            told = await self._tell_shards_within("refresh_pool")
            if len(told) < self.shards:
                # They learn it at the next retirement check (see call_actor_busy).
                log.warning(
                    "app %r: shards %s not told of generation %d yet",
                    self.app,
                    sorted(set(range(self.shards)) - set(told)),
                    generation,
                )
            self.counters["upgrades"] += 1
            log.warning(
                "app %r: generation %d serves on CallActors %s; retiring %s (drain up to %g s)",
                self.app,
                generation,
                sorted(created),
                sorted(self.retiring),
                drain_timeout,
            )
            self._start_retiring()
            return {
                "generation": generation,
                "call_actors": sorted(created),
                "retiring": sorted(self.retiring),
                "shards_told": told,
            }

    def _spawn_generation_actor(
        self, idx: int, handlers: bytes, call_actor: dict[str, Any], generation: int
    ) -> Any:
        """A CallActor of ``generation`` (not shown to the shards until it is up)."""
        saved = self.handlers, self.call_actor_options, self.generation
        self.handlers, self.call_actor_options, self.generation = handlers, call_actor, generation
        try:
            return self._create_actor(idx)
        finally:
            self.handlers, self.call_actor_options, self.generation = saved
            self.generations[idx] = generation

    async def _discard(self, created: dict[int, Any]) -> None:
        """Remove the CallActors of a failed upgrade (no shard knows them)."""
        import ray

        for idx, handle in created.items():
            self.pool.pop(idx, None)
            self.loads.pop(idx, None)
            self.actor_nodes.pop(idx, None)
            self.generations.pop(idx, None)
            self.incarnations.pop(idx, None)
            self._admitting.discard(idx)
            self.retired.add(idx)
            try:
                ray.kill(handle, no_restart=True)
            except Exception as exc:  # gone already
                log.info("discarding CallActor %d: %r", idx, exc)
        await self._save_generations()

    def _start_retiring(self) -> None:
        if self.retiring and (self._retire_task is None or self._retire_task.done()):
            self._retire_task = self.tasks.spawn(self._retire_loop(), "retirement of older CallActors")

    async def _retire_loop(self) -> None:
        """Stop each retiring CallActor once it holds nothing; past its deadline, have
        the shards hang up its calls (they then end normally, through it)."""
        hung_up: set[int] = set()
        while self.retiring:
            for idx, deadline in sorted(self.retiring.items()):
                if await self._retired_idle(idx):
                    await self._remove_retired(idx)
                elif time.time() > deadline and idx not in hung_up:
                    hung_up.add(idx)
                    ended = await self._tell_shards_within("end_calls_on", idx)
                    self.counters["calls_hung_up_drain_timeout"] += sum(ended.values())
                    log.warning(
                        "app %r: CallActor %d (generation %d) still had calls at its drain deadline: "
                        "%d hung up",
                        self.app,
                        idx,
                        self.generations.get(idx, 0),
                        sum(ended.values()),
                    )
            await asyncio.sleep(HEALTH_INTERVAL)

    async def _retired_idle(self, idx: int) -> bool:
        """CallActor ``idx`` holds no call, handler or dial, and no shard routes anything
        to it (nor has items it did not acknowledge). "Could not ask" is "busy"."""
        handle = self.pool.get(idx)
        if handle is None:
            return True
        try:
            stats = await asyncio.wait_for(handle.stats.remote(), RETIRE_CALL_TIMEOUT)
        except Exception:
            return False
        if stats.get("calls") or stats.get("handler_tasks") or stats.get("pending_dials"):
            return False
        busy = await self._tell_shards_within("call_actor_busy", idx, self.generation)
        return len(busy) == self.shards and not any(busy.values())

    async def _remove_retired(self, idx: int) -> None:
        """Every shard forgets CallActor ``idx`` (so its end is no loss to them), then it
        is shut down and killed; while a shard cannot be told, or still has something
        with it, it stays (retiring) for the next try."""
        import ray

        told = await self._tell_shards_within("forget_call_actor", idx)
        if len(told) < self.shards or not all(told.values()):
            return  # a shard is busy with it after all, or did not answer: next time
        handle = self.pool.pop(idx, None)
        self.retiring.pop(idx, None)
        self.generations.pop(idx, None)
        self.incarnations.pop(idx, None)
        self.loads.pop(idx, None)
        self.actor_nodes.pop(idx, None)
        self.retired.add(idx)
        self.counters["call_actors_retired"] += 1
        await self._save_generations()
        if handle is not None:
            try:
                await asyncio.wait_for(handle.shutdown.remote(), RETIRE_CALL_TIMEOUT)
            except Exception as exc:  # stopping it anyway
                log.info("CallActor %d did not shut down cleanly: %r", idx, exc)
            try:
                ray.kill(handle, no_restart=True)
            except Exception as exc:
                log.info("CallActor %d: kill failed: %r", idx, exc)
        log.info("app %r: retired CallActor %d (drained)", self.app, idx)

    async def _tell_shards_within(self, method: str, *args: Any) -> dict[int, Any]:
        """Call ``method`` on every shard (each bounded); the answers of those that did."""
        import ray

        async def ask(shard: int) -> Any:
            handle = ray.get_actor(actor_name(self.app, "connection", shard), namespace=NAMESPACE)
            return await asyncio.wait_for(getattr(handle, method).remote(*args), RETIRE_CALL_TIMEOUT)

        answers = await asyncio.gather(*(ask(s) for s in range(self.shards)), return_exceptions=True)
        told = {}
        for shard, answer in enumerate(answers):
            if isinstance(answer, BaseException):
                log.info("shard %d did not answer %s: %r", shard, method, answer)
            else:
                told[shard] = answer
        return told

    # The generations live in the deploy's KV namespace: a restarted router (whose
    # constructor arguments hold the first generation's handlers) carries on with the
    # current code and finishes the retirement. The handlers are the app's code, as an
    # actor argument would carry it: inside Ray's GCS, behind its auth, never on a socket.

    async def _load_generations(self, secrets: kvstore.AppSecrets) -> None:
        self._secrets = secrets
        state = await secrets.load("generations")
        if not state:
            return
        self.generation = int(state["generation"])
        self.generations = {int(k): int(v) for k, v in state["actors"].items()}
        self.retiring = {int(k): float(v) for k, v in state["retiring"].items()}
        self.retired = {int(k) for k in state["retired"]}
        if state.get("handlers"):
            self.handlers = base64.b64decode(state["handlers"])
            self.call_actor_options = dict(state["call_actor"])
            show_in_job(str(self.call_actor_options.get("log_job") or ""))

    def _generations_state(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "actors": {str(k): v for k, v in self.generations.items() if k not in self._admitting},
            "retiring": {str(k): v for k, v in self.retiring.items()},
            "retired": sorted(self.retired),
            "handlers": base64.b64encode(self.handlers).decode() if self.generation else None,
            "call_actor": self.call_actor_options,
        }

    async def _save_generations(self) -> None:
        """One write at a time, each of the state as it is then: the last one stored is
        the latest state, whatever order the writers came in."""
        async with self._save_lock:
            if self._secrets is not None:
                await self._secrets.save("generations", self._generations_state())

    def _persist_generations(self) -> None:
        """:meth:`_save_generations` from sync code."""
        self.tasks.spawn(self._save_generations(), "store of the generations")
