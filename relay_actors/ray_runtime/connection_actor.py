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
from collections import Counter, OrderedDict, deque
from functools import partial
from typing import Any

from ..backoff import Backoff
from ..config import resolve_settings, updated_contexts
from ..connection import Connection
from ..dialing import AbandonedDials
from ..errors import RelayError
from ..protocol import constants as c
from ..protocol.events import RelayEvent
from ..protocol.messages import MessageTracker
from ..protocol.routing import EventRouter, Route
from ..protocol.session import Connected
from ..tasks import BackgroundTasks
from . import actor_messages as m
from . import admission as adm
from . import kvstore, link_tls
from .actor_link import LinkClient, LinkHub
from .actor_messages import NAMESPACE, actor_name
from .batching import Batcher
from .call_actor import _where, link_stats
from .gc_tuning import tune_gc
from .job_logs import show_in_job
from .link_protocol import Health, HealthStatus, LinkOverflow, LinkSession
from .placement import Placement, RouteRebuild

__all__ = ["ConnectionActor"]

log = logging.getLogger("relay_actors.ray_runtime.connection_actor")

#: An offer waiting for a slot: the event and its ack id.
Waiting = tuple[RelayEvent, str | None]
#: Waiting offers are dropped (or passed) when the router has not answered for this long.
LEASE_TIMEOUT = 5.0
#: A failed hang-up of a lost CallActor's call is retried, backing off up to this.
HANGUP_RETRY_MAX = 30.0
#: Requests CallActors send while this shard starts (no RELAY connection yet) wait, up to this many.
MAX_EARLY_REQUESTS = 10_000
#: A CallActor's answer to ``owned()`` (the rebuild after a restart) is awaited this long.
OWNED_TIMEOUT = 10.0
#: A CallActor that has not answered ``owned()`` this long after the restart is given up:
#: the lost-actor policy applies to the calls the router last knew on it.
REBUILD_DEADLINE = 60.0
#: Events held meanwhile for calls this shard cannot route yet (beyond: unroutable).
MAX_HELD_EVENTS = 10_000


class ConnectionActor:
    """One shard's RELAY connection (create with :func:`ray.remote`; see module docstring).

    Args:
        app: the app's name.
        shard: this shard's number.
        options: ``host``, ``scheme``, ``contexts``, ``ca_pem`` (CA certificate text,
            not a secret), ``over_limit``, ``request_timeout``, ``ping_interval``,
            ``backoff`` (the driver's reconnect delays, :meth:`Backoff.options`).
            Credentials are NOT passed here: they are read from the GCS KV store.
    """

    def __init__(self, app: str, shard: int, options: dict[str, Any]) -> None:
        self.app = app
        self.shard = shard
        self.options = options
        self.routes: EventRouter[int] = EventRouter()
        self.actors: dict[int, Any] = {}
        self.placement = Placement()
        self.placed = self.placement.placed  # (the same Counter: calls placed per CallActor)
        #: Calls the lost-actor policy took from a CallActor: commands for them from
        #: anyone but their current owner are refused (bounded, oldest forgotten).
        self.fenced: OrderedDict[str, None] = OrderedDict()
        #: CallActor index → the incarnation whose loss was last handled.
        self.incarnations: dict[int, str] = {}
        #: CallActors the router retired after an upgrade (never linked to again).
        self.retired_call_actors: set[int] = set()
        #: Slots, active calls and waiting offers (set at start-up, after the rebuild).
        self.leases: adm.ShardLeases[Waiting] | None = None
        #: The direct links to the CallActors (made at start-up, once the secret is read).
        self.links: LinkClient | None = None
        self._hub: LinkHub | None = None
        self._node_id = ""
        #: This deploy's secrets in Ray's KV store (credentials, link secret, sealed resume state).
        self.secrets: kvstore.AppSecrets
        self.dial_owner: dict[str, int] = {}
        #: Dials a CallActor gave up: their late legs are hung up here.
        self.abandoned_dials = AbandonedDials()
        #: call_id → node_id, to address calls this actor must end itself.
        self.node_of: dict[str, str] = {}
        self.msg_owner: dict[str, int] = {}
        self.early_messages = MessageTracker(max_early=10_000)
        self.counters: Counter[str] = Counter()
        self.tasks = BackgroundTasks()
        self.conn: Connection | None = None
        self.router: Any = None
        self._router_batcher: Batcher[tuple[Any, ...]] | None = None
        self._leasing = False
        self._retrying_hangups = False
        self._storing_unconfirmed = False
        self._unconfirmed_dirty = False
        self._ready = asyncio.Event()
        self._failed: BaseException | None = None
        #: CallActors this (restarted) shard could not ask for their calls yet, and the
        #: events it holds for calls it cannot route meanwhile (see :meth:`_rebuild`).
        self.rebuild: RouteRebuild[Waiting] | None = None
        #: The session was not resumed while some CallActor was unknown: its calls are gone.
        self._rebuild_session_lost = False
        #: Requests that came before the RELAY connection existed (see :meth:`_request`).
        self._early_requests: deque[tuple[int, str, str, dict[str, Any]]] = deque()
        self._checkpoint_pending = False
        self._start_task = asyncio.get_running_loop().create_task(self._start())
        tune_gc()  # set up: freeze what start-up made (see gc_tuning)

    # --- start-up and recovery ----------------------------------------------------

    async def _start(self) -> None:
        try:
            import ray

            self.secrets = await kvstore.AppSecrets.open(self.app)
            creds = await self.secrets.credentials()
            secret = await self.secrets.link_secret()
            identity = await self.secrets.link_tls()
            if not secret or not identity:
                raise RelayError("config", f"no link secret stored for app {self.app!r}")
            self._node_id = ray.get_runtime_context().get_node_id()
            self.links = LinkClient(
                bytes.fromhex(secret),
                self.shard,
                self._on_link_items,
                endpoint=self._endpoint,
                on_released=self._on_released,
                on_restarted=self._on_call_actor_restarted,
                on_health=self._on_link_health,
                tls=link_tls.client_context(identity),
                linger=float(self.options.get("link_linger") or 0.0),
            )
            self._hub = LinkHub(self.links)
            self._hub.start()
            resume = await self.secrets.load_resume(self.shard)
            ca_file = None
            if self.options.get("ca_pem"):
                import tempfile

                with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as fh:
                    fh.write(self.options["ca_pem"])
                    ca_file = fh.name
            contexts = resume.get("contexts") or self.options.get("contexts") or []
            settings = resolve_settings(
                creds.get("project"),
                creds.get("token"),
                creds.get("jwt_token"),
                self.options.get("host"),
                contexts,
                None,
                scheme=self.options.get("scheme"),
                ca_file=ca_file,
                env={},
                allow_insecure=bool(self.options.get("allow_insecure")),
                credentials_from=self.options.get("credentials_from"),
            )
            self.router = ray.get_actor(actor_name(self.app, "router"), namespace=NAMESPACE)
            # Bookkeeping nobody waits on: linger to send it in few, large batches.
            self._router_batcher = Batcher(self._report, name=f"connection-{self.shard}->router", linger=0.2)
            await self._refresh_pool()
            restarted = await self._rebuild()
            # The router's records of this shard's calls become what it holds now (a "del"
            # batched before a kill -9 was lost with it); those on CallActors it could not
            # ask are kept (unknown is not "ended").
            unknown = sorted(self.rebuild.unknown) if self.rebuild is not None else []
            self._router_batcher.put(("sync", list(self.routes.calls.items()), unknown))
            await self._start_leases()
            if self.rebuild is not None and self.leases is not None and not self.leases.unknown:
                self.rebuild = None  # a first life: no earlier one placed calls anywhere
            if self.rebuild is not None:
                self.tasks.spawn(self._ask_unknown(), "rebuild from the CallActors that did not answer")
            self.conn = Connection(
                settings,
                on_event=self._on_event,
                on_connected=self._on_connected,
                request_timeout=float(self.options.get("request_timeout", c.REQUEST_TIMEOUT)),
                ping_interval=float(self.options.get("ping_interval", c.CLIENT_PING_INTERVAL)),
                backoff=Backoff.from_options(self.options.get("backoff") or {}),
                defer_acks=True,
            )
            self.conn.session.restore(resume)
            self._send_early_requests()
            if restarted:
                log.info("shard %d restarted; CallActors learn it from the link handshake", self.shard)
            # Through the reconnect loop: a blip or a refused resume now must not leave the
            # shard down for good (Ray would not restart an actor that is alive and idle).
            await self.conn.start()
            # Ready once every CallActor can be reached (bounded: a partial pool serves,
            # and the rest join as their links come up).
            down = await self.links.wait_linked(list(self.actors), 10.0)
            if down:
                log.warning("shard %d: no link yet to CallActors %s; serving meanwhile", self.shard, down)
        except BaseException as exc:
            self._failed = exc
            if isinstance(exc, RelayError):  # expected (credentials, settings): one line; the driver says it
                log.error("connection shard %d failed to start: %s", self.shard, exc.message)
                log.debug("connection shard %d failed to start", self.shard, exc_info=True)
            else:
                log.exception("connection shard %d failed to start", self.shard)
            self._send_early_requests()  # (they fail: no connection will come)
        finally:
            self._ready.set()

    async def _refresh_pool(self) -> None:
        pool = await self.router.pool_info.remote()
        generations = await self._call_actor_generations()
        for idx, handle, capacity in pool:
            if idx not in self.actors and idx not in self.retired_call_actors:
                self.actors[idx] = handle
                self.placement.add(idx, capacity, generations.get(idx, 0))
        for idx, generation in generations.items():
            self.placement.set_generation(idx, generation)
        # Link eagerly: a CallActor's requests travel on the link this shard opens.
        if self.links is not None:
            for idx in self.actors:
                self.links.ensure(idx)

    async def _endpoint(self, idx: int) -> tuple[dict[str, Any], bool]:
        info = await self.actors[idx].endpoint.remote()
        return info, info.get("node_id") == self._node_id

    async def _rebuild(self) -> bool:
        """Re-learn calls, dials and messages from the CallActors. True if there was anything.

        A CallActor whose ``owned()`` fails or times out is *unknown*, never "holds
        nothing": it is asked again (:meth:`_ask_unknown`), its calls' slots stay counted
        (:class:`~relay_actors.ray_runtime.admission.ShardLeases` inherits the earlier
        grant) and the events this shard cannot route meanwhile are held, not acked
        as unroutable (:class:`~relay_actors.ray_runtime.placement.RouteRebuild`)."""
        found = False
        owned = await asyncio.gather(
            *(
                asyncio.wait_for(handle.owned.remote(self.shard), OWNED_TIMEOUT)
                for handle in self.actors.values()
            ),
            return_exceptions=True,
        )
        failed = []
        for idx, state in zip(list(self.actors), owned, strict=True):
            if isinstance(state, BaseException):
                log.warning(
                    "shard %d: CallActor %d did not say what it holds (%r); asking again",
                    self.shard,
                    idx,
                    state,
                )
                failed.append(idx)
                continue
            calls = self._adopt_owned(idx, state)
            found = found or bool(calls or state["dials"] or state["messages"])
        if failed:
            now = asyncio.get_running_loop().time()
            self.rebuild = RouteRebuild(failed, now, deadline=REBUILD_DEADLINE, max_held=MAX_HELD_EVENTS)
        if found:
            log.warning(
                "connection shard %d restarted: re-adopted %d calls, %d dials, %d messages",
                self.shard,
                len(self.routes.calls),
                len(self.dial_owner),
                len(self.msg_owner),
            )
        return found or await self.secrets.has_resume(self.shard)

    def _adopt_owned(self, idx: int, state: dict[str, Any]) -> list[str]:
        """Route to CallActor ``idx`` what it says it holds for this shard; returns the
        ids of the calls routed (those not routed already)."""
        calls = []
        for call_id, node_id in state["calls"]:
            if call_id in self.routes.calls:
                continue
            self.routes.add_call(call_id, idx)
            if node_id or call_id not in self.node_of:
                self.node_of[call_id] = node_id
            self.placement.placed_on(idx)
            calls.append(call_id)
        for tag in state["dials"]:
            self.dial_owner[tag] = idx
            self.routes.dials.start(tag)
        for message_id in state["messages"]:
            self.msg_owner[message_id] = idx
        return calls

    async def _ask_unknown(self) -> None:
        """Ask the CallActors that did not answer the rebuild again (backoff, in
        :class:`RouteRebuild`) until each answers or the deadline passes."""
        loop = asyncio.get_running_loop()
        rebuild = self.rebuild
        while rebuild is not None and rebuild.pending and rebuild is self.rebuild:
            now = loop.time()
            for idx in rebuild.expired(now):
                self.tasks.spawn(self._give_up_unknown(idx), f"give up CallActor {idx}")
            for idx in rebuild.due(now):
                self.tasks.spawn(self._ask_owned(idx), f"ask CallActor {idx} what it holds")
            await asyncio.sleep(0.1)

    async def _ask_owned(self, idx: int) -> None:
        rebuild = self.rebuild
        if rebuild is None:
            return
        if idx not in self.actors:  # retired by the router meanwhile: it held nothing of ours
            self._learned(idx, {"calls": [], "dials": [], "messages": []})
            return
        try:
            state = await asyncio.wait_for(self.actors[idx].owned.remote(self.shard), OWNED_TIMEOUT)
        except Exception as exc:
            self.counters["owned_retries"] += 1
            log.info("shard %d: CallActor %d still does not say what it holds (%r)", self.shard, idx, exc)
            rebuild.failed(idx, asyncio.get_running_loop().time())
            return
        log.warning("shard %d: CallActor %d answered the rebuild at last", self.shard, idx)
        self._learned(idx, state)

    def _learned(self, idx: int, state: dict[str, Any]) -> None:
        """CallActor ``idx`` is known now: route its calls, count them by id instead of
        the held slots, and route the events held for them (in their order)."""
        rebuild = self.rebuild
        if rebuild is None or idx not in rebuild.unknown:
            return
        calls = self._adopt_owned(idx, state)
        for call_id in calls:
            self._report_add(call_id, idx)
        if self.leases is not None:
            self._lease_actions(self.leases.learned(idx, calls))
        if self._rebuild_session_lost:
            # Calls of the session the server did not resume: gone, as in _on_connected.
            for call_id in calls:
                self.routes.remove_call(call_id)
                self._to(idx, (m.LOST, call_id, "session_lost"), None)
                self._released(call_id, idx)
        released = rebuild.resolved(idx, calls)
        self.counters["held_events_released"] += len(released)
        for _call_id, (event, ack_id) in released:
            self._on_event(event, ack_id)

    async def _give_up_unknown(self, idx: int) -> None:
        """The deadline passed: the lost-actor policy, as for a CallActor that stayed
        unreachable (it also runs :meth:`_learn_last_known` first)."""
        self.counters["owned_given_up"] += 1
        log.error(
            "shard %d: CallActor %d never said what it holds; applying the lost-calls policy", self.shard, idx
        )
        await self.call_actor_lost(idx)
        if self.rebuild is not None and idx in self.rebuild.unknown:
            # (Its loss was being handled already, from before it was given up.)
            self._learned(idx, {"calls": [], "dials": [], "messages": []})

    async def _learn_last_known(self, idx: int) -> None:
        """``idx`` is lost while still unknown: its calls are those the router last knew
        on it for this shard (as this shard reported them), so the lost-actor policy
        can end them and free their slots."""
        calls: list[Any] = []
        try:
            calls = await asyncio.wait_for(self.router.calls_on.remote(self.shard, idx), 5.0)
        except Exception as exc:
            log.warning("shard %d: the router did not say what CallActor %d held (%r)", self.shard, idx, exc)
        self._learned(
            idx, {"calls": [(cid, self.node_of.get(cid, "")) for cid in calls], "dials": [], "messages": []}
        )

    async def ready(self) -> dict[str, Any]:
        """Wait until started; raises if start-up failed."""
        await self._ready.wait()
        if self._failed is not None:
            raise self._failed
        assert self.conn is not None
        return {"shard": self.shard, "protocol": self.conn.protocol}

    def _on_connected(self, connected: Connected) -> None:
        if not connected.restored and self.routes.calls:
            log.warning(
                "shard %d: session not resumed; %d calls are lost", self.shard, len(self.routes.calls)
            )
            for call_id, idx in list(self.routes.calls.items()):
                self._to(idx, (m.LOST, call_id, "session_lost"), None)
                self._released(call_id, idx)
            self.routes.calls.clear()
        if not connected.restored and self.rebuild is not None and self.rebuild.pending:
            self._rebuild_session_lost = True  # what the unknown CallActors hold is lost too
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Save the resume state (coalesced: one write in flight at a time)."""
        if self._checkpoint_pending or self.conn is None:
            return
        self._checkpoint_pending = True

        async def write() -> None:
            self._checkpoint_pending = False
            assert self.conn is not None
            state = {**self.conn.session.resume_state(), "contexts": list(self.conn.session.contexts)}
            await self.secrets.save_resume(self.shard, state)

        self.tasks.spawn(write(), "resume checkpoint")

    # --- the links to CallActors (see actor_link, link_protocol) ------------------------

    def _to(self, idx: int, item: tuple[Any, ...] | list[Any], ack_id: str | None) -> None:
        """Send ``item`` to CallActor ``idx``; its RELAY event (``ack_id``) is acked once
        the CallActor has acknowledged it (:meth:`_on_released`)."""
        assert self.links is not None
        try:
            self.links.send(idx, item, ack_id)
        except LinkOverflow as exc:
            # Its queue is full: it stopped taking frames long ago. The lost-actor policy
            # takes over (the item is part of what it re-places or ends).
            log.error("shard %d: %s", self.shard, exc)
            self.counters["link_overflows"] += 1
            self.tasks.spawn(self.call_actor_lost(idx, overflow=(item, ack_id)), f"CallActor {idx} lost")

    def _on_released(self, idx: int, ack_ids: list[str]) -> None:
        if self.conn is not None:
            self.conn.ack(ack_ids)

    def _on_link_items(self, idx: int, items: list[Any]) -> None:
        for item in items:
            kind = item[0]
            try:
                if kind == m.REQUEST:
                    self._request(idx, item[1], item[2], item[3])
                elif kind == m.REFUSED:
                    self._replace(idx, item[1])
                elif kind == m.DIAL_ABANDONED:
                    self._dial_abandoned(idx, item[1])
                else:
                    self.counters["unknown_link_items"] += 1
            except Exception:  # one bad item must not cost the others (nor the link)
                self.counters["item_errors"] += 1
                log.exception("shard %d: failed on a %s item from CallActor %d", self.shard, kind, idx)

    def _dial_abandoned(self, idx: int, tag: str) -> None:
        """CallActor ``idx`` gave up dial ``tag``: its legs from now on are hung up here."""
        if self.dial_owner.get(tag) == idx:
            del self.dial_owner[tag]
        self.routes.dials.cancel(tag)
        self.abandoned_dials.add(tag)

    async def _end_orphan(self, params: dict[str, Any]) -> None:
        assert self.conn is not None
        try:
            await self.conn.execute("calling.end", params)
        except RelayError as exc:
            if not exc.call_gone:
                log.warning("hang-up of abandoned dial leg %s failed: %s", params["call_id"], exc.message)

    def _on_link_health(self, idx: int, health: Health) -> None:
        if health.status is HealthStatus.OK:
            if not self.placement.is_available(idx, "slow"):
                self.placement.set_available(idx, "slow")
                log.warning("shard %d: CallActor %d takes calls again", self.shard, idx)
            return
        if self.placement.is_available(idx, "slow"):
            self.counters["call_actors_slow"] += 1
            log.warning("shard %d: CallActor %d takes no new calls: %s", self.shard, idx, health.reason)
            self.placement.set_unavailable(idx, "slow")
        if health.status is HealthStatus.LOST:
            log.error("shard %d: CallActor %d lost (%s)", self.shard, idx, health.reason)
            self.tasks.spawn(self.call_actor_lost(idx), f"recovery of CallActor {idx}")

    def _on_call_actor_restarted(self, previous: LinkSession) -> None:
        """The link found CallActor ``idx`` back as a new incarnation (Ray restarted it)."""
        assert self.links is not None
        idx = previous.peer_id
        incarnation = self.links.sessions[idx].peer_incarnation.hex()
        log.error("shard %d: CallActor %d restarted; applying the lost-calls policy", self.shard, idx)
        self.tasks.spawn(self.call_actor_lost(idx, incarnation, previous), f"recovery of CallActor {idx}")

    def _ack_now(self, ack_id: str | None) -> None:
        if ack_id and self.conn is not None:
            self.conn.ack([ack_id])

    # --- inbound events -----------------------------------------------------------

    def _on_event(self, event: RelayEvent, ack_id: str | None) -> None:
        et = event.event_type
        if et == c.EVENT_MESSAGING_STATE:
            self._on_message_state(event, ack_id)
            return
        routed = self.routes.route(event)
        route = routed.route
        if route is Route.CALL:
            idx = routed.target
            assert idx is not None
            self._to(idx, (m.EVENT, event.call_id, et, event.params, event.timestamp, ack_id), ack_id)
            if routed.call_ended:
                self._released(event.call_id, idx)
        elif route is Route.OFFER:
            self._offer(event, ack_id)
        elif route is Route.DIAL_LEG:
            idx_or_none = self.dial_owner.get(event.tag)
            if idx_or_none is None:
                self._ack_now(ack_id)
                return
            self.routes.add_call(event.call_id, idx_or_none)
            self.node_of[event.call_id] = event.node_id
            self.placement.placed_on(idx_or_none)
            self._report_add(event.call_id, idx_or_none)
            if self.leases is not None:  # a dialled call counts against the limit too
                self._lease_actions(self.leases.adopt(event.call_id))
            self._to(idx_or_none, (m.LEG, event.tag, event.params), None)
            self._to(idx_or_none, (m.EVENT, event.call_id, et, event.params, event.timestamp, ack_id), ack_id)
        elif route is Route.DIAL_DONE:
            outcome = routed.dial
            assert outcome is not None
            idx_or_none = self.dial_owner.pop(outcome.tag, None)
            if idx_or_none is None:
                self._ack_now(ack_id)
                return
            self._to(idx_or_none, (m.DIAL, outcome.tag, outcome.answered, outcome.call), ack_id)
        elif route is Route.MESSAGE_IN:
            idx = self._pick_any()
            if idx is None:
                self.counters["messages_dropped"] += 1
                self._ack_now(ack_id)
                return
            self._to(idx, (m.MSG_IN, event.params), ack_id)
        else:
            if route is Route.AUTH_STATE:
                self._checkpoint()
            elif route is Route.UNROUTABLE:
                if self._ended_while_waiting(event, ack_id) or self._held(event, ack_id):
                    return
                self.counters["events_unroutable"] += 1
                orphan = self.abandoned_dials.orphan_leg(event) if self.abandoned_dials else None
                if orphan is not None:
                    self.counters["dial_orphans_ended"] += 1
                    what = f"hang-up of abandoned dial leg {event.call_id}"
                    self.tasks.spawn(self._end_orphan(orphan), what)
            self._ack_now(ack_id)

    def _held(self, event: RelayEvent, ack_id: str | None) -> bool:
        """An event for a call this shard cannot route while a CallActor it could not
        ask is unknown: it may be that actor's call, so it is held (not acked) until the
        answer comes; when the hold is full it is unroutable now (counted)."""
        rebuild = self.rebuild
        if rebuild is None or not event.call_id or not rebuild.pending:
            return False
        if rebuild.hold(event.call_id, (event, ack_id)):
            self.counters["events_held"] += 1
            return True
        self.counters["events_held_overflow"] += 1
        return False

    def _ended_while_waiting(self, event: RelayEvent, ack_id: str | None) -> bool:
        """A call that ended while its offer waited for a slot (the router restarting):
        it is never placed, or a handler would start on a call it can never see end."""
        if event.event_type != c.EVENT_CALL_STATE or event.params.get("call_state") != c.CALL_STATE_ENDED:
            return False
        waiting = self.leases.withdraw(event.call_id) if self.leases is not None else None
        if waiting is None:
            return False
        self.counters["offers_ended_waiting"] += 1
        self._ack_now(waiting[1])
        self._ack_now(ack_id)
        return True

    def _on_message_state(self, event: RelayEvent, ack_id: str | None) -> None:
        message_id = event.params.get("message_id")
        idx = self.msg_owner.get(message_id) if isinstance(message_id, str) else None
        if idx is None:
            # Its send result has not passed through yet: keep it (the SDK drops it).
            self.early_messages.feed(event)
            self._ack_now(ack_id)
            return
        if event.params.get("message_state") in c.MESSAGE_TERMINAL_STATES:
            self.msg_owner.pop(message_id, None)  # type: ignore[arg-type]
        self._to(idx, (m.MSG_STATE, event.event_type, event.params, event.timestamp), ack_id)

    # --- admission and placement ----------------------------------------------------

    async def _start_leases(self) -> None:
        """Start the lease unit from what the CallActors hold and the hang-ups that were
        never confirmed (kept in the KV store: they are held by no CallActor)."""
        counter = f"shard/{self.shard}/incarnation"
        incarnation = int(await self.secrets.load(counter) or 0) + 1
        await self.secrets.save(counter, incarnation)
        lease = await asyncio.wait_for(self._router_call("register_shard", self.shard), 60.0)
        stored = await self.secrets.load(f"shard/{self.shard}/unconfirmed") or []
        unconfirmed = {str(cid) for cid, _node in stored}
        self.node_of.update((str(cid), str(node)) for cid, node in stored)
        self.leases = adm.ShardLeases(
            self.shard,
            incarnation,
            lease["block"],
            active=set(self.routes.calls),
            unconfirmed=unconfirmed,
            unknown=set(self.rebuild.unknown) if self.rebuild is not None else set(),
            prefetch=adm.prefetches(lease["block"]),
        )
        self.leases.epoch = lease["epoch"]
        self._lease_actions(self.leases.start())
        if unconfirmed:
            self._retry_hangups()

    def _lease_actions(self, actions: list[adm.Action[Waiting]]) -> None:
        """Carry out the lease unit's decisions (in a loop, not recursively: an admitted
        offer no CallActor has room for frees its slot, which admits the next one)."""
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            if isinstance(action, adm.Admit):
                if not self._place(*action.offer) and self.leases is not None:
                    queue.extend(self.leases.ended(action.call_id))  # never answered: free
            elif isinstance(action, adm.Reject):
                self._over_limit(*action.offer)
            elif isinstance(action, adm.Duplicate):
                self._ack_now(action.offer[1])
            else:
                self._lease()

    def _offer(self, event: RelayEvent, ack_id: str | None) -> None:
        self.counters["offers"] += 1
        call_id = event.call_id
        if not call_id or call_id in self.routes.calls or self.leases is None:
            self._ack_now(ack_id)  # invalid, or a redelivered offer already placed
            return
        self._lease_actions(self.leases.offer(call_id, (event, ack_id)))

    def _lease(self) -> None:
        if self._leasing:
            return
        self._leasing = True
        self.tasks.spawn(self._lease_more(), "lease")

    async def _lease_more(self) -> None:
        """Send the outstanding lease request, one at a time, retransmitting it unchanged
        until answered (the router applies it once). Offers that waited
        ``LEASE_TIMEOUT`` for one request are dropped or passed; the request goes on."""
        loop = asyncio.get_running_loop()
        try:
            while self.leases is not None and (request := self.leases.outstanding) is not None:
                since, delay = loop.time(), 0.05
                while self.leases.outstanding is request:
                    try:
                        reply = await asyncio.wait_for(self.router.lease.remote(request), LEASE_TIMEOUT)
                    except Exception as exc:  # restarting, slow, or the call failed
                        log.info("shard %d: lease request unanswered (%r); retrying", self.shard, exc)
                        reply = None
                    if reply is not None:
                        self._lease_actions(self.leases.on_reply(reply))
                    if self.leases.outstanding is not request:
                        break
                    if loop.time() - since > LEASE_TIMEOUT and self.leases.waiting:
                        self.counters["lease_timeouts"] += 1
                        log.warning("shard %d: the router did not lease slots in time", self.shard)
                        self._lease_actions(self.leases.timed_out())
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, 1.0)
        finally:
            self._leasing = False

    def _over_limit(self, event: RelayEvent, ack_id: str | None) -> None:
        if self.options.get("over_limit") == "pass":
            self.counters["offers_passed"] += 1
            log.warning("max active calls reached; passing inbound call %s", event.call_id)
            self.tasks.spawn(self._pass(event), f"pass of {event.call_id}")
        else:
            self.counters["offers_dropped"] += 1
            log.warning("max active calls reached; dropping inbound call %s", event.call_id)
        self._ack_now(ack_id)

    async def _pass(self, event: RelayEvent) -> None:
        assert self.conn is not None
        try:
            await self.conn.execute("calling.pass", {"call_id": event.call_id, "node_id": event.node_id})
        except RelayError as exc:
            log.warning("pass of %s failed: %s", event.call_id, exc.message)

    def _pick(self, exclude: set[int] = frozenset()) -> int | None:  # type: ignore[assignment]
        return self.placement.pick(exclude)

    def _pick_any(self) -> int | None:
        return self.placement.pick_any()

    def _place(self, event: RelayEvent, ack_id: str | None, exclude: set[int] = frozenset()) -> bool:  # type: ignore[assignment]
        """Place an admitted offer; False if no CallActor has room (it is dropped)."""
        idx = self._pick(exclude)
        if idx is None:
            self.counters["offers_no_capacity"] += 1
            log.warning("no CallActor has room; dropping inbound call %s", event.call_id)
            self._ack_now(ack_id)
            self.tasks.spawn(self.router.want_capacity.remote(), "scale-up request")
            return False
        self.routes.add_call(event.call_id, idx)
        self.node_of[event.call_id] = event.node_id
        self.placement.placed_on(idx)
        self.counters["offers_admitted"] += 1
        self._report_add(event.call_id, idx)
        self._to(idx, (m.OFFER, event.call_id, event.params, ack_id), ack_id)
        return True

    def _replace(self, idx: int, refused: list[tuple[Any, ...]]) -> None:
        """CallActor ``idx`` was full: place the offers it refused elsewhere."""
        for item in refused:
            call_id = item[1]
            if self.routes.calls.get(call_id) != idx:
                continue  # placed before a restart of this actor: the server redelivers it
            self.routes.remove_call(call_id)
            self.placement.released(idx)
            self.placement.full(idx)  # it told us it is full
            event = RelayEvent(c.EVENT_CALL_RECEIVE, item[2], call_id)
            if not self._place(event, None, exclude={idx}) and self.leases is not None:
                self._lease_actions(self.leases.ended(call_id))

    def _released(self, call_id: str, idx: int) -> None:
        """``call_id`` on CallActor ``idx`` ended (or was passed): free its slot."""
        self.placement.released(idx)
        self._confirmed_end(call_id)

    def _confirmed_end(self, call_id: str) -> None:
        self.node_of.pop(call_id, None)
        if self._router_batcher is not None:
            self._router_batcher.put(("del", call_id))
        if self.leases is not None:
            had_unconfirmed = call_id in self.leases.unconfirmed
            self._lease_actions(self.leases.ended(call_id))
            if had_unconfirmed:
                self._store_unconfirmed()

    def _report_add(self, call_id: str, idx: int) -> None:
        if self._router_batcher is not None:
            self._router_batcher.put(("add", call_id, idx))

    async def _report(self, batch: list[tuple[Any, ...]]) -> None:
        # Reports are idempotent, so they are retried across a restart of the router
        # (a lost "del" would leak a call record there, a lost "add" hide a call).
        await self._router_call("report", self.shard, batch)

    async def _router_call(self, method: str, *args: Any, timeout: float = 30.0) -> Any:
        """Call the router, retrying while it restarts (``ActorUnavailableError``, or an
        error of a call in flight when it died) for up to ``timeout`` seconds."""
        from ray.exceptions import RayActorError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return await getattr(self.router, method).remote(*args)
            except RayActorError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)

    # --- CallActor failure -----------------------------------------------------------

    async def call_actor_lost(
        self,
        idx: int,
        incarnation: str | None = None,
        previous: LinkSession | None = None,
        overflow: tuple[Any, str | None] | None = None,
    ) -> dict[str, int]:
        """Apply the lost-calls policy to every call placed on CallActor ``idx``:
        hang up and count (default), or re-home them (``on_call_actor_lost="rehome"``).

        Three detectors report a loss: the link (the CallActor came back as a new
        incarnation: ``previous`` is the old link session; or it stayed unreachable or
        unresponsive past the deadline; or its queue overflowed), and the router's
        health loop (with the new ``incarnation``). Each loss is handled once. What the
        CallActor never acknowledged is not lost: its offers are placed on another
        CallActor (no handler ever ran for them, and none of their commands can have
        reached the server, since a CallActor's commands travel behind its
        acknowledgements on the same ordered stream)."""
        if not self.placement.is_available(idx, "lost") or (
            incarnation is not None and self.incarnations.get(idx) == incarnation
        ):
            return {"already": 1}
        self.placement.set_unavailable(idx, "lost")
        result = {"calls": 0, "hung_up": 0, "rehomed": 0, "replaced": 0}
        try:
            if self.rebuild is not None and idx in self.rebuild.unknown:
                await self._learn_last_known(idx)  # lost before it said what it holds
            assert self.links is not None
            # The old session is void: the link starts afresh (a still-running old
            # incarnation learns it from the handshake and fails its requests).
            session = previous if previous is not None else self.links.reset(idx)
            unacked = session.unacknowledged()
            if overflow is not None:
                unacked.append(overflow)
            unplaced = {item[1]: (item, ack) for item, ack in unacked if item[0] == m.OFFER}
            lost = [cid for cid, owner in self.routes.calls.items() if owner == idx and cid not in unplaced]
            result["calls"] = len(lost)
            for tag, owner in list(self.dial_owner.items()):
                if owner == idx:
                    del self.dial_owner[tag]
                    self.routes.dials.cancel(tag)
            for mid, owner in list(self.msg_owner.items()):
                if owner == idx:
                    del self.msg_owner[mid]
            for cid in lost:
                self.routes.remove_call(cid)
                self._fence(cid)
            # Offers it never saw: placed elsewhere, their slots kept. Their later events it
            # never acknowledged either follow them, in order (routed afresh: the call may
            # have ended meanwhile, or found no room and been dropped).
            for cid, (item, ack) in unplaced.items():
                self.routes.remove_call(cid)
                self._report_del(cid)
                placed = self._place(RelayEvent(c.EVENT_CALL_RECEIVE, item[2], cid), ack, exclude={idx})
                if not placed and self.leases is not None:
                    self._lease_actions(self.leases.ended(cid))
                result["replaced"] += 1
            self.counters["offers_replaced"] += result["replaced"]
            following = [(item, ack) for item, ack in unacked if item[0] == m.EVENT and item[1] in unplaced]
            for item, ack in following:
                self._on_event(RelayEvent(item[2], item[3], item[1], item[4]), ack)
            unacked = [entry for entry in unacked if entry not in following]
            hang_up = lost
            if self.options.get("on_call_actor_lost", "hangup") == "rehome":
                hang_up = self._rehome(lost, result)
                moved = set(lost) - set(hang_up)
                # Their events it never acknowledged follow them, in order.
                for item, ack in unacked:
                    if item[0] == m.EVENT and item[1] in moved:
                        self._to(self.routes.calls[item[1]], item, ack)
                    elif ack:
                        self._ack_now(ack)
            else:
                # Events of calls it held are consumed by the policy: ack them.
                self._on_released(idx, [ack for item, ack in unacked if ack and item[0] != m.OFFER])
            await self._hang_up_lost(hang_up, result)
            self.counters["calls_lost_actor"] += len(lost)
            try:
                await asyncio.wait_for(self._refresh_pool(), 10.0)
            except Exception:
                log.exception("pool refresh failed")
            self.incarnations[idx] = incarnation or await self._incarnation(idx) or ""
            # Should the old incarnation still be alive (it was only unreachable), it drops
            # the calls it no longer owns; its commands for them are refused meanwhile.
            for cid in lost:
                self._to(idx, (m.LOST, cid, "call_actor_lost"), None)
        finally:
            self.placement.recount(idx, sum(1 for owner in self.routes.calls.values() if owner == idx))
            self.placement.set_available(idx, "lost")
        return result

    def _fence(self, call_id: str) -> None:
        self.fenced[call_id] = None
        if len(self.fenced) > 100_000:
            self.fenced.popitem(last=False)

    def _rehome(self, lost: list[str], result: dict[str, int]) -> list[str]:
        """Move ``lost`` calls to live CallActors (in order with their later events);
        returns those no actor has room for."""
        homeless = []
        for cid in lost:
            target = self._pick()
            if target is None:
                homeless.append(cid)
                continue
            self.routes.add_call(cid, target)
            self.placement.placed_on(target)
            params = {"call_id": cid, "node_id": self.node_of.get(cid, ""), "call_state": "answered"}
            self._to(target, (m.ADOPT, cid, params), None)
            if self._router_batcher is not None:
                self._router_batcher.put(("move", cid, target))
            result["rehomed"] += 1
        self.counters["calls_rehomed"] += result["rehomed"]
        return homeless

    async def _hang_up_lost(self, lost: list[str], result: dict[str, int]) -> None:
        """End calls whose CallActor was lost. A slot is freed only once the end is
        confirmed (the server accepted it, or says the call is gone); a failed hang-up
        keeps its slot, is stored (no CallActor holds the call) and retried."""
        ended = await asyncio.gather(*(self._end_lost_call(cid) for cid in lost))
        result["hung_up"] += sum(ended)
        self.counters["calls_hung_up_lost_actor"] += sum(ended)
        if not all(ended):
            self._store_unconfirmed()
            self._retry_hangups()

    async def _end_lost_call(self, cid: str) -> bool:
        """``calling.end`` for ``cid``; True once its end is confirmed."""
        assert self.conn is not None
        params = {"call_id": cid, "node_id": self.node_of.get(cid, ""), "reason": "error"}
        try:
            await self.conn.execute("calling.end", params)
        except Exception as exc:
            if not (isinstance(exc, RelayError) and exc.call_gone):
                self.counters["lost_call_hangup_failures"] += 1
                log.warning("hang-up of %s (its CallActor was lost) failed: %r; retrying", cid, exc)
                if self.leases is not None:
                    self.leases.hangup_failed(cid)
                return False
        self._confirmed_end(cid)
        return True

    def _retry_hangups(self) -> None:
        if self._retrying_hangups:
            return
        self._retrying_hangups = True

        async def retry() -> None:
            delay = 1.0
            try:
                while self.leases is not None and self.leases.unconfirmed:
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, HANGUP_RETRY_MAX)
                    if self.conn is None or not self.conn.connected:
                        continue
                    for cid in sorted(self.leases.unconfirmed):
                        await self._end_lost_call(cid)
            finally:
                self._retrying_hangups = False

        self.tasks.spawn(retry(), "retry of failed hang-ups")

    def _store_unconfirmed(self) -> None:
        """Keep the unconfirmed hang-ups where a restart of this actor finds them (one
        write at a time, always of the latest set, so writes cannot land out of order)."""
        self._unconfirmed_dirty = True
        if self._storing_unconfirmed:
            return
        self._storing_unconfirmed = True

        async def write() -> None:
            try:
                while self._unconfirmed_dirty:
                    self._unconfirmed_dirty = False
                    pending = sorted(self.leases.unconfirmed) if self.leases is not None else []
                    calls = [[cid, self.node_of.get(cid, "")] for cid in pending]
                    await self.secrets.save(f"shard/{self.shard}/unconfirmed", calls)
            finally:
                self._storing_unconfirmed = False

        self.tasks.spawn(write(), "store unconfirmed hang-ups")

    async def _incarnation(self, idx: int, timeout: float = 30.0) -> str | None:
        """The incarnation of CallActor ``idx`` once it answers again (None if it does not)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                health = await asyncio.wait_for(self.actors[idx].health.remote(), 5.0)
                return str(health["incarnation"])
            except Exception:
                await asyncio.sleep(0.2)
        return None

    def _report_del(self, call_id: str) -> None:
        if self._router_batcher is not None:
            self._router_batcher.put(("del", call_id))

    # --- requests from CallActors ----------------------------------------------------

    def _request(self, idx: int, req_id: str, method: str, params: dict[str, Any]) -> None:
        """A request from CallActor ``idx``; its result goes back over the link."""
        conn = self.conn
        if conn is None:
            # Starting up: the links come up before the RELAY connection exists. These
            # requests never reached the server, so they wait for it (bounded) rather than
            # fail: a failure here looked like "cut off" to an idempotent verb, which
            # resent it at once, failed thrice in a few ms, and the handler's error policy
            # then ended a healthy call.
            if self._failed is None and len(self._early_requests) < MAX_EARLY_REQUESTS:
                self._early_requests.append((idx, req_id, method, params))
                return
            code = "queue_full" if self._failed is None else "connection_lost"
            self._executed(idx, req_id, method, params, None, RelayError(code, "the shard is starting up"))
            return
        call_id = params.get("call_id") if method.startswith("calling.") else None
        if call_id is not None and (call_id in self.fenced or self.routes.calls.get(call_id, idx) != idx):
            # Not this actor's call any more (the lost-actor policy moved or ended it).
            self.counters["requests_fenced"] += 1
            error = RelayError("410", "the runtime ended or moved this call; it is not this CallActor's")
            self._executed(idx, req_id, method, params, None, error)
            return
        if method == "calling.dial" and isinstance(params.get("tag"), str):
            self.dial_owner[params["tag"]] = idx
            self.routes.dials.start(params["tag"])
        elif method == "messaging.send" and not params.get("context"):
            params = {**params, "context": conn.protocol or "default"}
        # A future and a callback, not a task per request: this loop is the hot spot.
        try:
            future = conn.request(method, params)
        except RelayError as exc:
            self._executed(idx, req_id, method, params, None, exc)
            return
        future.add_done_callback(partial(self._on_request_done, idx, req_id, method, params))

    def _send_early_requests(self) -> None:
        """The RELAY connection exists now (or never will): send the requests that waited
        for it, in order (each checked again: the rebuild may have moved its call)."""
        while self._early_requests:
            idx, req_id, method, params = self._early_requests.popleft()
            if self.conn is None:
                error = RelayError("connection_lost", "the shard failed to start")
                self._executed(idx, req_id, method, params, None, error)
            else:
                self._request(idx, req_id, method, params)

    def _on_request_done(
        self, idx: int, req_id: str, method: str, params: dict[str, Any], future: asyncio.Future[Any]
    ) -> None:
        if future.cancelled():
            self._executed(idx, req_id, method, params, None, RelayError("closed", "the connection closed"))
            return
        exc = future.exception()
        if exc is None:
            self._executed(idx, req_id, method, params, future.result(), None)
        elif isinstance(exc, RelayError):
            self._executed(idx, req_id, method, params, None, exc)
        else:
            self._executed(idx, req_id, method, params, None, RelayError("internal", repr(exc)))

    def _executed(
        self,
        idx: int,
        req_id: str,
        method: str,
        params: dict[str, Any],
        result: dict[str, Any] | None,
        error: RelayError | None,
    ) -> None:
        # No ``self.conn`` needed (nor present while starting up: requests then fail with
        # ``connection_lost``); an exception here would break the link it came in on.
        if error is not None:
            exc = error
            if method == "calling.dial" and exc.failure != "connection_closed":
                self.dial_owner.pop(params.get("tag", ""), None)
                self.routes.dials.cancel(params.get("tag", ""))
            self._to(idx, (m.RESULT, req_id, False, (exc.failure or exc.code, exc.message, exc.data)), None)
            return
        assert result is not None
        if method == "messaging.send":
            message_id = result.get("message_id")
            result = {**result, "context": params.get("context", "")}
            self._to(idx, (m.RESULT, req_id, True, result), None)
            if isinstance(message_id, str) and message_id:
                self.msg_owner[message_id] = idx
                for event in self.early_messages.early.pop(message_id, []):
                    self._to(idx, (m.MSG_STATE, event.event_type, event.params, event.timestamp), None)
            return
        if method in (c.METHOD_RECEIVE, c.METHOD_UNRECEIVE):
            self._track_contexts(method, params)
        elif method == "calling.pass":
            # A passed call goes to another consumer and sends us nothing more:
            # free its slot now, or it would leak until the end of time.
            call_id = params.get("call_id", "")
            self.counters["calls_passed"] += 1
            owner = self.routes.remove_call(call_id)
            if owner is not None:  # (None: its ``ended`` beat the pass result and freed it)
                self._released(call_id, owner)
        self._to(idx, (m.RESULT, req_id, True, result), None)

    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request from the driver (not batched: the driver is not on the hot path)."""
        await self._ready.wait()
        assert self.conn is not None
        result = await self.conn.execute(method, params)
        if method in (c.METHOD_RECEIVE, c.METHOD_UNRECEIVE):
            self._track_contexts(method, params)
        return result

    def _track_contexts(self, method: str, params: dict[str, Any]) -> None:
        """A receive/unreceive succeeded: keep the session's contexts (sent again on a
        fresh connect) and checkpoint them, so a restart of this actor keeps them too."""
        assert self.conn is not None
        contexts = self.conn.session.contexts
        contexts[:] = updated_contexts(contexts, method, params.get("contexts") or [])
        self._checkpoint()

    async def reset_links(self) -> int:
        """Fault injection for tests and drills: reset every link's socket at once, as a
        network blip would (the links reconnect and resend; no call may notice)."""
        assert self.links is not None
        wires = list(self.links.wires.values())
        for wire in wires:
            if wire.transport is not None:
                wire.transport.abort()
        return len(wires)

    async def refresh_pool(self) -> int:
        """The router changed the pool (scaled up, or upgraded: a new generation of
        CallActors takes the new calls from now on): learn the new CallActors."""
        await self._refresh_pool()
        return len(self.actors)

    # --- rolling upgrade: the router retires an older generation -----------------------

    async def _call_actor_generations(self) -> dict[int, int]:
        """CallActor index → the code generation it runs, as the router has it."""
        info = await self.router.generations_info.remote()
        # Upgraded: the new owner's job shows this actor's output (see job_logs).
        show_in_job(str(info.get("log_job") or ""))
        return {int(idx): int(gen) for idx, gen in info["actors"].items()}

    async def call_actor_busy(self, idx: int, generation: int = 0) -> int:
        """What this shard still has with CallActor ``idx``: calls routed there, dials it
        owns, items it has not acknowledged (0: it may be retired). A shard that missed
        the news of ``generation`` (the router's current) learns it here first."""
        if generation > max(self.placement.generation.values(), default=0):
            await self._refresh_pool()
        calls = sum(1 for owner in self.routes.calls.values() if owner == idx)
        dials = sum(1 for owner in self.dial_owner.values() if owner == idx)
        # A message it sent still waits for its delivery states: they must reach it.
        messages = sum(1 for owner in self.msg_owner.values() if owner == idx)
        session = self.links.sessions.get(idx) if self.links is not None else None
        unacked = len(session.unacknowledged()) if session is not None else 0
        # Not asked yet since this shard restarted: it may hold anything.
        unknown = int(self.rebuild is not None and idx in self.rebuild.unknown)
        return calls + dials + messages + unacked + unknown

    async def forget_call_actor(self, idx: int) -> bool:
        """The router retires CallActor ``idx`` (an older generation, drained): stop
        linking to it and never place on it again, so its stop is not a loss here.
        False (nothing done) if this shard has something with it after all: checked and
        done in one step of this actor's loop, so no call can slip in between."""
        if await self.call_actor_busy(idx):
            return False
        self.retired_call_actors.add(idx)
        self.actors.pop(idx, None)
        self.placement.forget(idx)
        self.incarnations.pop(idx, None)
        if self.links is not None:
            self.links.forget(idx)
        return True

    async def end_calls_on(self, idx: int) -> int:
        """Hang up the calls routed to CallActor ``idx`` (its drain deadline passed); they
        end as any call does, their ``ended`` events reaching it. Returns how many."""
        assert self.conn is not None
        conn = self.conn
        call_ids = [cid for cid, owner in self.routes.calls.items() if owner == idx]

        async def end(cid: str) -> None:
            params = {"call_id": cid, "node_id": self.node_of.get(cid, ""), "reason": "hangup"}
            try:
                await conn.execute("calling.end", params)
            except RelayError as exc:
                if not exc.call_gone:
                    log.warning("hang-up of %s at its drain deadline failed: %s", cid, exc.message)

        for cid in call_ids:
            self.tasks.spawn(end(cid), f"hang-up of {cid} at its drain deadline")
        self.counters["calls_hung_up_drain_timeout"] += len(call_ids)
        # Messages still without a final state by now will not hold the retirement up:
        # their later states are dropped (and counted) like those of any unknown message.
        waiting = [mid for mid, owner in self.msg_owner.items() if owner == idx]
        for mid in waiting:
            del self.msg_owner[mid]
        if waiting:
            self.counters["messages_untracked_drain_timeout"] += len(waiting)
            log.warning(
                "shard %d: %d messages of CallActor %d had no final state at its drain deadline; "
                "their later states are dropped",
                self.shard,
                len(waiting),
                idx,
            )
        return len(call_ids)

    # --- introspection and shutdown ---------------------------------------------------

    async def lease_state(self, epoch: int = 0) -> dict[str, int]:
        """This shard's leases; a router of a newer ``epoch`` (restarted) gets them
        reported through :meth:`Router.lease` (the request is sent, not returned here,
        so that it is numbered and retransmitted like any other)."""
        if self.leases is None:
            return {}  # starting: it reports by itself once started
        self._lease_actions(self.leases.on_ask(epoch))
        return self.leases.state()

    async def session_info(self) -> dict[str, Any]:
        """This shard's session as the app's clients show it (``relay_protocol``,
        ``connected``, ``contexts``), and its load: a cheap read, polled by them."""
        conn = self.conn
        return {
            "shard": self.shard,
            "protocol": conn.protocol if conn is not None else "",
            "connected": bool(conn is not None and conn.connected),
            "contexts": list(
                conn.session.contexts if conn is not None else self.options.get("contexts") or []
            ),
            "active_calls": len(self.routes.calls),
            "pending_dials": len(self.dial_owner),
        }

    async def stats(self) -> dict[str, Any]:
        conn = self.conn.stats() if self.conn is not None else {}
        return {
            "shard": self.shard,
            **_where(),
            "protocol": self.conn.protocol if self.conn is not None else "",
            "active_calls": len(self.routes.calls),
            "granted": self.leases.granted if self.leases is not None else 0,
            "waiting_offers": len(self.leases.waiting) if self.leases is not None else 0,
            "unconfirmed_hangups": len(self.leases.unconfirmed) if self.leases is not None else 0,
            "held_slots": self.leases.held if self.leases is not None else 0,
            "unknown_call_actors": len(self.rebuild.unknown) if self.rebuild is not None else 0,
            "held_events": len(self.rebuild.held) if self.rebuild is not None else 0,
            "placed": dict(self.placed),
            "pending_dials": len(self.dial_owner),
            "tracked_messages": len(self.msg_owner),
            "unavailable_call_actors": len(self.placement.unavailable),
            "loop_lag": self._hub.lag if self._hub is not None else 0.0,
            "backoff": self.conn.backoff.options() if self.conn is not None else {},
            "links": link_stats(self.links),
            "batchers": {"router": self._router_batcher.stats()} if self._router_batcher is not None else {},
            **self.counters,
            **{f"conn.{k}": v for k, v in conn.items()},
        }

    async def shutdown(self) -> None:
        """Close the links and the socket (the session is not resumed after this)."""
        if self._hub is not None:
            await self._hub.aclose()
        if self.links is not None:
            await self.links.aclose()
        if self._router_batcher is not None:
            await self._router_batcher.close(drain=True, timeout=5.0)
        if self.conn is not None:
            await self.conn.close()
        await self.tasks.cancel_all()
