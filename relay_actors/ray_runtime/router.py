"""Router actor: the reconciler of the Ray runtime, a shell over two plain cores.

It owns the hard state and keeps the rest honest:

* the cluster-wide budget of ``max_active_calls``: connection shards lease
  slots in blocks (so the router is not on the per-call path) and give back
  what they do not use; the rules (epochs, numbered requests, what a rebuild
  may count as free) are in :mod:`relay_actors.ray_runtime.admission`, whose
  :class:`~relay_actors.ray_runtime.admission.LeaseLedger` this actor only carries;
* the CallActor pool, decided by :class:`~relay_actors.ray_runtime.pool_core.PoolCore`
  (size, health, autoscaling, spread placement, generations, rolling upgrades and
  retirement, the call → CallActor table): this actor makes the Ray calls (each with
  a deadline, behind :class:`CallActors` and :class:`Shards`), keeps the core's state
  in the KV store and runs its timers. Every change the shards must learn is pushed
  to them as one versioned :class:`~relay_actors.ray_runtime.pool_core.PoolSnapshot`
  (:meth:`Router._publish`; a shard that missed one gets it again from the health
  loop, and a starting shard asks for it with :meth:`Router.pool_snapshot`).

Rolling upgrades (:meth:`Router.upgrade`): a new code generation of CallActors with
the new handlers; once every shard knows them, new calls go there only
(:mod:`relay_actors.ray_runtime.placement`), and the older generation is retired: each
old CallActor is stopped once it holds nothing (no call, handler, dial or
unacknowledged item on any shard) — the shards forget it first, so its stop is never
taken for a loss — and past the drain deadline its calls are hung up.

After its own restart it rebuilds all of that from the others: leases from the
shards (asked until each has reported; nothing is leased before), the pool by
actor name and the stored generations, calls from the CallActors. It never places a
call itself, so a restart cannot assign a call twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..backoff import Backoff
from ..errors import RelayError
from ..tasks import BackgroundTasks
from . import kvstore, metrics_export
from .actor_info import where
from .actor_messages import NAMESPACE, actor_name
from .admission import LEASE_BLOCK, LeaseLedger, LeaseReply, LeaseRequest
from .gc_tuning import tune_gc
from .job_logs import show_in_job
from .options import RouterOptions
from .pool_core import (
    ActorHealth,
    ActorLost,
    PoolCore,
    PoolSnapshot,
    RetireStep,
    RouterReport,
    ShardCheck,
    ShardRestarts,
    Spawn,
)
from .shard_handles import shard_handle
from .spawn import spawn_call_actor

__all__ = ["LEASE_BLOCK", "NAMESPACE", "CallActors", "Router", "Shards"]

log = logging.getLogger("relay_actors.ray_runtime.router")
HEALTH_INTERVAL = 0.5
#: Deadline of each health poll of a CallActor.
HEALTH_TIMEOUT = 10.0
#: Health rounds between two looks at the cluster's nodes (where CallActors may go).
NODES_EVERY = 20
#: How often shards that have not reported their leases since a restart are asked again.
ASK_INTERVAL = 0.5
#: How often the router asks each shard whether it started (see ShardRestarts).
SHARD_CHECK_INTERVAL = 2.0
#: Start-up tried again after a failure: first after this many seconds, doubling up to the next.
START_RETRY_FIRST = 0.5
START_RETRY_MAX = 10.0
#: How long the CallActors get to answer their first health poll at start-up.
START_HEALTH_TIMEOUT = 30.0
#: How long new CallActors of an upgrade get to come up (start, unpickle the handlers).
UPGRADE_START_TIMEOUT = 90.0
#: Deadline of each control call to a shard or a CallActor (retirement, notices, rebuild).
CONTROL_TIMEOUT = 5.0


def new_pool(options: RouterOptions) -> PoolCore:
    """The pool's core as ``options`` say (a router's, or the driver's first CallActors')."""
    return PoolCore(
        shards=options.shards,
        min_actors=options.min_actors,
        max_actors=options.max_actors,
        capacity=options.capacity,
        spread=options.spread,
        handlers=options.handlers,
        call_actor_options=options.call_actor,
    )


def hosting_nodes(nodes: Iterable[dict[str, Any]]) -> list[str]:
    """The ids of the live nodes of ``ray.nodes()`` that can host a CallActor (they offer CPU)."""
    return [
        str(n["NodeID"]) for n in nodes if n.get("Alive") and (n.get("Resources") or {}).get("CPU", 0) > 0
    ]


class CallActors:
    """Every Ray call the router makes to CallActors, each with a deadline."""

    def __init__(self, app: str, options: RouterOptions) -> None:
        self.app = app
        self.options = options
        self.handles: dict[int, Any] = {}

    def find(self, idx: int) -> bool:
        """Look CallActor ``idx`` up by name (after a router restart); False: none."""
        import ray

        try:
            self.handles[idx] = ray.get_actor(actor_name(self.app, "call", idx), namespace=NAMESPACE)
        except ValueError:
            return False
        return True

    def create(self, spawn: Spawn, handlers: bytes, call_actor_options: dict[str, Any]) -> None:
        self.handles[spawn.index] = spawn_call_actor(
            self.app,
            spawn.index,
            spawn.node,
            self.options.placement,
            self.options.num_cpus,
            handlers,
            call_actor_options,
            capacity=self.options.capacity,
            shards=self.options.shards,
        )

    async def health(
        self, indices: Iterable[int], timeout: float = HEALTH_TIMEOUT
    ) -> dict[int, ActorHealth | None]:
        """Each one's ``health()`` (None: no answer in time, or it failed)."""
        order = [i for i in indices if i in self.handles]
        answers = await asyncio.gather(
            *(asyncio.wait_for(self.handles[i].health.remote(), timeout) for i in order),
            return_exceptions=True,
        )
        return {
            i: None if isinstance(a, BaseException) else ActorHealth.from_dict(a)
            for i, a in zip(order, answers, strict=True)
        }

    async def up(self, indices: Iterable[int], timeout: float) -> dict[int, ActorHealth]:
        """Each one's ``health()`` once it is up; raises the first failure, or
        :class:`TimeoutError` if they are not all up within ``timeout``."""
        order = list(indices)
        answers = await asyncio.wait_for(
            asyncio.gather(*(self.handles[i].health.remote() for i in order)), timeout
        )
        return {i: ActorHealth.from_dict(a) for i, a in zip(order, answers, strict=True)}

    async def owned(self, shard: int) -> dict[int, list[str]]:
        """The calls each holds for ``shard`` (those that answered)."""
        order = list(self.handles)
        answers = await asyncio.gather(
            *(asyncio.wait_for(self.handles[i].owned.remote(shard), CONTROL_TIMEOUT) for i in order),
            return_exceptions=True,
        )
        return {
            i: [cid for cid, _node in a["calls"]]
            for i, a in zip(order, answers, strict=True)
            if not isinstance(a, BaseException)
        }

    async def busy(self, idx: int) -> bool | None:
        """Whether ``idx`` holds a call, a handler or a dial (None: could not ask)."""
        handle = self.handles.get(idx)
        if handle is None:
            return False
        try:
            stats = await asyncio.wait_for(handle.stats.remote(), CONTROL_TIMEOUT)
        except Exception:
            return None
        return bool(stats.get("calls") or stats.get("handler_tasks") or stats.get("pending_dials"))

    async def stop(self, idx: int, *, clean: bool) -> None:
        """Shut ``idx`` down (``clean``: let it close its links first), then kill it."""
        import ray

        handle = self.handles.pop(idx, None)
        if handle is None:
            return
        if clean:
            try:
                await asyncio.wait_for(handle.shutdown.remote(), CONTROL_TIMEOUT)
            except Exception as exc:  # stopping it anyway
                log.info("CallActor %d did not shut down cleanly: %r", idx, exc)
        try:
            ray.kill(handle, no_restart=True)
        except Exception as exc:  # gone already
            log.info("CallActor %d: kill failed: %r", idx, exc)


class Shards:
    """Every Ray call the router makes to the connection actors, each with a deadline."""

    def __init__(self, app: str, count: int) -> None:
        self.app = app
        self.count = count
        self._handles: dict[int, Any] = {}

    def _handle(self, shard: int) -> Any:
        """The shard's handle (a named actor's handle outlives its restarts: looked up once)."""

        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = shard_handle(self.app, shard)
        return handle

    async def check(self) -> dict[int, ShardCheck]:
        """What each shard's ``ready()`` says: ready, failed (it raised its start-up
        failure) or no answer (starting, stalled, restarting, not created yet)."""
        from ray.exceptions import RayTaskError

        async def one(shard: int) -> ShardCheck:
            try:
                await self.ask_one(shard, "ready")
            except RayTaskError:
                return ShardCheck.FAILED
            except Exception:
                return ShardCheck.NO_ANSWER
            return ShardCheck.READY

        return dict(enumerate(await asyncio.gather(*(one(s) for s in range(self.count)))))

    def restart(self, shard: int) -> None:
        """Kill the shard's processes; Ray starts them again (``max_restarts=-1``)."""
        self._handle(shard).kill()

    async def ask(self, method: str, *args: Any, shards: Iterable[int] | None = None) -> dict[int, Any]:
        """Call ``method`` on every shard (or on ``shards``); the answers of those that
        answered in time."""
        asked = list(range(self.count) if shards is None else shards)
        answers = await asyncio.gather(
            *(self.ask_one(s, method, *args) for s in asked), return_exceptions=True
        )
        told = {}
        for shard, answer in zip(asked, answers, strict=True):
            if isinstance(answer, BaseException):
                log.info("shard %d did not answer %s: %r", shard, method, answer)
            else:
                told[shard] = answer
        return told

    async def ask_one(self, shard: int, method: str, *args: Any) -> Any:
        return await asyncio.wait_for(getattr(self._handle(shard), method).remote(*args), CONTROL_TIMEOUT)


class Router:
    """See the module docstring. Create with :func:`relay_actors.ray_runtime.spawn.spawn_control_actor`.

    Args:
        app: the app's name.
        options: see :class:`~relay_actors.ray_runtime.options.RouterOptions`.
    """

    def __init__(self, app: str, options: RouterOptions) -> None:
        self.app = app
        self.options = options
        self.budget = options.max_active_calls
        self.shards = options.shards
        self.pool = self._new_pool()
        self.call_actors = CallActors(app, options)
        self.shard_actors = Shards(app, options.shards)
        self.shard_restarts = ShardRestarts()
        #: Set at start-up, once this router's epoch is known.
        self.ledger: LeaseLedger | None = None
        self.counters: Counter[str] = Counter()
        #: Per shard, the last reply counted in the lease counters (a retry is not recounted).
        self._last_replies: dict[int, LeaseReply] = {}
        #: Per shard, the newest pool snapshot it said it has (``PoolSnapshot.key``).
        self._shard_pool: dict[int, tuple[int, int]] = {}
        self._publishing = False
        self.tasks = BackgroundTasks()
        #: Set once started (the methods shards and the driver call wait for it).
        self._ready = asyncio.Event()
        #: Set once the first start-up attempt ended, well or not (:meth:`ready` waits for it).
        self._attempted = asyncio.Event()
        self._failed: BaseException | None = None
        self._upgrade_lock = asyncio.Lock()
        self._retire_task: asyncio.Task[Any] | None = None
        self._secrets: kvstore.AppSecrets | None = None
        self._save_lock = asyncio.Lock()
        self._start_task = asyncio.get_running_loop().create_task(self._start())
        # The app's metrics endpoint lives here: the router lives as long as the app.
        self.metrics = metrics_export.AppMetrics(
            app,
            metrics_export.MetricsConfig.from_dict(options.metrics),
            metrics_export.AppComponents(app, self.shards, self, lambda: self.call_actors.handles),
        )
        self.metrics.start()
        self.tasks.spawn(self.metrics.run(), "metrics poll")
        tune_gc()  # set up: freeze what start-up made (see gc_tuning)

    # --- start-up and rebuild -----------------------------------------------------

    def _new_pool(self) -> PoolCore:
        return new_pool(self.options)

    async def _start(self) -> None:
        """Start up, and again after a failure (the KV store or the GCS briefly away while
        the cluster recovers), with backoff, until it works: a router that failed once
        must not leave the app without leases for good. :meth:`ready` reports the first
        attempt's failure to the driver meanwhile."""
        backoff = Backoff(initial=START_RETRY_FIRST, cap=START_RETRY_MAX, attempts=1)
        while True:
            try:
                await self._start_once()
            except Exception as exc:
                self._failed = exc
                delay = backoff.next_delay()
                log.exception("router of app %r failed to start; trying again in %.1f s", self.app, delay)
            else:
                self._failed = None
                self._ready.set()
                return
            finally:
                self._attempted.set()
            await asyncio.sleep(delay)

    async def _start_once(self) -> None:
        # A fresh core each attempt: what a failed one learned is learned again.
        self.pool = self._new_pool()
        # Each router a higher epoch than any before it: requests a shard meant for
        # an earlier one are refused, never applied to this one's ledger.
        secrets = self._secrets = await kvstore.AppSecrets.open(self.app)
        epoch = int(await secrets.load("router_epoch") or 0) + 1
        await secrets.save("router_epoch", epoch)
        self.ledger = LeaseLedger(self.budget, self.shards, epoch)
        self.pool.epoch = epoch  # (this router's pool snapshots are newer than any before)
        # The generations live in the deploy's KV namespace: a restarted router (whose
        # constructor arguments hold the first generation's handlers) carries on with
        # the current code and finishes the retirement.
        self.pool.restore(await secrets.load("generations"))
        if self.pool.generation:
            show_in_job(str(self.pool.call_actor_options.get("log_job") or ""))
        for idx in self.pool.lookup_indices():
            if self.call_actors.find(idx) and not self.pool.adopt(idx):
                log.warning("app %r: CallActor %d of an unfinished upgrade removed", self.app, idx)
                await self.call_actors.stop(idx, clean=False)
        self.pool.adopted()
        await self._refresh_nodes()
        for spawn in self.pool.fill():
            self._create(spawn)
        for idx, health in (await self.call_actors.health(self.pool.actors, START_HEALTH_TIMEOUT)).items():
            self.pool.health(idx, health)
        for shard in range(self.shards):
            for idx, call_ids in (await self.call_actors.owned(shard)).items():
                self.pool.owned(shard, idx, call_ids)
        await self._save()
        self.tasks.spawn(self._ask_shards(), "lease rebuild")
        self.tasks.spawn(self._health_loop(), "CallActor health loop")
        self.tasks.spawn(self._watch_shards(), "shard supervision")
        self._start_retiring()

    async def _ask_shards(self) -> None:
        """Ask the shards that have not reported in this epoch to report, until all have.
        One that cannot be asked (not started, restarting, slow) stays unknown, which
        reserves the budget (see :mod:`relay_actors.ray_runtime.admission`): "could not ask" is
        "retry", never "free". A shard that calls first learns the epoch anyway."""
        ledger = self._ledger()
        while unknown := ledger.unknown():
            for shard in unknown:
                try:
                    await self.shard_actors.ask_one(shard, "lease_state", ledger.epoch)
                except Exception as exc:
                    log.info("shard %d not asked for its leases yet (%r); retrying", shard, exc)
            await asyncio.sleep(ASK_INTERVAL)

    async def ready(self) -> dict[str, Any]:
        """Once started; raises why the start failed (it is tried again meanwhile)."""
        await self._attempted.wait()
        if self._failed is not None and not self._ready.is_set():
            raise self._failed
        return {"actors": len(self.pool.actors)}

    async def _refresh_nodes(self) -> None:
        """The live nodes that can host a CallActor (they offer CPU), from the GCS; kept
        as they were if it does not answer in time."""
        import ray

        try:
            nodes = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, ray.nodes), 10.0)
        except Exception as exc:
            log.info("could not list the cluster's nodes (%r); spreading as before", exc)
            return
        self.pool.set_nodes(hosting_nodes(nodes))

    def _create(
        self, spawn: Spawn, handlers: bytes | None = None, options: dict[str, Any] | None = None
    ) -> None:
        """Create the CallActor the core asked for (with the current code unless given)."""
        self.call_actors.create(
            spawn,
            self.pool.handlers if handlers is None else handlers,
            self.pool.call_actor_options if options is None else options,
        )

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
        handles = self.call_actors.handles
        return [
            (idx, handles[idx], self.pool.capacity) for idx in self.pool.view(current_only) if idx in handles
        ]

    async def pool_snapshot(self) -> tuple[PoolSnapshot, dict[int, Any]]:
        """The pool as one versioned value (see :class:`~relay_actors.ray_runtime.pool_core.PoolSnapshot`)
        with each of its CallActors' handle: what a (re)starting shard asks for."""
        await self._ready.wait()
        return self._snapshot()

    def _snapshot(self) -> tuple[PoolSnapshot, dict[int, Any]]:
        snapshot = self.pool.snapshot()
        handles = self.call_actors.handles
        return snapshot, {i: handles[i] for i, _ in snapshot.actors if i in handles}

    def _behind(self) -> list[int]:
        """The shards not known to have the current pool snapshot."""
        key = self.pool.snapshot().key
        return [s for s in range(self.shards) if self._shard_pool.get(s, (-1, -1)) < key]

    async def _publish(self) -> dict[int, Any]:
        """Push the pool snapshot to every shard not known to have it (each push bounded;
        a shard applies it only if newer, so pushes may cross). Returns the shards that
        have it now; those that did not answer get it from the health loop later."""
        snapshot, handles = self._snapshot()
        told = await self.shard_actors.ask("apply_pool", snapshot, handles, shards=self._behind())
        for shard, key in told.items():
            self._shard_pool[shard] = max(self._shard_pool.get(shard, (-1, -1)), tuple(key))
        return told

    def _publish_if_behind(self) -> None:
        """A shard missed a snapshot (it did not answer, restarted): push it again (one push
        task at a time)."""
        if self._publishing or not self._behind():
            return
        self._publishing = True

        async def publish() -> None:
            try:
                await self._publish()
            finally:
                self._publishing = False

        self.tasks.spawn(publish(), "pool snapshot push")

    async def want_capacity(self) -> int:
        """A shard found every CallActor full: grow the pool if allowed."""
        await self._ready.wait()
        if len(self.pool.current()) < self.pool.max_actors:
            await self._refresh_nodes()  # (nodes may have joined since)
            spawn = self.pool.want_capacity()
            if spawn is not None:
                self._create(spawn)
                await self._save()
                await self._publish()
        return len(self.pool.actors)

    async def _health_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            rounds += 1
            if rounds % NODES_EVERY == 0:
                await self._refresh_nodes()
            for idx, health in (await self.call_actors.health(list(self.pool.actors))).items():
                lost = self.pool.health(idx, health)
                if lost is not None:
                    log.error("CallActor %d restarted; its calls are handled by the lost-calls policy", idx)
                    self.tasks.spawn(self._tell_lost(lost), f"CallActor {idx} lost")
            spawn = self.pool.autoscale()
            if spawn is not None:
                self.tasks.spawn(self._grow(spawn), "scale up")
            self._publish_if_behind()

    async def _watch_shards(self) -> None:
        """Restart a shard whose start-up failed (see
        :class:`~relay_actors.ray_runtime.pool_core.ShardRestarts`): started while this
        router was itself restarting, say, it would otherwise serve nothing until
        something else killed it."""
        while True:
            await asyncio.sleep(SHARD_CHECK_INTERVAL)
            for shard, seen in (await self.shard_actors.check()).items():
                if self.shard_restarts.check(shard, seen, time.monotonic()):
                    log.error("app %r: shard %d failed to start; the router restarts it", self.app, shard)
                    try:
                        self.shard_actors.restart(shard)
                    except Exception as exc:  # gone, or being restarted already
                        log.warning("app %r: could not restart shard %d: %r", self.app, shard, exc)

    async def _tell_lost(self, lost: ActorLost) -> None:
        await self.shard_actors.ask("call_actor_lost", lost.index, lost.incarnation, lost.previous)

    async def _grow(self, spawn: Spawn) -> None:
        try:
            self._create(spawn)
            await self._save()
            await self._publish()
        finally:
            self.pool.scaled()

    # --- call table -------------------------------------------------------------------

    async def report(self, shard: int, batch: list[RouterReport]) -> None:
        """Placements, moves, releases and syncs of ``shard``'s calls (see
        :meth:`~relay_actors.ray_runtime.pool_core.PoolCore.report`). Applied only after the
        rebuild: a release applied while the rebuild reads the CallActors would be undone
        by their answer (read before the call ended), leaking the call."""
        await self._ready.wait()
        before = self.pool.counters["double_assignments"]
        self.pool.report(shard, batch)
        if self.pool.counters["double_assignments"] > before:
            log.error("shard %d reported a call on two CallActors", shard)

    async def calls_on(self, shard: int, idx: int) -> list[str]:
        """The calls ``shard`` last reported on CallActor ``idx`` (for a restarted shard
        that could never ask that CallActor itself before it was lost)."""
        await self._ready.wait()
        return self.pool.calls_on(shard, idx)

    async def active(self) -> dict[str, Any]:
        """Cluster-wide counts: what tests sample to check the limit."""
        return {
            "calls": len(self.pool.calls),
            "leased": self.ledger.leased() if self.ledger else 0,
            "budget": self.budget,
            "grants": self.ledger.grants() if self.ledger else {},
            "unknown_shards": len(self.ledger.unknown()) if self.ledger else self.shards,
            "lease_epoch": self.ledger.epoch if self.ledger else 0,
            "actors": len(self.pool.actors),
            "loads": self.pool.loads(),
            # Shards restarted because their start-up failed (see ShardRestarts).
            "shards_restarted": sum(self.shard_restarts.restarts.values()),
        }

    async def stats(self) -> dict[str, Any]:
        return {
            **(await self.active()),
            **self.counters,
            **self.pool.counters,
            **where(),
            **self.metrics.info(),
        }

    async def shutdown(self) -> None:
        self.metrics.close()
        await self.tasks.cancel_all()

    # --- rolling upgrade ----------------------------------------------------------------

    async def generations_info(self) -> dict[str, Any]:
        """The current generation and each CallActor's (the shards place by it)."""
        await self._ready.wait()
        return self.pool.generations_info()

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
            spawns = self.pool.begin_upgrade(handlers, call_actor)
            for spawn in spawns:
                self._create(spawn, handlers, call_actor)
            await self._save()
            created = [s.index for s in spawns]
            try:
                healths = await self.call_actors.up(created, UPGRADE_START_TIMEOUT)
            except Exception as exc:
                for idx in self.pool.upgrade_failed():
                    await self.call_actors.stop(idx, clean=False)
                await self._save()
                last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
                raise RelayError(
                    "upgrade_failed",
                    f"the new CallActors of app {self.app!r} did not come up ({type(exc).__name__}: {last}); "
                    f"the running generation {self.pool.generation} goes on serving",
                ) from None
            retiring = self.pool.upgrade_up(healths, time.time(), drain_timeout)
            show_in_job(str(call_actor.get("log_job") or ""))
            await self._save()
            generation = self.pool.generation
            told = await self._publish()
            if missing := self._behind():
                # The health loop pushes it again; the retirement check asks first (see call_actor_busy).
                log.warning("app %r: shards %s not told of generation %d yet", self.app, missing, generation)
            log.warning(
                "app %r: generation %d serves on CallActors %s; retiring %s (drain up to %g s)",
                self.app,
                generation,
                created,
                retiring,
                drain_timeout,
            )
            self._start_retiring()
            return {
                "generation": generation,
                "call_actors": created,
                "retiring": retiring,
                "shards_told": told,
            }

    def _start_retiring(self) -> None:
        if self.pool.retiring and (self._retire_task is None or self._retire_task.done()):
            self._retire_task = self.tasks.spawn(self._retire_loop(), "retirement of older CallActors")

    async def _retire_loop(self) -> None:
        """Carry out the core's retirement steps until no CallActor is retiring."""
        while self.pool.retiring:
            for idx in sorted(self.pool.retiring):
                await self._retire_one(idx)
            await asyncio.sleep(HEALTH_INTERVAL)

    async def _retire_one(self, idx: int) -> None:
        actor_busy = await self.call_actors.busy(idx)
        # (Asked with the current generation: a shard that missed it learns it first.)
        shards_busy = await self.shard_actors.ask("call_actor_busy", idx, self.pool.generation)
        step = self.pool.retire_step(idx, actor_busy, shards_busy, time.time())
        if step is RetireStep.FORGET:
            # Every shard forgets it first (so its end is no loss to them); while one
            # cannot be told, or still has something with it, it stays retiring.
            if self.pool.forgotten(idx, await self.shard_actors.ask("forget_call_actor", idx)):
                await self._save()
                self._publish_if_behind()
                await self.call_actors.stop(idx, clean=True)
                log.info("app %r: retired CallActor %d (drained)", self.app, idx)
        elif step is RetireStep.HANG_UP:
            ended = await self.shard_actors.ask("end_calls_on", idx)
            self.pool.hung_up_calls(sum(ended.values()))
            log.warning(
                "app %r: CallActor %d still had calls at its drain deadline: %d hung up",
                self.app,
                idx,
                sum(ended.values()),
            )

    async def _save(self) -> None:
        """Store the pool's state. One write at a time, each of the state as it is then:
        the last one stored is the latest, whatever order the writers came in."""
        async with self._save_lock:
            if self._secrets is not None:
                await self._secrets.save("generations", self.pool.persisted())
