"""CallActor: where user logic runs on Ray — many calls per process, as asyncio tasks.

A Ray actor process costs ~90 MiB, so one process per call is out of the
question: each CallActor hosts thousands of calls. It listens for links from
the app's connection actors (:mod:`relay_actors.ray_runtime.actor_link`: a private Unix
socket for those on its node, TLS with the app's certificate for the others,
both behind the link's mutual handshake); they send it batches of items
(:mod:`relay_actors.ray_runtime.actor_messages`): offers, events, results, acknowledged
once applied; it sends back batches of requests. Its calls, dials, messages
and handler runs are a :class:`~relay_actors.call_host.CallHost`'s, the one the
in-process client uses, fed the items as they come; each call is a regular
:class:`~relay_actors.call.Call` whose commands travel through the
:class:`_ShardLink` of its shard, so the user's ``on_call`` handler is the same
code that runs in-process.

Inside a CallActor, the app's own ``RelayClient`` (the one the handlers refer to:
unpickled with them, or built while their module is imported here) is an
:class:`ActorSideClient`: ``dial``, ``send_message``, ``execute``, ``receive`` and
``unreceive`` go through the app's connection actors. A ``RelayClient(...)`` a
handler constructs itself is a real, independent in-process client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from ray import cloudpickle

from .. import logcontext
from ..call import Call, CallControl
from ..call_host import CallHost, Offer
from ..config import context_list, updated_contexts
from ..errors import ArgumentError, RelayError
from ..message import Message
from ..protocol import constants as c
from ..protocol.events import RelayEvent, parse_event
from ..tasks import BackgroundTasks
from . import actor_messages as m
from . import link_tls
from .actor_info import link_stats
from .actor_info import where as _where
from .actor_link import LinkHub, LinkServer
from .actor_messages import STREAM_LOST
from .commands_in_doubt import CommandsInDoubt
from .event_dedupe import EventDedupe
from .gc_tuning import tune_gc
from .link_protocol import LinkError, LinkSession

__all__ = ["CallActor", "current_host"]

log = logging.getLogger("relay_actors.ray_runtime.call_actor")

_HOST: CallActor | None = None
#: Messages sent for the driver whose states it has not fetched yet, at most (oldest forgotten).
_FOLLOWED_KEPT = 10_000
#: How often the shards' sessions are read for the handlers' client (protocol, contexts).
_SESSION_REFRESH = 5.0


def _state(call: Call | None) -> str | None:
    """A call's state (None: gone)."""
    return call._core.state if call is not None else None


def _configure_logging(options: dict[str, Any]) -> None:
    """The handlers log at the app's level, each record with its app, node and call id
    (Ray forwards this process's stderr to the driver: ``ray job logs``)."""
    import ray

    from .job_logs import show_in_job

    show_in_job(str(options.get("log_job") or ""))
    logcontext.configure_call_actor(options.get("log_level"), ray.util.get_node_ip_address())


def current_host() -> CallActor | None:
    """The CallActor of this process, if this process is one."""
    return _HOST


def building_app_client() -> CallActor | None:
    """The CallActor of this process while it unpickles handlers (importing the app's
    module, whose ``RelayClient(...)`` is then the app's client: the proxy)."""
    return _HOST if _HOST is not None and _HOST._unpickling else None


#: What a driver's fetch of a stream gets: the number to ask from next, and the events.
_Fetched = tuple[int, list[Any]]


class _Stream:
    """Events of a message or call the driver follows, kept until it fetched them:
    it asks from the number of events it has, which drops those before. Bounded: past
    ``keep`` unfetched events the oldest go (counted in ``dropped``)."""

    __slots__ = ("base", "changed", "done", "dropped", "events", "keep")

    def __init__(self, keep: int = 10_000) -> None:
        self.events: list[Any] = []
        self.base = 0  # the number of the first event in ``events``
        self.done = False
        self.dropped = 0
        self.keep = keep
        self.changed = asyncio.Event()

    def add(self, item: Any, done: bool = False) -> None:
        self.events.append(item)
        if len(self.events) > self.keep:
            del self.events[0]
            self.base += 1
            self.dropped += 1
        self.done = self.done or done
        self.changed.set()

    async def fetch(self, start: int, timeout: float) -> _Fetched:
        """The events from number ``start`` on (those still kept), waiting up to
        ``timeout`` s for one, and the number to ask from next time."""
        if start > self.base:
            del self.events[: start - self.base]
            self.base = start
        if not self.events and not self.done:
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout)
        return self.base + len(self.events), list(self.events)


def _expire(future: asyncio.Future[Any], method: str) -> None:
    if not future.done():
        future.set_exception(RelayError("timeout", f"Request timeout for {method}"))


def _forget_oldest(streams: OrderedDict[str, _Stream], keep: int) -> int:
    """Bound the streams the driver has not finished fetching; returns how many went."""
    gone = 0
    while len(streams) > keep:
        streams.popitem(last=False)
        gone += 1
    return gone


class _ShardLink:
    """The lane (CallControl) of calls, dials and messages of one connection shard."""

    __slots__ = ("actor", "shard", "tasks")

    def __init__(self, actor: CallActor, shard: int) -> None:
        self.actor = actor
        self.shard = shard
        self.tasks = actor.tasks

    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.actor.request(self.shard, method, params)

    def release_call(self, call_id: str) -> None:
        """The call was passed to another consumer: it is not ours any more."""
        if self.actor.call_host.release_call(call_id):
            self.actor.counters["calls_passed"] += 1


class _ActorTransport:
    """How a CallActor's call host reaches the wire: through the app's connection
    shards, a new dial or message on each in turn."""

    __slots__ = ("actor",)

    def __init__(self, actor: CallActor) -> None:
        self.actor = actor

    def lane(self) -> CallControl:
        return self.actor.links[self.actor.next_shard()]

    def default_context(self) -> str | None:
        return None  # the connection actor fills in its protocol

    def dial_abandoned(self, lane: CallControl, tag: str) -> None:
        """The shard ends the legs that show up later, and forgets the dial."""
        assert isinstance(lane, _ShardLink)
        with contextlib.suppress(RelayError):
            self.actor.send_item(lane.shard, [m.DIAL_ABANDONED, tag])

    def message_sent(self, host: CallHost, message: Message, result: dict[str, Any]) -> None:
        """Nothing to do: the shard routes its state events here."""


class CallActor:
    """Hosts calls and runs the app's handlers (create with :func:`ray.remote`).

    Args:
        app: the app's name (actor names and GCS keys derive from it).
        index: this actor's number in the pool.
        handlers: cloudpickled ``{"on_call": ..., "on_message": ...}``.
        options: ``capacity`` (calls at most), ``handler_timeout``, ``on_handler_error``, ``request_timeout``,
            ``dial_timeout``, ``shards`` (number of connection actors), ``log_level`` (the app's).
    """

    def __init__(self, app: str, index: int, handlers: bytes, options: dict[str, Any]) -> None:
        global _HOST
        _HOST = self
        _configure_logging(options)
        self.app = app
        self.index = index
        self.incarnation = ""  # the link server's, once it is up
        self.capacity = int(options.get("capacity", 5000))
        self.request_timeout = float(options.get("request_timeout", c.REQUEST_TIMEOUT))
        self.link_linger = float(options.get("link_linger") or 0.0)
        self.shards = int(options.get("shards", 1))
        self.project = str(options.get("project") or "")
        self.host = str(options.get("host") or "")
        #: Every shard's session as last read (see :meth:`_watch_sessions`).
        self.sessions: list[dict[str, Any] | None] = []
        self._unpickling = False
        #: The calls, dials, messages and handler runs of this actor.
        self.call_host = CallHost(
            _ActorTransport(self),
            capacity=self.capacity,
            handler_timeout=options.get("handler_timeout"),
            on_handler_error=str(options.get("on_handler_error", "hangup")),
            dial_timeout=float(options.get("dial_timeout", c.DIAL_TIMEOUT)),
            app=app,
        )
        self.tasks = self.call_host.tasks
        self.counters: Counter[str] = self.call_host.counters
        self._link_server: LinkServer | None = None
        self._hub: LinkHub | None = None
        self._endpoint: dict[str, Any] = {}
        self._endpoint_ready = asyncio.Event()
        #: This actor's own long-lived work, apart from the handlers' (``tasks``, which
        #: ``handler_tasks`` counts and a quiescent actor has none of).
        self.service = BackgroundTasks()
        self.service.spawn(self._serve_links(), "link server")
        tune_gc()  # set up: freeze what start-up made (see gc_tuning)
        #: The lane of each connection shard.
        self.links = [_ShardLink(self, s) for s in range(self.shards)]
        self._requests: dict[str, tuple[asyncio.Future[dict[str, Any]], int]] = {}
        #: Answers and ends a shard restart left in doubt (resolved once it resumed).
        self._in_doubt = CommandsInDoubt()
        self._request_prefix = os.urandom(8).hex()
        self._request_ids = itertools.count(1)
        #: Driver-sent messages and driver-dialled calls whose events it fetches.
        self._followed: OrderedDict[str, _Stream] = OrderedDict()
        self._streamed: OrderedDict[str, _Stream] = OrderedDict()
        #: Events already applied, by shard (a restarted shard's server redelivers).
        self._seen = EventDedupe()
        #: (until, hang, cleared) while :meth:`owned` is made to fail (:meth:`fail_owned`).
        self._owned_fault: tuple[float, bool, asyncio.Event] | None = None
        self._rr = 0
        # Unpickle last: a RelayClient inside the handlers' globals becomes a proxy to us.
        # The app's own code, from the driver through Ray (an actor argument, behind Ray's
        # token auth) — never bytes from a socket of ours: the links carry only JSON.
        with self.unpickling():
            loaded = cloudpickle.loads(handlers)
        self.call_host.on_call = loaded.get("on_call")
        self.call_host.on_message = loaded.get("on_message")

    @property
    def calls(self) -> dict[str, Call]:
        """The calls this actor hosts, by call_id."""
        return self.call_host.calls

    # --- the direct links from the connection actors (see actor_link) --------------------

    async def _serve_links(self) -> None:
        import ray

        from . import kvstore, tracing_setup

        secrets = await kvstore.AppSecrets.open(self.app)
        await tracing_setup.configure(secrets, "call_actor", f"call_actor:{self.index}")  # tracing hook
        secret = await secrets.link_secret()
        identity = await secrets.link_tls()
        if not secret or not identity:
            log.error("CallActor %d: no link secret stored for app %r", self.index, self.app)
            return
        server = LinkServer(
            bytes.fromhex(secret),
            self.index,
            self._on_link_items,
            on_restarted=self._on_shard_restarted,
            tls=link_tls.server_context(identity),
            linger=self.link_linger,
        )
        session_dir = None
        with contextlib.suppress(Exception):  # Ray's session dir: private API, hence the guard
            session_dir = ray._private.worker._global_node.get_session_dir_path()  # type: ignore[attr-defined]
        endpoint = await server.start(ray.util.get_node_ip_address(), session_dir)
        self._link_server = server
        self.incarnation = server.incarnation.hex()
        self._endpoint = {**endpoint, "node_id": ray.get_runtime_context().get_node_id()}
        self._hub = LinkHub(server)
        self._hub.start()
        self._endpoint_ready.set()
        self.service.spawn(self._watch_sessions(), "session reads")

    @contextlib.contextmanager
    def unpickling(self) -> Iterator[None]:
        """While handlers are unpickled, a ``RelayClient(...)`` is the app's client (the proxy)."""
        self._unpickling = True
        try:
            yield
        finally:
            self._unpickling = False

    async def _watch_sessions(self) -> None:
        """Read the shards' sessions for the handlers' client (``relay_protocol``,
        ``contexts``, ``connected``): quickly until the first protocol, then every few
        seconds (actors have no push to us outside the link, which carries calls)."""
        import ray

        from .actor_messages import NAMESPACE

        delay = 0.2
        while True:
            handles: list[Any] = []
            for shard in range(self.shards):
                try:
                    handles.append(
                        ray.get_actor(m.actor_name(self.app, "connection", shard), namespace=NAMESPACE)
                    )
                except ValueError:  # not created yet, or gone
                    handles.append(None)
            answers = await asyncio.gather(
                *(asyncio.wait_for(h.session_info.remote(), 5.0) for h in handles if h is not None),
                return_exceptions=True,
            )
            if len(answers) == self.shards:
                self.sessions = [None if isinstance(a, BaseException) else a for a in answers]
            known = bool(self.sessions and self.sessions[0] and self.sessions[0].get("protocol"))
            delay = _SESSION_REFRESH if known else min(delay * 2, _SESSION_REFRESH)
            await asyncio.sleep(delay)

    async def endpoint(self) -> dict[str, Any]:
        """Where the connection actors link to this actor (Unix socket path, TLS address, node)."""
        await asyncio.wait_for(self._endpoint_ready.wait(), 30.0)
        return self._endpoint

    def _on_link_items(self, shard: int, items: list[Any]) -> None:
        refused = self._apply(shard, items)
        if refused:
            offers = {item[1]: item for item in items if item[0] == m.OFFER}
            self.send_item(shard, [m.REFUSED, [offers[cid] for cid in refused if cid in offers]])

    def _on_shard_restarted(self, previous: LinkSession) -> None:
        """A connection actor came back as a new process. Requests that never left this
        process go to the new one; those it may have received and executed get no
        result, so they fail (``connection_lost``: may or may not have been executed)."""
        shard = previous.peer_id
        carried = [item for item, _ in previous.take_pending() if item[0] == m.REQUEST]
        unsent = {item[1] for item in carried}
        in_flight = [rid for rid, (_, s) in self._requests.items() if s == shard and rid not in unsent]
        self._fail_requests(self._in_doubt.shard_restarted(shard, in_flight), LinkError("restart"))
        for item in carried:
            self.send_item(shard, item)

    def send_item(self, shard: int, item: list[Any]) -> None:
        """Send one item to connection shard ``shard`` (batched by the link)."""
        server = self._link_server
        if server is None:
            raise RelayError("connection_lost", "the link server is not up yet")
        server.send(shard, item)

    def _fail_requests(self, req_ids: Sequence[str], exc: BaseException) -> None:
        error = RelayError(
            "connection_lost",
            f"the connection actor was lost ({type(exc).__name__}); "
            "the request may or may not have been executed",
        )
        for req_id in req_ids:
            entry = self._requests.get(req_id)
            if entry is not None and not entry[0].done():
                entry[0].set_exception(error)

    async def request(self, shard: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request through connection shard ``shard`` (batched) and await its result."""
        if self._link_server is None:
            await asyncio.wait_for(self._endpoint_ready.wait(), 30.0)
        try:
            orjson.dumps(params)  # only JSON crosses the link: fail here, clearly, not there
        except TypeError as exc:
            raise ArgumentError(f"{method}: params must be JSON values ({exc})") from None
        # Unique across incarnations too: a result for the previous process's request
        # must never resolve one of ours.
        req_id = f"{self._request_prefix}{next(self._request_ids):x}"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._requests[req_id] = (future, shard)
        self._in_doubt.sent(req_id, shard, method, params)
        # The connection actor enforces the request timeout; this is a safety net (a
        # timer, not wait_for: a handler's every command pays for it).
        timer = loop.call_later(self.request_timeout + 5.0, _expire, future, method)
        try:
            self.send_item(shard, [m.REQUEST, req_id, method, params])
            return await future
        finally:
            timer.cancel()
            self._requests.pop(req_id, None)
            self._in_doubt.finished(req_id)

    def next_shard(self) -> int:
        """The shard the next new dial, message or request goes through (in turn)."""
        self._rr = (self._rr + 1) % self.shards
        return self._rr

    # --- from the connection actors ------------------------------------------------

    def _apply(self, shard: int, batch: list[Any]) -> list[str]:
        """Apply a batch from connection shard ``shard``. Returns the ids of offers refused
        because this actor is full (the connection actor places them elsewhere)."""
        refused: list[str] = []
        for item in batch:
            kind = item[0]
            try:
                if kind == m.EVENT:
                    self._on_event(shard, item)
                elif kind == m.RESULT:
                    self._on_result(item)
                elif kind == m.OFFER:
                    if not self._on_offer(shard, item):
                        refused.append(item[1])
                elif kind == m.LEG:
                    self.call_host.dial_leg(self.links[shard], item[2])
                elif kind == m.DIAL:
                    self.call_host.dial_done(item[1], item[2], item[3])
                elif kind == m.MSG_STATE:
                    self.call_host.message_state(parse_event(item[1], item[2], item[3]))
                elif kind == m.MSG_IN:
                    self.call_host.message_in(item[1])
                elif kind == m.LOST:
                    self.call_host.call_lost(item[1], item[2])
                    stream = self._streamed.get(item[1])
                    if stream is not None:
                        stream.add((STREAM_LOST, {"reason": item[2]}, 0.0), True)
                elif kind == m.ADOPT:
                    self.call_host.adopt(self.links[shard], item[2])
                elif kind == m.RESUMED:
                    self._on_resumed(shard)
                else:
                    self.counters["unknown_items"] += 1
            except Exception:
                self.counters["item_errors"] += 1
                log.exception("CallActor %d failed on a %s item", self.index, kind)
        return refused

    def _on_resumed(self, shard: int) -> None:
        """Shard ``shard``'s session is resumed and what it redelivered is applied: the
        commands its restart left in doubt are done, or sent again (see commands_in_doubt)."""
        calls = self.call_host.calls
        done, resend = self._in_doubt.resumed(shard, lambda cid: _state(calls.get(cid)))
        for req_id in done:
            entry = self._requests.get(req_id)
            if entry is not None and not entry[0].done():
                entry[0].set_result({})
        for command in resend:
            self.send_item(shard, [m.REQUEST, command.req_id, command.method, command.params])
        self.counters["commands_shown_done"] += len(done)
        self.counters["commands_resent"] += len(resend)

    def _seen_before(self, shard: int, event_id: str | None) -> bool:
        if self._seen.seen_before(shard, event_id):
            self.counters["duplicate_events"] += 1
            return True
        return False

    def _on_event(self, shard: int, item: tuple[Any, ...]) -> None:
        _, call_id, event_type, params, timestamp, event_id = item
        if self._seen_before(shard, event_id):
            return
        call = self.call_host.call_event(call_id, parse_event(event_type, params, timestamp))
        if call is None:
            self.counters["events_for_unknown_calls"] += 1
            return
        self.counters["events"] += 1
        ended = call._core.ended
        stream = self._streamed.get(call_id)
        if stream is not None:
            stream.add((event_type, params, timestamp), ended)
        if ended:
            self.counters["calls_ended"] += 1

    def _on_result(self, item: tuple[Any, ...]) -> None:
        _, req_id, ok, payload = item
        entry = self._requests.get(req_id)
        if entry is None or entry[0].done():
            return
        if ok:
            entry[0].set_result(payload)
        else:
            entry[0].set_exception(RelayError(*payload))

    def _on_offer(self, shard: int, item: tuple[Any, ...]) -> bool:
        """An offer placed here; False if this actor is full (the shard places it elsewhere)."""
        _, _call_id, params, event_id, *trace = item  # tracing hook: an optional trailing field
        offered = self.call_host.offer(self.links[shard], params, trace[0] if trace else None)
        if offered is Offer.FULL:
            self.counters["offers_refused"] += 1
            return False
        if offered is Offer.TAKEN:
            self._seen_before(shard, event_id)
            self.counters["offers"] += 1
        return True

    # --- for the driver's client ------------------------------------------------------

    async def dial_remote(
        self, devices: Any, handler: bytes | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        """A dial asked for by the driver: the call (and ``handler``) live here."""
        with self.unpickling():  # (the driver's code, through a Ray call: see __init__)
            fn = cloudpickle.loads(handler) if handler else None
        call = await self.call_host.dial(devices, handler=fn, **options)
        # From here on its events are kept for the driver's Call (call_events).
        stream = self._streamed[call.call_id] = _Stream()
        if call._core.ended:
            stream.done = True
        self.counters["streamed_calls_forgotten"] += _forget_oldest(self._streamed, _FOLLOWED_KEPT)
        core = call._core
        return {
            "call_id": call.call_id,
            "node_id": call.node_id,
            "tag": call.tag,
            "actor": self.index,
            "direction": core.direction,
            "context": core.context,
            "project_id": core.project_id,
            "segment_id": core.segment_id,
            "device": core.device,
            "call_state": core.state,
        }

    async def call_events(self, call_id: str, start: int, timeout: float) -> _Fetched | None:
        """The events of driver-dialled ``call_id`` from number ``start`` on, and the next
        number (see :class:`_Stream`); ``None`` if this actor does not know the call."""
        stream = self._streamed.get(call_id)
        if stream is None:
            return None
        fetched = await stream.fetch(start, timeout)
        if stream.done:
            self._streamed.pop(call_id, None)  # the end is among these: nothing follows it
        return fetched

    async def call_execute(self, call_id: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A command of the driver's Call, through the shard that owns the call."""
        lane = self.call_host.lane_of(call_id) or self.links[self.next_shard()]
        return await self.call_host.command_for(call_id, lane, method, params)  # tracing hook

    async def send_message_remote(self, params: dict[str, Any]) -> dict[str, Any]:
        """A message sent by the driver: returns the send's result at once; the driver
        then fetches its state events with :meth:`message_events`."""
        followed = _Stream()

        def record(message: Message, event: RelayEvent) -> None:
            done = message.state in c.MESSAGE_TERMINAL_STATES
            item = (event.event_type, event.params, event.timestamp, message.state, message.reason, done)
            followed.add(item, done)

        message = await self.call_host.send_message(**params, listener=record)
        if message.message_id:
            self._followed[message.message_id] = followed
            self.counters["followed_messages_forgotten"] += _forget_oldest(self._followed, _FOLLOWED_KEPT)
        return {
            "message_id": message.message_id,
            "context": message.context,
            "state": message.state,
            "reason": message.reason,
        }

    async def message_events(self, message_id: str, start: int, timeout: float) -> _Fetched | None:
        """The state events of driver-sent ``message_id`` from number ``start`` on, waiting
        up to ``timeout`` s for one, and the next number; ``None`` if this actor does not
        know the message."""
        followed = self._followed.get(message_id)
        if followed is None:
            return None
        fetched = await followed.fetch(start, timeout)
        if followed.done:
            self._followed.pop(message_id, None)  # the terminal one is among these: nothing follows it
        return fetched

    # --- for the router and the connection actors ------------------------------------

    async def owned(self, shard: int) -> dict[str, Any]:
        """What this actor holds for ``shard``: the routing state a restarted connection actor rebuilds."""
        fault = self._owned_fault
        left = fault[0] - asyncio.get_running_loop().time() if fault is not None else 0.0
        if fault is not None and left > 0:
            if fault[1]:  # hang: no answer (the caller's timeout fires) until it ends or is cleared
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(fault[2].wait(), left)
            raise RelayError("internal", "owned() fails on purpose (fault injection)")
        return self.call_host.owned_by(self.links[shard])

    async def fail_owned(self, seconds: float, hang: bool = False) -> None:
        """Fault injection for tests and drills (a Ray call, never reachable from the
        network): :meth:`owned` fails (or, with ``hang``, answers nothing until then and
        fails) for the next ``seconds``, as a CallActor too busy to answer would."""
        if self._owned_fault is not None:
            self._owned_fault[2].set()  # a hanging owned() ends now
        self._owned_fault = (asyncio.get_running_loop().time() + seconds, hang, asyncio.Event())

    async def adopt(self, shard: int, calls: list[dict[str, Any]]) -> int:
        """Re-home calls whose CallActor died: they get ``recovered = True`` and the
        ``on_call`` handler runs again for them (it can check ``call.recovered``)."""
        return sum(self.call_host.adopt(self.links[shard], params) for params in calls)

    async def health(self) -> dict[str, Any]:
        """Liveness and load: the router polls this."""
        await asyncio.wait_for(self._endpoint_ready.wait(), 30.0)
        return {
            "incarnation": self.incarnation,
            "calls": len(self.calls),
            "capacity": self.capacity,
            "node": self._endpoint.get("node_id", ""),
        }

    async def stats(self) -> dict[str, Any]:
        return self.local_stats()

    def local_stats(self) -> dict[str, Any]:
        """This actor's figures (what the handlers' ``client.stats()`` shows)."""
        return {
            "index": self.index,
            "incarnation": self.incarnation,
            **_where(),
            "calls": len(self.calls),
            "pending_requests": len(self._requests),
            "pending_dials": self.call_host.pending_dials,
            "handler_tasks": len(self.tasks),
            "loop_lag": self._hub.lag if self._hub is not None else 0.0,
            "links": link_stats(self._link_server),
            **self.counters,
        }

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop handlers, close the links."""
        await self.tasks.cancel_all()
        await self.service.cancel_all()
        if self._hub is not None:
            await self._hub.aclose()
        if self._link_server is not None:
            await self._link_server.aclose()


class ActorSideClient:
    """What the app's ``RelayClient`` is inside a CallActor: requests go through the
    app's connection actors. Handler registration is the driver's business, so the
    decorators here only return the function. ``relay_protocol``, ``contexts`` and
    ``connected`` show the first connection shard's session as last read (every few
    seconds, and at once after this client's own ``receive``/``unreceive``).
    Credentials never reach it: ``token`` and ``jwt_token`` raise."""

    def __init__(self, host: CallActor) -> None:
        self._host = host

    def __repr__(self) -> str:
        return (
            f"<RelayClient proxy in CallActor {self._host.index} of app {self._host.app!r} "
            f"host={self.host!r} contexts={self.contexts!r}>"
        )

    def on_call(self, handler: Callable[[Call], Any]) -> Callable[[Call], Any]:
        return handler

    def on_message(self, handler: Callable[[Message], Any]) -> Callable[[Message], Any]:
        return handler

    # --- settings and state -------------------------------------------------------

    @property
    def project(self) -> str:
        return self._host.project

    @property
    def host(self) -> str:
        return self._host.host

    @property
    def token(self) -> str:
        raise AttributeError("the API token is not available inside a CallActor (it stays with the runtime)")

    @property
    def jwt_token(self) -> str:
        raise AttributeError("the JWT is not available inside a CallActor (it stays with the runtime)")

    def _session(self) -> dict[str, Any]:
        sessions = self._host.sessions
        return (sessions[0] if sessions else None) or {}

    @property
    def relay_protocol(self) -> str:
        """The first shard's protocol string (``""`` until first read)."""
        return str(self._session().get("protocol") or "")

    @property
    def contexts(self) -> list[str]:
        """The first shard's contexts (the constructor's plus ``receive``d ones)."""
        return list(self._session().get("contexts") or [])

    @property
    def connected(self) -> bool:
        """Every shard's session was connected when last read."""
        sessions = self._host.sessions
        return bool(sessions) and all(s is not None and s.get("connected") for s in sessions)

    @property
    def runtime(self) -> str:
        return "ray"

    def stats(self) -> dict[str, Any]:
        """This CallActor's figures (the app's: ``ray_stats()`` on the driver)."""
        return self._host.local_stats()

    # --- requests -----------------------------------------------------------------

    async def dial(self, devices: Any, **kw: Any) -> Call:
        return await self._host.call_host.dial(devices, **kw)

    async def send_message(self, **kw: Any) -> Message:
        return await self._host.call_host.send_message(**kw)

    async def execute(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._host.links[self._host.next_shard()].execute(method, params or {})

    async def receive(self, contexts: Sequence[str] | str) -> None:
        """Subscribe every shard to more contexts (a str is one context, as in the SDK)."""
        await self._subscribe(c.METHOD_RECEIVE, contexts)

    async def unreceive(self, contexts: Sequence[str] | str) -> None:
        """Unsubscribe every shard from contexts."""
        await self._subscribe(c.METHOD_UNRECEIVE, contexts)

    async def _subscribe(self, method: str, contexts: Sequence[str] | str) -> None:
        ctx = context_list(contexts)
        if not ctx:
            return
        for shard in range(self._host.shards):
            await self._host.request(shard, method, {"contexts": ctx})
        session = self._session()
        if session:  # show it now, not at the next read
            session["contexts"] = updated_contexts(session.get("contexts") or [], method, ctx)

    # --- lifecycle: the driver's ----------------------------------------------------

    def run(self) -> None:
        raise RuntimeError("run() belongs to the driver, not to a handler inside a CallActor")

    async def connect(self) -> None:
        """Already connected through the connection actors."""

    async def disconnect(self) -> None:
        """The driver owns the connection; nothing to do here."""

    async def __aenter__(self) -> ActorSideClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """The driver owns the connection; nothing to do here."""


def client_proxy(app: str) -> ActorSideClient:
    """Unpickling target of ``RelayClient``: the proxy of this CallActor."""
    host = current_host()
    if host is None:
        raise RuntimeError(
            f"a RelayClient of app {app!r} was unpickled outside a CallActor; "
            "pass handlers to on_call() instead of shipping the client"
        )
    return ActorSideClient(host)
