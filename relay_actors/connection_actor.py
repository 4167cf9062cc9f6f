"""Connection actor: owns one RELAY WebSocket session (one shard) on Ray.

Its event loop is the hot spot, so it does only this: parse, admit, route,
batch, ack. Every inbound event goes to the CallActor that owns its call in
a batch (:class:`~relay_actors.batching.Batcher`) over a direct link
(:mod:`relay_actors.actor_link`: a Ray call per batch costs ~0.5 ms of CPU at
each end, which at steady load, where batches stay small, would dwarf the rest);
the event is acked once that batch was delivered, so a crash of this process
before the hand-off means the server redelivers, never that the event is lost,
and CallActors drop the duplicates by event id. Requests come back from
CallActors in batches on the same link; their results ride the next delivery.

Admission: this shard admits an offer only with a slot leased from the router
(which holds the cluster-wide ``max_active_calls``), so the router stays off
the per-call path: slots are leased in blocks and returned when idle. The
rules are in :mod:`relay_actors.admission` (:class:`ShardLeases`), the choice
of a CallActor in :mod:`relay_actors.placement`; this actor carries out their
decisions: it sends the lease requests (one at a time, retransmitted until
answered) and places, drops or passes the offers.

Survives ``kill -9``: Ray restarts it (same name); it reads its credentials and
resume state (``protocol``, ``authorization_state``, contexts) from the GCS
key-value store, rebuilds its routing table from the CallActors (they know
their calls, dials and messages), tells them to fail requests that were in
flight, and resumes the session, so the server redelivers what was not acked.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from functools import partial
from typing import Any

from . import actor_link, kvstore, metrics
from . import actor_messages as m
from . import admission as adm
from .actor_link import Link, LinkClosed
from .actor_messages import NAMESPACE, actor_name
from .backoff import Backoff
from .batching import Batcher
from .call_actor import _where
from .config import resolve_settings
from .connection import Connection
from .errors import RelayError
from .placement import Placement
from .protocol import constants as c
from .protocol.events import RelayEvent
from .protocol.messages import MessageTracker
from .protocol.routing import EventRouter, Route
from .protocol.session import Connected
from .tasks import BackgroundTasks

__all__ = ["ConnectionActor"]

log = logging.getLogger("relay_actors.connection_actor")

#: An offer waiting for a slot: the event and its ack id.
Waiting = tuple[RelayEvent, str | None]
#: Waiting offers are dropped (or passed) when the router has not answered for this long.
LEASE_TIMEOUT = 5.0
#: A failed hang-up of a lost CallActor's call is retried, backing off up to this.
HANGUP_RETRY_MAX = 30.0


class ConnectionActor:
    """One shard's RELAY connection (create with :func:`ray.remote`; see module docstring).

    Args:
        app: the app's name.
        shard: this shard's number.
        options: ``host``, ``scheme``, ``contexts``, ``ca_pem`` (CA certificate text,
            not a secret), ``over_limit``, ``request_timeout``, ``ping_interval``.
            Credentials are NOT passed here: they are read from the GCS KV store.
    """

    def __init__(self, app: str, shard: int, options: dict[str, Any]) -> None:
        self.app = app
        self.shard = shard
        self.options = options
        self.routes: EventRouter[int] = EventRouter()
        self.actors: dict[int, Any] = {}
        self.batchers: dict[int, Batcher[tuple[tuple[Any, ...], str | None]]] = {}
        self.placement = Placement()
        self.placed = self.placement.placed  # (the same Counter: calls placed per CallActor)
        #: CallActor index → the incarnation whose loss was last handled.
        self.incarnations: dict[int, str] = {}
        #: Slots, active calls and waiting offers (set at start-up, after the rebuild).
        self.leases: adm.ShardLeases[Waiting] | None = None
        #: Direct links to CallActors by index, and deliveries awaiting their reply.
        self.links: dict[int, Link] = {}
        self._linking: dict[int, asyncio.Future[Link]] = {}
        self._deliveries: dict[int, asyncio.Future[list[str]]] = {}
        self._delivery_owner: dict[int, tuple[Link, int]] = {}
        self._seq = 0
        self._link_secret = ""
        self.dial_owner: dict[str, int] = {}
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
        self._checkpoint_pending = False
        self._start_task = asyncio.get_running_loop().create_task(self._start())
        metrics.export_actor_stats("connection", self.stats, {"app": self.app, "shard": str(self.shard)})

    # --- start-up and recovery ----------------------------------------------------

    def _key(self, what: str) -> str:
        return f"{self.app}/{what}"

    async def _start(self) -> None:
        try:
            import ray

            creds = await kvstore.get(self._key("credentials"))
            if not creds:
                raise RelayError("config", f"no credentials stored for app {self.app!r}")
            self._link_secret = await kvstore.get(self._key("link_secret")) or ""
            resume = await kvstore.get(self._key(f"shard/{self.shard}/resume")) or {}
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
            )
            self.router = ray.get_actor(actor_name(self.app, "router"), namespace=NAMESPACE)
            # Bookkeeping nobody waits on: linger to send it in few, large batches.
            self._router_batcher = Batcher(self._report, name=f"connection-{self.shard}->router", linger=0.2)
            await self._refresh_pool()
            restarted = await self._rebuild()
            await self._start_leases()
            self.conn = Connection(
                settings,
                on_event=self._on_event,
                on_connected=self._on_connected,
                request_timeout=float(self.options.get("request_timeout", c.REQUEST_TIMEOUT)),
                ping_interval=float(self.options.get("ping_interval", c.CLIENT_PING_INTERVAL)),
                backoff=Backoff(initial=float(self.options.get("backoff_initial", c.BACKOFF_MIN))),
                defer_acks=True,
            )
            self.conn.session.restore(resume)
            if restarted:
                for idx in self.actors:
                    self._to(idx, (m.RESTARTED,), None)
            await self.conn.connect()
        except BaseException as exc:
            self._failed = exc
            log.exception("connection shard %d failed to start", self.shard)
        finally:
            self._ready.set()

    async def _refresh_pool(self) -> None:
        pool = await self.router.pool_info.remote()
        for idx, handle, capacity in pool:
            if idx not in self.actors:
                self.actors[idx] = handle
                self.placement.add(idx, capacity)
        # Link eagerly: a CallActor's requests travel on the link this shard opens.
        for idx in self.actors:
            if idx not in self.links and idx not in self._linking and self._link_secret:
                self.tasks.spawn(self._link_quietly(idx), f"link to CallActor {idx}")

    async def _link_quietly(self, idx: int) -> None:
        try:
            await self._link(idx)
        except Exception as exc:  # it may be restarting: the next delivery retries
            log.info("shard %d: no link to CallActor %d yet (%r)", self.shard, idx, exc)

    async def _rebuild(self) -> bool:
        """Re-learn calls, dials and messages from the CallActors. True if there was anything."""
        found = False
        owned = await asyncio.gather(
            *(handle.owned.remote(self.shard) for handle in self.actors.values()), return_exceptions=True
        )
        for idx, state in zip(list(self.actors), owned, strict=True):
            if isinstance(state, BaseException):
                continue
            for call_id, node_id in state["calls"]:
                self.routes.add_call(call_id, idx)
                self.node_of[call_id] = node_id
                self.placement.placed_on(idx)
                found = True
            for tag in state["dials"]:
                self.dial_owner[tag] = idx
                self.routes.dials.start(tag)
                found = True
            for message_id in state["messages"]:
                self.msg_owner[message_id] = idx
                found = True
        if found:
            log.warning(
                "connection shard %d restarted: re-adopted %d calls, %d dials, %d messages",
                self.shard,
                len(self.routes.calls),
                len(self.dial_owner),
                len(self.msg_owner),
            )
        return found or bool(await kvstore.get(self._key(f"shard/{self.shard}/resume")))

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
            await kvstore.put(self._key(f"shard/{self.shard}/resume"), state)

        self.tasks.spawn(write(), "resume checkpoint")

    # --- delivery to CallActors ---------------------------------------------------

    def _batcher(self, idx: int) -> Batcher[tuple[tuple[Any, ...], str | None]]:
        batcher = self.batchers.get(idx)
        if batcher is None:

            async def send(batch: list[tuple[tuple[Any, ...], str | None]]) -> None:
                await self._deliver(idx, [item for item, _ in batch])
                if self.conn is not None:
                    self.conn.ack([ack for _, ack in batch if ack])

            def failed(exc: BaseException, batch: list[tuple[tuple[Any, ...], str | None]]) -> None:
                self._call_actor_failed(idx, exc, batch)

            batcher = Batcher(send, on_error=failed, name=f"connection-{self.shard}->call-actor-{idx}")
            self.batchers[idx] = batcher
        return batcher

    # --- the direct links to CallActors (see actor_link) --------------------------------

    async def _link(self, idx: int) -> Link:
        """The open link to CallActor ``idx``, connecting (once at a time) if needed."""
        link = self.links.get(idx)
        if link is not None and not link.closed:
            return link
        pending = self._linking.get(idx)
        if pending is None:
            pending = asyncio.ensure_future(self._open_link(idx))
            self._linking[idx] = pending
            pending.add_done_callback(lambda _: self._linking.pop(idx, None))
        return await asyncio.shield(pending)

    async def _open_link(self, idx: int) -> Link:
        host, port = await self.actors[idx].endpoint.remote()
        link = await actor_link.connect(host, port, self._link_secret, ("shard", self.shard))
        self.links[idx] = link
        self.tasks.spawn(self._read_link(idx, link), f"link to CallActor {idx}")
        return link

    async def _read_link(self, idx: int, link: Link) -> None:
        try:
            while True:
                message = await link.recv()
                kind = message[0]
                if kind == "delivered":
                    future = self._deliveries.pop(message[1], None)
                    if future is not None and not future.done():
                        future.set_result(message[2])
                elif kind == "submit":
                    await self.submit(idx, message[1])
                elif kind == "refused":
                    self._replace(idx, message[1])
        except LinkClosed:
            pass
        finally:
            if self.links.get(idx) is link:
                del self.links[idx]
            lost = LinkClosed(f"link to CallActor {idx} closed")
            for seq in [seq for seq, (owner, _) in self._delivery_owner.items() if owner is link]:
                self._delivery_owner.pop(seq, None)
                future = self._deliveries.pop(seq, None)
                if future is not None and not future.done():
                    future.set_exception(lost)

    async def _deliver(self, idx: int, items: list[tuple[Any, ...]]) -> None:
        """Send one batch to CallActor ``idx``. Returns once it is safe to ack the batch's
        events: when its bytes are in the kernel's socket buffer they reach the CallActor
        even if this process is killed next, so no reply is awaited (a round trip per
        batch would cost more than the batch). Only when the link has a user-space
        backlog does it wait for the CallActor to confirm. Offers the CallActor refuses
        come back on their own (``refused``)."""
        link = await self._link(idx)
        self._seq += 1
        seq = self._seq
        link.send(("deliver", seq, items, False))
        if link.flush():
            return
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._deliveries[seq] = future
        self._delivery_owner[seq] = (link, idx)
        try:
            link.send(("confirm", seq))
            await future
        finally:
            self._deliveries.pop(seq, None)
            self._delivery_owner.pop(seq, None)

    def _to(self, idx: int, item: tuple[Any, ...], ack_id: str | None) -> None:
        self._batcher(idx).put((item, ack_id))

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
            self.placed[idx_or_none] += 1
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
                self.counters["events_unroutable"] += 1
            self._ack_now(ack_id)

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
        counter = self._key(f"shard/{self.shard}/incarnation")
        incarnation = int(await kvstore.get(counter) or 0) + 1
        await kvstore.put(counter, incarnation)
        lease = await asyncio.wait_for(self._router_call("register_shard", self.shard), 60.0)
        stored = await kvstore.get(self._key(f"shard/{self.shard}/unconfirmed")) or []
        unconfirmed = {str(cid) for cid, _node in stored}
        self.node_of.update((str(cid), str(node)) for cid, node in stored)
        self.leases = adm.ShardLeases(
            self.shard, incarnation, lease["block"], active=set(self.routes.calls), unconfirmed=unconfirmed
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

    def _call_actor_failed(
        self, idx: int, exc: BaseException, batch: list[tuple[tuple[Any, ...], str | None]]
    ) -> None:
        log.error("CallActor %d unreachable (%s); applying the lost-calls policy", idx, type(exc).__name__)
        self.tasks.spawn(self.call_actor_lost(idx), f"recovery of CallActor {idx}")
        # The batch's events are consumed by the policy below; ack them so they are not replayed.
        if self.conn is not None:
            self.conn.ack([ack for _, ack in batch if ack])

    async def call_actor_lost(self, idx: int, incarnation: str | None = None) -> dict[str, int]:
        """Apply the lost-calls policy to every call placed on CallActor ``idx``:
        hang up and count (default), or re-home them (``on_call_actor_lost="rehome"``).

        Two detectors report a loss: a failed delivery here, and the router's health
        loop (with the restarted actor's ``incarnation``). Each loss is handled once:
        while it is handled ``idx`` is unavailable (``lost``: nothing new is placed there), and the
        incarnation that came back is remembered, so the router's later report of the
        same restart does not hang up the calls placed on the new incarnation since."""
        if not self.placement.is_available(idx, "lost") or (
            incarnation is not None and self.incarnations.get(idx) == incarnation
        ):
            return {"already": 1}
        self.placement.set_unavailable(idx, "lost")
        result = {"calls": 0, "hung_up": 0, "rehomed": 0}
        try:
            batcher = self.batchers.pop(idx, None)
            if batcher is not None:
                await batcher.close(drain=False)
            link = self.links.pop(idx, None)
            if link is not None:
                link.close()  # to the old incarnation; the next delivery links to the new one
            lost = [cid for cid, owner in self.routes.calls.items() if owner == idx]
            if incarnation is not None:
                # Reported after the restart: offers delivered to the new incarnation
                # meanwhile (Ray queues calls to a restarting actor) are its own, not lost.
                lost = await self._not_owned(idx, lost)
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
            hang_up = lost
            if self.options.get("on_call_actor_lost", "hangup") == "rehome":
                hang_up = self._rehome(lost, result)
            await self._hang_up_lost(hang_up, result)
            self.counters["calls_lost_actor"] += len(lost)
            try:
                await self._refresh_pool()
            except Exception:
                log.exception("pool refresh failed")
            # Wait for the restarted actor (same name): it is usable again, empty. Should
            # the old incarnation still be alive (a delivery failed for another reason),
            # it drops the calls it no longer owns.
            self.incarnations[idx] = incarnation or await self._incarnation(idx) or ""
            for cid in lost:
                self._to(idx, (m.LOST, cid, "call_actor_lost"), None)
        finally:
            self.placement.recount(idx, sum(1 for owner in self.routes.calls.values() if owner == idx))
            self.placement.set_available(idx, "lost")
        return result

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
                    await kvstore.put(self._key(f"shard/{self.shard}/unconfirmed"), calls)
            finally:
                self._storing_unconfirmed = False

        self.tasks.spawn(write(), "store unconfirmed hang-ups")

    async def _not_owned(self, idx: int, calls: list[str]) -> list[str]:
        try:
            owned = await asyncio.wait_for(self.actors[idx].owned.remote(self.shard), 5.0)
        except Exception:
            return calls
        held = {cid for cid, _node in owned["calls"]}
        return [cid for cid in calls if cid not in held]

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

    # --- requests from CallActors ----------------------------------------------------

    async def submit(self, idx: int, batch: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Requests from CallActor ``idx``; each result comes back through ``deliver``."""
        for req_id, method, params in batch:
            if method == "calling.dial" and isinstance(params.get("tag"), str):
                self.dial_owner[params["tag"]] = idx
                self.routes.dials.start(params["tag"])
            elif method == "messaging.send" and not params.get("context") and self.conn is not None:
                params = {**params, "context": self.conn.protocol or "default"}
            # A future and a callback, not a task per request: this loop is the hot spot.
            assert self.conn is not None
            try:
                future = self.conn.request(method, params)
            except RelayError as exc:
                self._executed(idx, req_id, method, params, None, exc)
                continue
            future.add_done_callback(partial(self._on_request_done, idx, req_id, method, params))

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
        assert self.conn is not None
        if error is not None:
            exc = error
            if method == "calling.dial" and exc.code != "connection_closed":
                self.dial_owner.pop(params.get("tag", ""), None)
                self.routes.dials.cancel(params.get("tag", ""))
            self._to(idx, (m.RESULT, req_id, False, (exc.code, exc.message, exc.data)), None)
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
        for ctx in params.get("contexts") or []:
            if method == c.METHOD_RECEIVE and ctx not in contexts:
                contexts.append(ctx)
            elif method == c.METHOD_UNRECEIVE and ctx in contexts:
                contexts.remove(ctx)
        self._checkpoint()

    async def refresh_pool(self) -> int:
        """The router changed the pool (scaled up): learn the new CallActors."""
        await self._refresh_pool()
        return len(self.actors)

    # --- introspection and shutdown ---------------------------------------------------

    async def lease_state(self, epoch: int = 0) -> dict[str, int]:
        """This shard's leases; a router of a newer ``epoch`` (restarted) gets them
        reported through :meth:`Router.lease` (the request is sent, not returned here,
        so that it is numbered and retransmitted like any other)."""
        if self.leases is None:
            return {}  # starting: it reports by itself once started
        self._lease_actions(self.leases.on_ask(epoch))
        return self.leases.state()

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
            "placed": dict(self.placed),
            "pending_dials": len(self.dial_owner),
            "tracked_messages": len(self.msg_owner),
            "batchers": {idx: b.stats() for idx, b in self.batchers.items()},
            **self.counters,
            **{f"conn.{k}": v for k, v in conn.items()},
        }

    async def shutdown(self) -> None:
        """Flush deliveries and close the socket (the session is not resumed after this)."""
        for batcher in list(self.batchers.values()):
            await batcher.close(drain=True, timeout=5.0)
        if self._router_batcher is not None:
            await self._router_batcher.close(drain=True, timeout=5.0)
        if self.conn is not None:
            await self.conn.close()
        await self.tasks.cancel_all()
