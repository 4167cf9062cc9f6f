"""Connection actor: owns one RELAY WebSocket session (one shard) on Ray.

Its event loop is the hot spot, so it does only this: parse, admit, route,
send, ack. Every inbound event goes to the CallActor that owns its call over
a direct link (:mod:`relay_actors.ray_runtime.actor_link` around the sans-IO
:mod:`relay_actors.ray_runtime.link_protocol`: a Ray call per batch costs ~0.5 ms of CPU at
each end, which at steady load, where batches stay small, would dwarf the
rest); what one loop iteration produces for a CallActor leaves as one frame.
An event is acked to RELAY only once the CallActor has acknowledged the frame
that carried it, so a crash anywhere before that means the server redelivers
(CallActors drop the duplicates by event id), never that the event is lost.
Requests come back from CallActors on the same link.

A link that breaks is reconnected and what it had not acknowledged is resent;
a CallActor that stops acknowledging takes no new calls (placement skips it)
and is reported; only a new incarnation (Ray restarted it), a deadline of
unreachability or a full queue apply the lost-calls policy — and then the
offers it never acknowledged go to another CallActor instead of being hung up,
and commands for the calls taken from it are refused (fenced).

Admission: this shard admits an offer only with a slot leased from the router
(which holds the cluster-wide ``max_active_calls``), so the router stays off
the per-call path: slots are leased in blocks and returned when idle. The
rules are in :mod:`relay_actors.ray_runtime.admission` (:class:`ShardLeases`), the choice
of a CallActor in :mod:`relay_actors.ray_runtime.placement`; this actor carries out their
decisions: it sends the lease requests (one at a time, retransmitted until
answered) and places, drops or passes the offers.

Survives ``kill -9``: Ray restarts it (same name); it reads its credentials and
resume state (``protocol``, ``authorization_state``, contexts) from the GCS
key-value store, rebuilds its routing table from the CallActors (they know
their calls, dials and messages), and resumes the session, so the server
redelivers what was not acked. CallActors see its new incarnation in the link
handshake: requests it may have received fail (``connection_lost``), those
that never left them are sent to the new one; requests that reach it before its
RELAY connection exists wait for it (they never reached the server, so an
idempotent verb's resend must not fail for that).
"""

from __future__ import annotations

import asyncio
import logging
import os
from functools import partial
from typing import Any

from ..backoff import Backoff
from ..config import resolve_settings, updated_contexts
from ..connection import Connection
from ..errors import RelayError
from ..protocol import constants as c
from ..protocol.session import Connected
from ..tasks import BackgroundTasks
from . import (
    kvstore,
    link_tls,
    tracing_setup,  # tracing hook
)
from .actor_info import link_stats
from .actor_info import where as _where
from .actor_link import LinkClient, LinkHub
from .actor_messages import NAMESPACE, ToCallActor, actor_name, decode_to_call_actor, encode
from .batching import Batcher
from .cpu_priority import claim_normal_priority
from .gc_tuning import tune_gc
from .job_logs import show_in_job
from .link_protocol import LinkOverflow, LinkSession
from .options import ConnectionActorOptions
from .pool_core import PoolSnapshot, RouterReport
from .shard_actions import (
    Action,
    AskLastKnown,
    AskOwned,
    Checkpoint,
    Command,
    ConfirmLoss,
    LinkEntry,
    LoseActor,
    LossHandled,
    RequestLease,
    RetryHangups,
    StoreUnconfirmed,
    TrackContexts,
    WaitForRoom,
    WantCapacity,
)
from .shard_core import ShardCore, shard_stats
from .shard_standby import Seat
from .shard_startup import ShardStartup, StartStep
from .standby_forwarding import forwarding, run_forwarded, served_here
from .standby_watch import StandbyWatch

__all__ = ["ConnectionActor"]

log = logging.getLogger("relay_actors.ray_runtime.connection_actor")

#: Waiting offers are dropped (or passed) when the router has not answered for this long.
LEASE_TIMEOUT = 5.0
#: A failed hang-up of a lost CallActor's call is retried, backing off up to this.
HANGUP_RETRY_MAX = 30.0
#: A CallActor's answer to ``owned()`` (the rebuild after a restart) is awaited this long.
OWNED_TIMEOUT = 10.0
#: An admitted offer waits this long for a lagging CallActor (ring timeouts are ~30 s).
ROOM_WAIT = 3.0
#: The router's answer to a request for one more CallActor (it lists the nodes, creates
#: it and pushes the pool, 5 s at most) is awaited this long.
CAPACITY_TIMEOUT = 20.0
#: Each try of a start-up step (and each call to the router in it) is awaited this long.
STEP_TIMEOUT = 10.0
#: The router's ``call_actor_lost`` waits this long for the policy to finish.
LOSS_WAIT = 60.0
#: A pushed pool snapshot is answered once its new CallActors are linked, or after this
#: (the router's deadline for the push is 5 s).
LINK_WAIT = 2.0

async def call_while_restarting(
    handle: Any, method: str, *args: Any, what: str, timeout: float = 30.0
) -> Any:
    """Call ``method`` of the actor ``handle``, retrying while Ray restarts it
    (``ActorUnavailableError``, or an error of a call in flight when it died) for up to
    ``timeout`` seconds, each try bounded; ``what`` names the caller in the log."""
    from ray.exceptions import RayActorError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    backoff = Backoff(initial=0.05, cap=1.0, attempts=1)
    while True:
        try:
            return await asyncio.wait_for(getattr(handle, method).remote(*args), 10.0)
        except (RayActorError, asyncio.TimeoutError) as exc:
            if loop.time() > deadline:
                raise
            log.info("%s: no answer to %s (%r); retrying", what, method, exc)
            await asyncio.sleep(backoff.next_delay())


def decoded_entries(unacknowledged: list[tuple[Any, str | None]]) -> list[LinkEntry]:
    """A link's unacknowledged (wire, ack id) entries as the typed items the core reads
    (its lost-actor policy re-places the offers among them)."""
    return [(decode_to_call_actor(wire), ack) for wire, ack in unacknowledged]


class ShellEffects:
    """The connection actor's side of :class:`~relay_actors.ray_runtime.shard_actions.ShardEffects`:
    what the core asks for on the event path, and the rarer actions as tasks and timers."""

    def __init__(self, actor: ConnectionActor) -> None:
        self.actor = actor
        self._leasing = False
        self._retrying_hangups = False
        self._storing_unconfirmed = False
        self._unconfirmed: list[list[str]] | None = None
        self._checkpoint_pending = False

    def send(self, idx: int, item: ToCallActor, ack_id: str | None) -> bool:
        links = self.actor.links
        assert links is not None
        try:
            links.send(idx, encode(item), ack_id)
        except LinkOverflow as exc:
            log.error("shard %d: %s", self.actor.shard, exc)
            return False
        return True

    def ack(self, ack_ids: list[str]) -> None:
        if self.actor.conn is not None:
            self.actor.conn.ack(ack_ids)

    def request(self, idx: int, req_id: str, method: str, params: dict[str, Any]) -> None:
        conn, core = self.actor.conn, self.actor.core
        assert conn is not None
        # A future and a callback, not a task per request: this loop is the hot spot.
        try:
            future = conn.request(method, params)
        except RelayError as exc:
            core.requests.request_done(idx, req_id, method, params, None, exc)
            return
        future.add_done_callback(partial(_request_done, core, idx, req_id, method, params))

    def report(self, item: RouterReport) -> None:
        if self.actor.router_batcher is not None:
            self.actor.router_batcher.put(item)

    def reset_link(self, idx: int) -> list[LinkEntry]:
        # The old session is void: the link starts afresh (a still-running old
        # incarnation learns it from the handshake and fails its requests).
        assert self.actor.links is not None
        return decoded_entries(self.actor.links.reset(idx).unacknowledged())

    # --- the rarer actions -------------------------------------------------------------

    async def _want_capacity(self) -> None:
        try:
            await asyncio.wait_for(self.actor.router.want_capacity.remote(), CAPACITY_TIMEOUT)
        except Exception as exc:  # the router restarting, or slow: offers stop waiting for it
            log.warning("shard %d: the router did not add a CallActor (%r)", self.actor.shard, exc)
        finally:
            self.actor.core.room.capacity_answered()

    def act(self, action: Action) -> None:
        """Carry out one of the core's rarer actions (the I/O runs as a task)."""
        if isinstance(action, Command):
            self.actor.tasks.spawn(self._command(action), f"{action.purpose.value} of {action.call_id}")
        elif isinstance(action, RequestLease):
            self._lease()
        elif isinstance(action, Checkpoint):
            self._checkpoint()
        elif isinstance(action, TrackContexts):
            self._track_contexts(action)
        elif isinstance(action, StoreUnconfirmed):
            self._store_unconfirmed(action.calls)
        elif isinstance(action, RetryHangups):
            self._retry_hangups()
        elif isinstance(action, WaitForRoom):
            loop = asyncio.get_running_loop()
            loop.call_later(ROOM_WAIT, self.actor.core.room.over, action.call_id, action.rounds)
        elif isinstance(action, WantCapacity):
            self.actor.tasks.spawn(self._want_capacity(), "scale-up request")
        elif isinstance(action, AskOwned):
            self.actor.tasks.spawn(
                self.actor._ask_owned(action.idx), f"ask CallActor {action.idx} what it holds"
            )
        elif isinstance(action, AskLastKnown):
            self.actor.tasks.spawn(
                self.actor._ask_last_known(action.idx), f"ask what CallActor {action.idx} held"
            )
        elif isinstance(action, ConfirmLoss):
            self.actor.tasks.spawn(
                self.actor._confirm_loss(action.idx), f"recovery of CallActor {action.idx}"
            )
        elif isinstance(action, LossHandled):
            for waiter in self.actor._loss_waiters.pop(action.idx, []):
                if not waiter.done():
                    waiter.set_result(action.result)
        elif isinstance(action, LoseActor):
            loop = asyncio.get_running_loop()
            loop.call_soon(
                partial(self.actor.core.recovery.call_actor_lost, action.idx, overflow=action.overflow)
            )

    async def _command(self, command: Command) -> None:
        if self.actor.conn is None:
            self.actor.core.command_done(command, RelayError("connection_lost", "no RELAY connection"))
            return
        error: BaseException | None = None
        try:
            await self.actor.conn.execute(command.method, command.params)
        except Exception as exc:
            error = exc
        self.actor.core.command_done(command, error)

    def _lease(self) -> None:
        if self._leasing:
            return
        self._leasing = True
        self.actor.tasks.spawn(self._lease_more(), "lease")

    async def _lease_more(self) -> None:
        """Send the outstanding lease request, one at a time, retransmitting it unchanged
        until answered (the router applies it once). Offers that waited
        ``LEASE_TIMEOUT`` for one request are dropped or passed; the request goes on."""
        loop = asyncio.get_running_loop()
        core = self.actor.core
        try:
            while core.leases is not None and (request := core.leases.outstanding) is not None:
                since, backoff = loop.time(), Backoff(initial=0.05, cap=1.0, attempts=1)
                while core.leases.outstanding is request:
                    try:
                        reply = await asyncio.wait_for(self.actor.router.lease.remote(request), LEASE_TIMEOUT)
                    except Exception as exc:  # restarting, slow, or the call failed
                        log.info("shard %d: lease request unanswered (%r); retrying", self.actor.shard, exc)
                        reply = None
                    if reply is not None:
                        core.lease_reply(reply)
                    if core.leases.outstanding is not request:
                        break
                    if loop.time() - since > LEASE_TIMEOUT:
                        core.lease_timed_out()
                    await asyncio.sleep(backoff.next_delay())
        finally:
            self._leasing = False

    def _retry_hangups(self) -> None:
        if self._retrying_hangups:
            return
        self._retrying_hangups = True

        async def retry() -> None:
            backoff = Backoff(initial=1.0, cap=HANGUP_RETRY_MAX, attempts=1)
            try:
                while self.actor.core.unconfirmed:
                    await asyncio.sleep(backoff.next_delay())
                    if self.actor.conn is not None and self.actor.conn.connected:
                        self.actor.core.recovery.retry_hangups()
            finally:
                self._retrying_hangups = False

        self.actor.tasks.spawn(retry(), "retry of failed hang-ups")

    def _store_unconfirmed(self, calls: list[list[str]]) -> None:
        """Keep the unconfirmed hang-ups where a restart of this actor finds them (one
        write at a time, always of the latest set, so writes cannot land out of order)."""
        self._unconfirmed = calls
        if self._storing_unconfirmed:
            return
        self._storing_unconfirmed = True

        async def write() -> None:
            try:
                while self._unconfirmed is not None:
                    latest, self._unconfirmed = self._unconfirmed, None
                    await self.actor.secrets.save(f"shard/{self.actor.shard}/unconfirmed", latest)
            finally:
                self._storing_unconfirmed = False

        self.actor.tasks.spawn(write(), "store unconfirmed hang-ups")

    def _checkpoint(self) -> None:
        """Save the resume state (coalesced: one write in flight at a time)."""
        if self._checkpoint_pending or self.actor.conn is None:
            return
        self._checkpoint_pending = True

        async def write() -> None:
            self._checkpoint_pending = False
            assert self.actor.conn is not None
            state = {
                **self.actor.conn.session.resume_state(),
                "contexts": list(self.actor.conn.session.contexts),
            }
            await self.actor.secrets.save_resume(self.actor.shard, state)

        self.actor.tasks.spawn(write(), "resume checkpoint")

    def _track_contexts(self, action: TrackContexts) -> None:
        if self.actor.conn is None:
            return
        contexts = self.actor.conn.session.contexts
        contexts[:] = updated_contexts(contexts, action.method, action.contexts)
        self._checkpoint()


def _relay_settings(options: ConnectionActorOptions, creds: dict[str, Any], resume: dict[str, Any]) -> Any:
    """The RELAY connection's settings: the stored credentials, the resumed session's contexts."""
    ca_file = None
    if options.ca_pem:
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as fh:
            fh.write(options.ca_pem)
            ca_file = fh.name
    return resolve_settings(
        creds.get("project"),
        creds.get("token"),
        creds.get("jwt_token"),
        options.host,
        resume.get("contexts") or list(options.contexts),
        None,
        scheme=options.scheme,
        ca_file=ca_file,
        env={},
        allow_insecure=options.allow_insecure,
        credentials_from=options.credentials_from,
    )


def _request_done(
    core: ShardCore, idx: int, req_id: str, method: str, params: dict[str, Any], future: asyncio.Future[Any]
) -> None:
    if future.cancelled():
        core.requests.request_done(
            idx, req_id, method, params, None, RelayError("closed", "the connection closed")
        )
        return
    exc = future.exception()
    if exc is None:
        core.requests.request_done(idx, req_id, method, params, future.result(), None)
    elif isinstance(exc, RelayError):
        core.requests.request_done(idx, req_id, method, params, None, exc)
    else:
        core.requests.request_done(idx, req_id, method, params, None, RelayError("internal", repr(exc)))


class StartupRun:
    """A connection actor's start-up as :class:`ShardStartup` decides it (the I/O half:
    each step is one of the actor's ``_start_*`` methods), and, with a standby, its wait
    as the spare first."""

    __slots__ = ("actor",)

    def __init__(self, actor: ConnectionActor) -> None:
        self.actor = actor

    async def run(self) -> None:
        """Start-up as :class:`ShardStartup` says: each step tried again with backoff
        while what it needs is unavailable (the router or a CallActor restarting too);
        a configuration error fails for good (``ready`` raises it); a step still failing
        at the deadline makes this actor exit so that Ray restarts it."""
        actor = self.actor
        loop = asyncio.get_running_loop()
        if actor.options.standby:
            try:
                await self._until_serving()
            except BaseException as exc:
                actor._failed = exc
                log.exception("shard %d: the %s seat could not take its role", actor.shard, actor.seat.value)
                actor._ready.set()
                if actor.standby is not None:
                    actor.standby.decided_anyway()  # (calls waiting on the role get the failure)
                raise
        startup = actor.startup
        steps = {
            StartStep.SECRETS: actor._start_secrets,
            StartStep.POOL: actor._pull_pool,
            StartStep.REBUILD: actor._rebuild,
            StartStep.LEASES: actor._start_leases,
            StartStep.RELAY: actor._start_relay,
        }
        try:
            while not startup.serving:
                step = startup.step
                try:
                    await steps[step]()
                except RelayError:
                    raise  # an answer (bad credentials, no secret stored), not an unavailability
                except Exception as exc:
                    delay = startup.failed(step, repr(exc), loop.time())
                    actor.core.counters["start_retries"] += 1
                    if delay is None:
                        self._give_up(step, exc)
                        return
                    log.warning(
                        "shard %d: start-up step %s failed (%r); trying again", actor.shard, step.value, exc
                    )
                    await asyncio.sleep(delay)
                    continue
                startup.done(step, loop.time())
        except BaseException as exc:
            actor._failed = exc
            if isinstance(exc, RelayError):  # an expected failure (credentials, settings): one line
                log.error("connection shard %d failed to start: %s", actor.shard, exc.message)
                log.debug("connection shard %d failed to start", actor.shard, exc_info=True)
            else:
                log.exception("connection shard %d failed to start", actor.shard)
            actor.core.requests.start_failed()  # (the requests that waited fail: no connection will come)
        finally:
            actor._ready.set()

    async def _until_serving(self) -> None:
        """A shard with a standby: be the spare until this process serves it, then start
        up as a restarted shard does, on a fresh start-up clock."""
        actor = self.actor
        assert actor.standby is not None
        loop = asyncio.get_running_loop()
        await actor.standby.take_seat(loop.time() + actor.startup.deadline, STEP_TIMEOUT)
        actor.startup = ShardStartup(loop.time())
        actor.tasks.spawn(actor.standby.supervise(actor.standby.superseded), "standby supervision")

    def _give_up(self, step: StartStep, exc: BaseException) -> None:
        """Still failing at the deadline: exit, so that Ray restarts this actor and start-up
        begins afresh (alive and idle, it would never be restarted)."""
        actor = self.actor
        actor.core.counters["start_give_ups"] += 1
        log.error(
            "connection shard %d could not start: step %s failed %d times in %.0f s (%r); "
            "exiting so that Ray restarts it",
            actor.shard,
            step.value,
            actor.startup.total_retries,
            actor.startup.deadline,
            exc,
        )
        actor._failed = exc
        actor.core.requests.start_failed()
        asyncio.get_running_loop().call_later(0.2, os._exit, 1)


class ConnectionActor:
    """One shard's RELAY connection (create with :func:`ray.remote`; see module docstring).

    A shell over :class:`~relay_actors.ray_runtime.shard_core.ShardCore`: it does the I/O
    (the RELAY connection, the links, Ray calls, the KV store, timers) and carries out
    the core's actions.

    Args:
        app: the app's name.
        shard: this shard's number.
        options: see :class:`~relay_actors.ray_runtime.options.ConnectionActorOptions`.
            Credentials are NOT passed here: they are read from the GCS KV store.
        seat: ``"main"`` (``relay:<app>:connection:<n>``) or ``"standby"``
            (``relay:<app>:standby:<n>``, created only with ``options.standby``): with a
            standby, one of the two serves and the other is its warm spare
            (:mod:`~relay_actors.ray_runtime.shard_standby`), passing the Ray calls it
            gets on to the one that serves.
    """

    def __init__(self, app: str, shard: int, options: ConnectionActorOptions, seat: str = "main") -> None:
        self.app = app
        self.shard = shard
        self.options = options
        self.seat = Seat(seat)
        #: The claims and watch of a shard with a standby (None: no standby, this serves).
        self.standby = StandbyWatch(shard, self.seat, app) if options.standby else None
        self.fx = ShellEffects(self)
        self.core = ShardCore(
            shard,
            self.fx,
            over_limit=options.over_limit,
            on_call_actor_lost=options.on_call_actor_lost,
        )
        #: CallActor index → its Ray handle.
        self.actors: dict[int, Any] = {}
        #: The direct links to the CallActors (made at start-up, once the secret is read).
        self.links: LinkClient | None = None
        self._hub: LinkHub | None = None
        self._node_id = ""
        #: This deploy's secrets in Ray's KV store (credentials, link secret, sealed resume state).
        self.secrets: kvstore.AppSecrets
        self.tasks = BackgroundTasks()
        self.conn: Connection | None = None
        self.router: Any = None
        self.router_batcher: Batcher[RouterReport] | None = None
        #: CallActor index → those waiting for its loss to be handled (``call_actor_lost``).
        self._loss_waiters: dict[int, list[asyncio.Future[dict[str, int]]]] = {}
        self._ready = asyncio.Event()
        self._failed: BaseException | None = None
        self._resume: dict[str, Any] = {}
        #: An earlier life of this shard placed calls (or left a session to resume).
        self._restarted = False
        self.startup = ShardStartup(asyncio.get_running_loop().time())
        self._start_task = asyncio.get_running_loop().create_task(StartupRun(self).run())
        tune_gc()  # set up: freeze what start-up made (see gc_tuning)
        claim_normal_priority(f"connection actor {shard}")  # it carries calls (see cpu_priority)

    # --- start-up (run by StartupRun) and recovery ----------------------------------

    async def spare_for(self) -> Any:
        """The serving process's handle if this process is the spare (see ``served_here``)."""
        if self.standby is None or forwarding():
            return None
        return await self.standby.spare_for(lambda: self._failed is not None)

    async def seat_info(self) -> dict[str, Any]:
        """This process itself (never passed on): its seat, pid, and whether it serves."""
        return {
            "shard": self.shard,
            "seat": self.seat.value,
            "pid": os.getpid(),
            "serving": self.standby is None or self.standby.serving,
            "standby": self.standby.stats() if self.standby is not None else {},
        }

    async def forwarded(self, method: str, args: tuple[Any, ...]) -> Any:
        """A Ray call this shard's spare passed on (it is never passed back)."""
        return await run_forwarded(self, method, args)

    async def _start_secrets(self) -> None:
        import ray

        self.secrets = await asyncio.wait_for(kvstore.AppSecrets.open(self.app), STEP_TIMEOUT)
        await tracing_setup.configure(self.secrets, "connection")  # tracing hook
        if self.links is None:
            await asyncio.wait_for(self._open_links(), STEP_TIMEOUT)
        self._node_id = ray.get_runtime_context().get_node_id()
        self._resume = await asyncio.wait_for(self.secrets.load_resume(self.shard), STEP_TIMEOUT)
        self.router = ray.get_actor(actor_name(self.app, "router"), namespace=NAMESPACE)
        if self.router_batcher is None:
            # Bookkeeping nobody waits on: linger to send it in few, large batches.
            self.router_batcher = Batcher(self._report, name=f"connection-{self.shard}->router", linger=0.2)

    async def _start_relay(self) -> None:
        if self.conn is None:
            creds = await asyncio.wait_for(self.secrets.credentials(), STEP_TIMEOUT)
            settings = _relay_settings(self.options, creds, self._resume)
            self.conn = Connection(
                settings,
                on_event=self.core.on_event,
                on_connected=self._on_connected,
                request_timeout=self.options.request_timeout,
                ping_interval=self.options.ping_interval,
                backoff=Backoff.from_options(dict(self.options.backoff or {})),
                defer_acks=True,
            )
            self.conn.session.restore(self._resume)
            self.core.requests.relay_created(self.conn.protocol or "")
            if self._restarted:
                log.info("shard %d restarted; CallActors learn it from the link handshake", self.shard)
        # Through the reconnect loop: a blip or a refused resume now must not leave the
        # shard down for good (it raises only what retrying cannot fix).
        await self.conn.start()
        # Ready once every CallActor can be reached (bounded: a partial pool serves,
        # and the rest join as their links come up).
        assert self.links is not None
        down = await self.links.wait_linked(list(self.actors), 10.0)
        if down:
            log.warning("shard %d: no link yet to CallActors %s; serving meanwhile", self.shard, down)

    async def _open_links(self) -> None:
        secret = await self.secrets.link_secret()
        identity = await self.secrets.link_tls()
        if not secret or not identity:
            raise RelayError("config", f"no link secret stored for app {self.app!r}")
        core = self.core
        self.links = LinkClient(
            bytes.fromhex(secret),
            self.shard,
            core.on_link_items,
            endpoint=self._endpoint,
            on_released=core.link_acked,
            on_restarted=self._on_call_actor_restarted,
            on_health=core.link_health,
            on_linked=core.call_actor_linked,
            tls=link_tls.client_context(identity),
            linger=self.options.link_linger,
        )
        # Ticks often enough to see a CallActor stall within ~200 ms (slow_unacked_after).
        self._hub = LinkHub(self.links, interval=0.05)
        self._hub.start()

    async def _pull_pool(self) -> None:
        """Ask the router for its pool snapshot (start-up, or a shard that missed a push)."""
        snapshot, handles = await asyncio.wait_for(self.router.pool_snapshot.remote(), STEP_TIMEOUT)
        await self._apply_pool(snapshot, handles)
        self._link_all()  # (a push may have come before the links existed)

    async def _apply_pool(self, snapshot: PoolSnapshot, handles: dict[int, Any]) -> None:
        """Apply ``snapshot`` if newer, and link its new CallActors: done once they are
        linked (bounded by ``LINK_WAIT``), so that after an upgrade the next call goes to
        the new generation rather than to the older one while the links come up."""
        linked = self.core.pool.apply(snapshot)
        if linked is None:
            return  # not newer than what this shard has
        for idx in linked:
            if idx not in self.actors and idx in handles:
                self.actors[idx] = handles[idx]
        # Upgraded: the new owner's job shows this actor's output (see job_logs).
        show_in_job(snapshot.log_job)
        self._link_all()
        linking = self.core.pool.linking()
        if linking and self.links is not None:
            await self.links.wait_linked(linking, LINK_WAIT)

    def _link_all(self) -> None:
        # Link eagerly: a CallActor's requests travel on the link this shard opens.
        if self.links is not None:
            for idx in self.actors:
                self.links.ensure(idx)

    async def _endpoint(self, idx: int) -> tuple[dict[str, Any], bool]:
        info = await self.actors[idx].endpoint.remote()
        return info, info.get("node_id") == self._node_id

    async def _rebuild(self) -> None:
        """Re-learn calls, dials and messages from the CallActors (see
        :meth:`ShardRecovery.rebuilt`: one that does not answer is unknown, asked later)."""
        has_resume = await asyncio.wait_for(self.secrets.has_resume(self.shard), STEP_TIMEOUT)
        asked = dict(self.actors)  # (a pool snapshot pushed meanwhile may add to self.actors)
        owned = await asyncio.gather(
            *(asyncio.wait_for(h.owned.remote(self.shard), OWNED_TIMEOUT) for h in asked.values()),
            return_exceptions=True,
        )
        answers = dict(zip(asked, owned, strict=True))
        found = self.core.recovery.rebuilt(answers, asyncio.get_running_loop().time())
        self._restarted = found or has_resume

    async def _start_leases(self) -> None:
        counter = f"shard/{self.shard}/incarnation"
        incarnation = int(await asyncio.wait_for(self.secrets.load(counter), STEP_TIMEOUT) or 0) + 1
        await asyncio.wait_for(self.secrets.save(counter, incarnation), STEP_TIMEOUT)
        lease = await asyncio.wait_for(self.router.register_shard.remote(self.shard), STEP_TIMEOUT)
        stored = await asyncio.wait_for(self.secrets.load(f"shard/{self.shard}/unconfirmed"), STEP_TIMEOUT)
        self.core.start_leases(incarnation, lease["block"], lease["epoch"], stored or [])
        if self.core.recovery.rebuild is not None:
            self.tasks.spawn(self._ask_unknown(), "rebuild from the CallActors that did not answer")

    async def _ask_unknown(self) -> None:
        """Tick the rebuild (its backoff and deadline are in the core) until nothing is pending."""
        loop = asyncio.get_running_loop()
        ticking = True
        while ticking:
            ticking = self.core.recovery.tick(loop.time())
            await asyncio.sleep(0.1)  # (a timer, not a wait for a condition)

    async def _ask_owned(self, idx: int) -> None:
        recovery = self.core.recovery
        try:
            state = await asyncio.wait_for(self.actors[idx].owned.remote(self.shard), OWNED_TIMEOUT)
        except Exception as exc:
            log.info("shard %d: CallActor %d still does not say what it holds (%r)", self.shard, idx, exc)
            recovery.owned_failed(idx, asyncio.get_running_loop().time())
            return
        log.warning("shard %d: CallActor %d answered the rebuild at last", self.shard, idx)
        recovery.owned_answer(idx, state)

    async def _ask_last_known(self, idx: int) -> None:
        calls: list[str] = []
        try:
            calls = list(await asyncio.wait_for(self.router.calls_on.remote(self.shard, idx), 5.0))
        except Exception as exc:
            log.warning("shard %d: the router did not say what CallActor %d held (%r)", self.shard, idx, exc)
        self.core.recovery.last_known(idx, calls)

    async def _confirm_loss(self, idx: int) -> None:
        incarnation: str | None = None
        try:
            try:
                await asyncio.wait_for(self._pull_pool(), 10.0)
            except Exception:
                log.exception("pool refresh failed")
            incarnation = await self._incarnation(idx)
        finally:
            self.core.recovery.loss_confirmed(idx, incarnation)

    async def _incarnation(self, idx: int, timeout: float = 30.0) -> str | None:
        """The incarnation of CallActor ``idx`` once it answers again (None if it does not)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and idx in self.actors:
            try:
                health = await asyncio.wait_for(self.actors[idx].health.remote(), 5.0)
                return str(health["incarnation"])
            except Exception:
                await asyncio.sleep(0.2)
        return None

    @served_here
    async def ready(self) -> dict[str, Any]:
        """Wait until started; raises if start-up failed."""
        await self._ready.wait()
        if self._failed is not None:
            raise self._failed
        assert self.conn is not None
        return {"shard": self.shard, "protocol": self.conn.protocol}

    def _on_connected(self, connected: Connected) -> None:
        self.core.connected(connected.restored, connected.protocol)
        self.tasks.spawn(self._settle_session(), "session settled")

    async def _settle_session(self) -> None:
        """The server redelivers what it had for the session right after the connect
        result: once a ping sent after it comes back, all of that was passed on."""
        assert self.conn is not None
        try:
            await asyncio.wait_for(self.conn.execute(c.METHOD_PING, {}), STEP_TIMEOUT)
        except Exception as exc:  # (dropped again: the next connect settles it)
            log.info("shard %d: no answer to the ping after connecting (%r)", self.shard, exc)
            return
        self.core.session_settled()

    def _on_call_actor_restarted(self, previous: LinkSession) -> None:
        """The link found CallActor ``idx`` back as a new incarnation (Ray restarted it)."""
        assert self.links is not None
        idx = previous.peer_id
        incarnation = self.links.sessions[idx].peer_incarnation.hex()
        log.error("shard %d: CallActor %d restarted; applying the lost-calls policy", self.shard, idx)
        self.core.recovery.call_actor_lost(idx, incarnation, decoded_entries(previous.unacknowledged()))

    async def _report(self, batch: list[RouterReport]) -> None:
        # Reports are idempotent, so they are retried across a restart of the router
        # (a lost CallReleased would leak a call record there, a lost CallPlaced hide a call).
        await call_while_restarting(self.router, "report", self.shard, batch, what=f"shard {self.shard}")

    # --- what the router and the driver ask ------------------------------------------

    @served_here
    async def call_actor_lost(
        self, idx: int, incarnation: str | None = None, previous: str | None = None
    ) -> dict[str, int]:
        """The router's health loop found CallActor ``idx`` lost (``previous``, the lost
        incarnation, replaced by ``incarnation``): apply the lost-calls policy to what this
        shard has on ``previous`` (once per loss) and wait for it (bounded)."""
        await self._ready.wait()
        session = self.links.sessions.get(idx) if self.links is not None else None
        bound = session.peer_incarnation.hex() if session is not None and session.peer_incarnation else None
        lost = self.core.recovery.call_actor_lost(idx, incarnation, bound=bound, previous=previous)
        if not lost and idx not in self.core.recovery.losses:
            return {"already": 1}
        waiter: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        self._loss_waiters.setdefault(idx, []).append(waiter)
        if idx not in self.core.recovery.losses:
            self._loss_waiters.pop(idx, None)
            return {"done": 1}
        return await asyncio.wait_for(waiter, LOSS_WAIT)

    @served_here
    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request from the driver (not batched: the driver is not on the hot path)."""
        await self._ready.wait()
        assert self.conn is not None
        result = await self.conn.execute(method, params)
        if method in (c.METHOD_RECEIVE, c.METHOD_UNRECEIVE):
            self.core.contexts_changed(method, params)
        return result

    @served_here
    async def reset_links(self) -> int:
        """Fault injection for tests and drills: reset every link's socket at once, as a
        network blip would (the links reconnect and resend; no call may notice)."""
        assert self.links is not None
        wires = list(self.links.wires.values())
        for wire in wires:
            if wire.transport is not None:
                wire.transport.abort()
        return len(wires)

    @served_here
    async def apply_pool(self, snapshot: PoolSnapshot, handles: dict[int, Any]) -> tuple[int, int]:
        """The router pushes its pool snapshot (scaled up, upgraded: a new generation of
        CallActors takes the new calls from now on) with each CallActor's handle: applied
        if newer than this shard's. Returns the version this shard has now."""
        await self._apply_pool(snapshot, handles)
        assert self.core.pool.snapshot is not None
        return self.core.pool.snapshot.key

    def _unacknowledged(self, idx: int) -> int:
        session = self.links.sessions.get(idx) if self.links is not None else None
        return session.unacknowledged_count if session is not None else 0

    @served_here
    async def call_actor_busy(self, idx: int, generation: int = 0) -> int:
        """What this shard still has with CallActor ``idx`` (0: it may be retired). A
        shard that missed the news of ``generation`` (the router's current) learns it here first."""
        if self.core.pool.snapshot is None or generation > self.core.pool.snapshot.generation:
            await self._pull_pool()
        return self.core.pool.busy_with(idx, self._unacknowledged(idx))

    @served_here
    async def forget_call_actor(self, idx: int) -> bool:
        """The router retires CallActor ``idx`` (an older generation, drained): stop
        linking to it and never place on it again, so its stop is not a loss here.
        False (nothing done) if this shard has something with it after all: checked and
        done in one step of this actor's loop, so no call can slip in between."""
        if not self.core.pool.retire(idx, self._unacknowledged(idx)):
            return False
        self.actors.pop(idx, None)
        if self.links is not None:
            self.links.forget(idx)
        return True

    @served_here
    async def end_calls_on(self, idx: int) -> int:
        """Hang up the calls routed to CallActor ``idx`` (its drain deadline passed); they
        end as any call does, their ``ended`` events reaching it. Returns how many."""
        assert self.conn is not None
        return self.core.pool.end_calls_on(idx)

    @served_here
    async def lease_state(self, epoch: int = 0) -> dict[str, int]:
        """This shard's leases; a router of a newer ``epoch`` (restarted) gets them
        reported through ``Router.lease`` (the request is sent, not returned here,
        so that it is numbered and retransmitted like any other)."""
        return self.core.lease_asked(epoch)

    @served_here
    async def session_info(self) -> dict[str, Any]:
        """This shard's session as the app's clients show it (``relay_protocol``,
        ``connected``, ``contexts``), and its load: a cheap read, polled by them."""
        conn = self.conn
        return {
            "shard": self.shard,
            "protocol": conn.protocol if conn is not None else "",
            "connected": bool(conn is not None and conn.connected),
            "contexts": list(conn.session.contexts if conn is not None else self.options.contexts),
            "active_calls": len(self.core.routes.calls),
            "pending_dials": len(self.core.dial_owner),
        }

    @served_here
    async def stats(self) -> dict[str, Any]:
        conn = self.conn.stats() if self.conn is not None else {}
        return {
            "shard": self.shard,
            **_where(),
            "protocol": self.conn.protocol if self.conn is not None else "",
            **self.startup.stats(),
            **shard_stats(self.core),
            "loop_lag": self._hub.lag if self._hub is not None else 0.0,
            "backoff": self.conn.backoff.options() if self.conn is not None else {},
            "links": link_stats(self.links),
            "batchers": {"router": self.router_batcher.stats()} if self.router_batcher is not None else {},
            "standby": self.standby.stats() if self.standby is not None else {},
            **self.core.counters,
            **{f"conn.{k}": v for k, v in conn.items()},
        }

    @served_here
    async def shutdown(self) -> None:
        """Close the links and the socket (the session is not resumed after this)."""
        if self.standby is not None:
            await self.standby.goodbye()  # (the spare must not take over: the app stops)
        if self._hub is not None:
            await self._hub.aclose()
        if self.links is not None:
            await self.links.aclose()
        if self.router_batcher is not None:
            await self.router_batcher.close(drain=True, timeout=5.0)
        if self.conn is not None:
            await self.conn.close()
        await self.tasks.cancel_all()
