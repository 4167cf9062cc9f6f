"""CallActor: where user logic runs on Ray — many calls per process, as asyncio tasks.

A Ray actor process costs ~90 MiB, so one process per call is out of the
question: each CallActor hosts thousands of calls. It listens for links from
the app's connection actors (:mod:`relay_actors.ray_runtime.actor_link`: a private Unix
socket for those on its node, TLS with the app's certificate for the others,
both behind the link's mutual handshake); they send it batches of items
(:mod:`relay_actors.ray_runtime.actor_messages`): offers, events, results, acknowledged
once applied; it sends back batches of requests. Each call is a regular
:class:`~relay_actors.call.Call` whose commands travel through
:class:`_ShardLink`, so the user's ``on_call`` handler is the same code that
runs in-process.

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
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from ray import cloudpickle

from ..call import Call, _device_lists
from ..config import context_list, updated_contexts
from ..dialing import await_dial, winner
from ..errors import ArgumentError, RelayError
from ..handlers import run_call_handler, run_message_handler
from ..message import Message
from ..protocol import constants as c
from ..protocol.calls import CallCore
from ..protocol.events import RelayEvent, parse_event
from ..protocol.messages import MessageTracker
from ..tasks import BackgroundTasks
from . import actor_messages as m
from . import link_tls, metrics_export
from .actor_link import LinkHub, LinkServer
from .driver import STREAM_LOST
from .link_protocol import LinkError, LinkSession

__all__ = ["CallActor", "current_host"]

log = logging.getLogger("relay_actors.ray_runtime.call_actor")

_HOST: CallActor | None = None
_DEDUPE_WINDOW = 100_000
#: Messages sent for the driver whose states it has not fetched yet, at most (oldest forgotten).
_FOLLOWED_KEPT = 10_000
#: How often the shards' sessions are read for the handlers' client (protocol, contexts).
_SESSION_REFRESH = 5.0


def link_stats(peers: Any) -> dict[str, Any]:
    """Per-peer link figures for ``stats()`` (metrics: ``relay_link_*``)."""
    if peers is None:
        return {}
    return {
        peer: {**session.stats(), "connected": peer in peers.wires}
        for peer, session in peers.sessions.items()
    } | {"_process": dict(peers.counters)}


def _where() -> dict[str, Any]:
    """This process's pid and Ray node id (for stats: fault tests and placement checks)."""
    import ray

    return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


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
    """The CallControl of calls owned by one connection shard."""

    __slots__ = ("host", "shard", "tasks")

    def __init__(self, host: CallActor, shard: int) -> None:
        self.host = host
        self.shard = shard
        self.tasks = host.tasks

    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.host.request(self.shard, method, params)

    def _release_call(self, call_id: str) -> None:
        """The call was passed to another consumer: it is not ours any more."""
        if self.host.calls.pop(call_id, None) is not None:
            self.host.call_shard.pop(call_id, None)
            self.host.counters["calls_passed"] += 1


class CallActor:
    """Hosts calls and runs the app's handlers (create with :func:`ray.remote`).

    Args:
        app: the app's name (actor names and GCS keys derive from it).
        index: this actor's number in the pool.
        handlers: cloudpickled ``{"on_call": ..., "on_message": ...}``.
        options: ``capacity`` (calls at most), ``handler_timeout``, ``on_handler_error``, ``request_timeout``,
            ``dial_timeout``, ``shards`` (number of connection actors).
    """

    def __init__(self, app: str, index: int, handlers: bytes, options: dict[str, Any]) -> None:
        global _HOST
        _HOST = self
        self.app = app
        self.index = index
        self.incarnation = ""  # the link server's, once it is up
        self.capacity = int(options.get("capacity", 5000))
        self.handler_timeout = options.get("handler_timeout")
        self.on_handler_error = str(options.get("on_handler_error", "hangup"))
        self.request_timeout = float(options.get("request_timeout", c.REQUEST_TIMEOUT))
        self.dial_timeout = float(options.get("dial_timeout", c.DIAL_TIMEOUT))
        self.shards = int(options.get("shards", 1))
        self.project = str(options.get("project") or "")
        self.host = str(options.get("host") or "")
        #: Every shard's session as last read (see :meth:`_watch_sessions`).
        self.sessions: list[dict[str, Any] | None] = []
        self._unpickling = False
        self.tasks = BackgroundTasks()
        self.counters: Counter[str] = Counter()
        self._link_server: LinkServer | None = None
        self._hub: LinkHub | None = None
        self._endpoint: dict[str, Any] = {}
        self._endpoint_ready = asyncio.Event()
        #: This actor's own long-lived work, apart from the handlers' (``tasks``, which
        #: ``handler_tasks`` counts and a quiescent actor has none of).
        self.service = BackgroundTasks()
        self.service.spawn(self._serve_links(), "link server")
        self.calls: dict[str, Call] = {}
        self.call_shard: dict[str, int] = {}
        self._links = [_ShardLink(self, s) for s in range(self.shards)]
        self._requests: dict[str, tuple[asyncio.Future[dict[str, Any]], int]] = {}
        self._request_prefix = os.urandom(8).hex()
        self._request_ids = itertools.count(1)
        self._dials: dict[str, tuple[asyncio.Future[Call], int]] = {}
        self._messages = MessageTracker()
        self._message_objects: dict[str, Message] = {}
        self._message_shard: dict[str, int] = {}
        #: Driver-sent messages and driver-dialled calls whose events it fetches.
        self._followed: OrderedDict[str, _Stream] = OrderedDict()
        self._streamed: OrderedDict[str, _Stream] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._rr = 0
        # Unpickle last: a RelayClient inside the handlers' globals becomes a proxy to us.
        tags = {"app": self.app, "actor": str(self.index)}
        metrics_export.export_actor_stats("call_actor", self.stats, tags)
        # The app's own code, from the driver through Ray (an actor argument, behind Ray's
        # token auth) — never bytes from a socket of ours: the links carry only JSON.
        with self.unpickling():
            loaded = cloudpickle.loads(handlers)
        self.on_call: Callable[[Call], Any] | None = loaded.get("on_call")
        self.on_message: Callable[[Message], Any] | None = loaded.get("on_message")

    # --- the direct links from the connection actors (see actor_link) --------------------

    async def _serve_links(self) -> None:
        import ray

        from . import kvstore

        secrets = await kvstore.AppSecrets.open(self.app)
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
            self._send(shard, [m.REFUSED, [offers[cid] for cid in refused if cid in offers]])

    def _on_shard_restarted(self, previous: LinkSession) -> None:
        """A connection actor came back as a new process. Requests that never left this
        process go to the new one; those it may have received and executed get no
        result, so they fail (``connection_lost``: may or may not have been executed)."""
        shard = previous.peer_id
        carried = [item for item, _ in previous.take_pending() if item[0] == m.REQUEST]
        unsent = {item[1] for item in carried}
        self._fail_requests(
            [rid for rid, (_, s) in self._requests.items() if s == shard and rid not in unsent],
            LinkError("restart"),
        )
        for item in carried:
            self._send(shard, item)

    def _send(self, shard: int, item: list[Any]) -> None:
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
        # The connection actor enforces the request timeout; this is a safety net (a
        # timer, not wait_for: a handler's every command pays for it).
        timer = loop.call_later(self.request_timeout + 5.0, _expire, future, method)
        try:
            self._send(shard, [m.REQUEST, req_id, method, params])
            return await future
        finally:
            timer.cancel()
            self._requests.pop(req_id, None)

    def next_shard(self) -> int:
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
                    self._on_event(item)
                elif kind == m.RESULT:
                    self._on_result(item)
                elif kind == m.OFFER:
                    if not self._on_offer(shard, item):
                        refused.append(item[1])
                elif kind == m.LEG:
                    self._on_leg(shard, item)
                elif kind == m.DIAL:
                    self._on_dial(item)
                elif kind == m.MSG_STATE:
                    self._on_message_state(item)
                elif kind == m.MSG_IN:
                    self._on_message_in(item)
                elif kind == m.LOST:
                    call = self.calls.pop(item[1], None)
                    if call is not None:
                        self.call_shard.pop(item[1], None)
                        call._lost(item[2])
                    stream = self._streamed.get(item[1])
                    if stream is not None:
                        stream.add((STREAM_LOST, {"reason": item[2]}, 0.0), True)
                elif kind == m.ADOPT:
                    self._adopt(shard, item[2])
                else:
                    self.counters["unknown_items"] += 1
            except Exception:
                self.counters["item_errors"] += 1
                log.exception("CallActor %d failed on a %s item", self.index, kind)
        return refused

    def _seen_before(self, event_id: str | None) -> bool:
        if not event_id:
            return False
        if event_id in self._seen:
            self.counters["duplicate_events"] += 1
            return True
        self._seen[event_id] = None
        if len(self._seen) > _DEDUPE_WINDOW:
            self._seen.popitem(last=False)
        return False

    def _on_event(self, item: tuple[Any, ...]) -> None:
        _, call_id, event_type, params, timestamp, event_id = item
        if self._seen_before(event_id):
            return
        call = self.calls.get(call_id)
        if call is None:
            self.counters["events_for_unknown_calls"] += 1
            return
        self.counters["events"] += 1
        call._deliver(parse_event(event_type, params, timestamp))
        stream = self._streamed.get(call_id)
        if stream is not None:
            stream.add((event_type, params, timestamp), call._core.ended)
        if call._core.ended:
            del self.calls[call_id]
            self.call_shard.pop(call_id, None)
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
        _, call_id, params, event_id = item
        if call_id in self.calls:
            return True  # a redelivered offer
        if len(self.calls) >= self.capacity:
            self.counters["offers_refused"] += 1
            return False
        self._seen_before(event_id)
        call = Call(self._links[shard], CallCore.from_params(params))
        self.calls[call_id] = call
        self.call_shard[call_id] = shard
        self.counters["offers"] += 1
        if self.on_call is None:
            log.warning("inbound call %s but no on_call handler is registered", call_id)
        else:
            self.tasks.spawn(self._run_handler(call), f"on_call handler for {call_id}")
        return True

    async def _run_handler(self, call: Call, handler: Callable[[Call], Any] | None = None) -> None:
        """The shared runner (timeout, error policy, log context) for ``on_call`` or a
        dial's own ``handler``."""
        fn = handler or self.on_call
        assert fn is not None
        await run_call_handler(fn, call, self.counters, self.handler_timeout, self.on_handler_error, self.app)

    def _on_leg(self, shard: int, item: tuple[Any, ...]) -> None:
        _, _tag, params = item
        call = Call(self._links[shard], CallCore.from_params(params, "outbound"))
        self.calls.setdefault(call.call_id, call)
        self.call_shard[call.call_id] = shard

    def _on_dial(self, item: tuple[Any, ...]) -> None:
        _, tag, answered, info = item
        entry = self._dials.get(tag)
        if entry is None or entry[0].done():
            return
        future, shard = entry
        if not answered:
            future.set_exception(RelayError("dial_failed", f"Dial failed (tag={tag})"))
            return

        def make(core: CallCore) -> Call:
            call = Call(self._links[shard], core)
            self.calls[call.call_id] = call
            self.call_shard[call.call_id] = shard
            return call

        future.set_result(winner(self.calls.get(info.get("call_id", "")), tag, info, make))

    def _on_message_state(self, item: tuple[Any, ...]) -> None:
        _, event_type, params, timestamp = item
        record, finished = self._messages.feed(parse_event(event_type, params, timestamp))
        if record is None:
            return  # kept until send_message registers the id
        message = self._message_objects.get(record.message_id)
        if message is not None:
            message._apply(parse_event(event_type, params, timestamp), record.state, record.reason, finished)
            if finished:
                del self._message_objects[record.message_id]
                self._message_shard.pop(record.message_id, None)

    def _on_message_in(self, item: tuple[Any, ...]) -> None:
        message = Message.from_event(item[1])
        if self.on_message is None:
            log.warning("inbound message %s but no on_message handler is registered", message.message_id)
            return
        self.tasks.spawn(self._run_message_handler(message), f"on_message handler for {message.message_id}")

    async def _run_message_handler(self, message: Message) -> None:
        assert self.on_message is not None
        await run_message_handler(self.on_message, message, self.counters, self.app)

    # --- what a handler's RelayClient does here ---------------------------------------

    async def dial(
        self,
        devices: Any,
        *,
        tag: str | None = None,
        dial_timeout: float | None = None,
        handler: Callable[[Call], Any] | None = None,
        **params: Any,
    ) -> Call:
        """Dial out through a connection actor; the answered Call lives in this actor."""
        tag = tag or str(uuid.uuid4())
        shard = self.next_shard()
        future: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        self._dials[tag] = (future, shard)
        payload = {
            "tag": tag,
            "devices": _device_lists(devices),
            **{k: v for k, v in params.items() if v is not None},
        }
        timeout = self.dial_timeout if dial_timeout is None else dial_timeout
        try:
            call = await await_dial(
                tag, lambda: self.request(shard, "calling.dial", payload), future, timeout, self._abandon_dial
            )
        finally:
            self._dials.pop(tag, None)
        if handler is not None:
            self.tasks.spawn(self._run_handler(call, handler), f"dial handler for {call.call_id}")
        return call

    def _abandon_dial(self, tag: str) -> None:
        """Nobody takes the dial: end the legs this actor knows, and have the connection
        actor end those that show up later and forget the dial."""
        self._hang_up_legs(tag)
        shard = self._dials.get(tag, (None, self.next_shard()))[1]
        with contextlib.suppress(RelayError):
            self._send(shard, [m.DIAL_ABANDONED, tag])

    def _hang_up_legs(self, tag: str) -> None:
        """Nobody takes the dial: end its legs."""
        for call in list(self.calls.values()):
            if call.tag == tag and not call._core.ended:
                self.tasks.spawn(call.hangup("cancel"), f"hang-up of abandoned dial leg {call.call_id}")

    async def dial_remote(
        self, devices: Any, handler: bytes | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        """A dial asked for by the driver: the call (and ``handler``) live here."""
        with self.unpickling():  # (the driver's code, through a Ray call: see __init__)
            fn = cloudpickle.loads(handler) if handler else None
        call = await self.dial(devices, handler=fn, **options)
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
        shard = self.call_shard.get(call_id)
        return await self.request(self.next_shard() if shard is None else shard, method, params)

    async def send_message(
        self,
        *,
        to_number: str,
        from_number: str,
        context: str | None = None,
        body: str | None = None,
        media: list[str] | None = None,
        tags: list[str] | None = None,
        region: str | None = None,
        on_completed: Callable[[RelayEvent], Any] | None = None,
        _listener: Callable[[Message, RelayEvent], None] | None = None,
    ) -> Message:
        if not body and not media:
            raise ArgumentError("send_message needs body=... and/or media=[...]")
        shard = self.next_shard()
        params: dict[str, Any] = {"to_number": to_number, "from_number": from_number}
        for key, value in (
            ("context", context),
            ("body", body),
            ("media", media),
            ("tags", tags),
            ("region", region),
        ):
            if value:
                params[key] = value
        # The connection actor fills in its protocol as the context when none is given.
        result = await self.request(shard, "messaging.send", params)
        message_id = str(result.get("message_id") or "")
        message = Message(
            message_id=message_id,
            context=str(result.get("context") or context or ""),
            from_number=from_number,
            to_number=to_number,
            body=body or "",
            media=media,
            tags=tags,
            on_completed=on_completed,
        )
        if _listener is not None:
            message.on(lambda event: _listener(message, event))
        if message_id:
            if message._track(self._messages):
                self._message_objects[message_id] = message
                self._message_shard[message_id] = shard
        return message

    async def send_message_remote(self, params: dict[str, Any]) -> dict[str, Any]:
        """A message sent by the driver: returns the send's result at once; the driver
        then fetches its state events with :meth:`message_events`."""
        followed = _Stream()

        def record(message: Message, event: RelayEvent) -> None:
            done = message.state in c.MESSAGE_TERMINAL_STATES
            item = (event.event_type, event.params, event.timestamp, message.state, message.reason, done)
            followed.add(item, done)

        message = await self.send_message(**params, _listener=record)
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
        return {
            "calls": [
                (cid, call.node_id) for cid, call in self.calls.items() if self.call_shard.get(cid) == shard
            ],
            "dials": [tag for tag, (_, s) in self._dials.items() if s == shard],
            "messages": [mid for mid, s in self._message_shard.items() if s == shard],
        }

    async def adopt(self, shard: int, calls: list[dict[str, Any]]) -> int:
        """Re-home calls whose CallActor died: they get ``recovered = True`` and the
        ``on_call`` handler runs again for them (it can check ``call.recovered``)."""
        return sum(self._adopt(shard, params) for params in calls)

    def _adopt(self, shard: int, params: dict[str, Any]) -> bool:
        call_id = params.get("call_id", "")
        if not call_id or call_id in self.calls:
            return False
        core = CallCore.from_params(params, params.get("direction") or "inbound")
        call = Call(self._links[shard], core)
        call.recovered = True
        self.calls[call_id] = call
        self.call_shard[call_id] = shard
        self.counters["calls_recovered"] += 1
        if self.on_call is not None:
            self.tasks.spawn(self._run_handler(call), f"recovered handler for {call_id}")
        return True

    async def health(self) -> dict[str, Any]:
        """Liveness and load: the router polls this."""
        await asyncio.wait_for(self._endpoint_ready.wait(), 30.0)
        return {"incarnation": self.incarnation, "calls": len(self.calls), "capacity": self.capacity}

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
            "pending_dials": len(self._dials),
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
        return await self._host.dial(devices, **kw)

    async def send_message(self, **kw: Any) -> Message:
        return await self._host.send_message(**kw)

    async def execute(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._host.request(self._host.next_shard(), method, params or {})

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
