"""CallActor: where user logic runs on Ray — many calls per process, as asyncio tasks.

A Ray actor process costs ~90 MiB, so one process per call is out of the
question: each CallActor hosts thousands of calls. The connection actor sends
it batches of items (:mod:`relay_actors.actor_messages`): offers, events,
results; it sends back batches of requests. Each call is a regular
:class:`~relay_actors.call.Call` whose commands travel through
:class:`_ShardLink`, so the user's ``on_call`` handler is the same code that
runs in-process.

Inside a CallActor, a ``RelayClient`` (the one the handler's module refers to,
unpickled or constructed here) is a proxy: ``dial``, ``send_message``,
``execute``, ``receive`` and ``unreceive`` go through the app's connection actors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from ray import cloudpickle

from . import actor_messages as m
from . import metrics
from .actor_link import Link, LinkClosed, LinkServer
from .batching import Batcher
from .call import Call, _device_lists
from .dialing import await_dial, winner
from .errors import ArgumentError, RelayError
from .handlers import run_call_handler, run_message_handler
from .message import Message
from .protocol import constants as c
from .protocol.calls import CallCore
from .protocol.events import RelayEvent, parse_event
from .protocol.messages import MessageTracker
from .tasks import BackgroundTasks

__all__ = ["CallActor", "current_host"]

log = logging.getLogger("relay_actors.call_actor")

_HOST: CallActor | None = None
_DEDUPE_WINDOW = 100_000


def _where() -> dict[str, Any]:
    """This process's pid and Ray node id (for stats: fault tests and placement checks)."""
    import ray

    return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


def current_host() -> CallActor | None:
    """The CallActor of this process, if this process is one."""
    return _HOST


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
        options: ``capacity`` (calls at most), ``handler_timeout``, ``request_timeout``,
            ``dial_timeout``, ``shards`` (number of connection actors).
    """

    def __init__(self, app: str, index: int, handlers: bytes, options: dict[str, Any]) -> None:
        global _HOST
        _HOST = self
        self.app = app
        self.index = index
        self.incarnation = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.capacity = int(options.get("capacity", 5000))
        self.handler_timeout = options.get("handler_timeout")
        self.request_timeout = float(options.get("request_timeout", c.REQUEST_TIMEOUT))
        self.dial_timeout = float(options.get("dial_timeout", c.DIAL_TIMEOUT))
        self.shards = int(options.get("shards", 1))
        self.tasks = BackgroundTasks()
        self.counters: Counter[str] = Counter()
        self._streams: dict[int, Link] = {}
        self._link_events: dict[int, asyncio.Event] = {}
        self._link_server: LinkServer | None = None
        self._endpoint: tuple[str, int] = ("", 0)
        self._endpoint_ready = asyncio.Event()
        self.tasks.spawn(self._serve_links(), "link server")
        self.calls: dict[str, Call] = {}
        self.call_shard: dict[str, int] = {}
        self._links = [_ShardLink(self, s) for s in range(self.shards)]
        self._requests: dict[str, tuple[asyncio.Future[dict[str, Any]], int]] = {}
        self._dials: dict[str, tuple[asyncio.Future[Call], int]] = {}
        self._messages = MessageTracker()
        self._message_objects: dict[str, Message] = {}
        self._message_shard: dict[str, int] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._batchers: dict[int, Batcher[tuple[Any, ...]]] = {}
        self._rr = 0
        # Unpickle last: a RelayClient inside the handlers' globals becomes a proxy to us.
        metrics.export_actor_stats("call_actor", self.stats, {"app": self.app, "actor": str(self.index)})
        loaded = cloudpickle.loads(handlers)
        self.on_call: Callable[[Call], Any] | None = loaded.get("on_call")
        self.on_message: Callable[[Message], Any] | None = loaded.get("on_message")

    # --- plumbing to the connection actors -----------------------------------------

    def _batcher(self, shard: int) -> Batcher[tuple[Any, ...]]:
        batcher = self._batchers.get(shard)
        if batcher is None:

            async def send(batch: list[tuple[Any, ...]]) -> None:
                link = await self._link_for(shard)
                link.send(("submit", batch))
                await link.drain()

            def failed(exc: BaseException, batch: list[tuple[Any, ...]]) -> None:
                self._fail_requests([item[0] for item in batch], exc)

            batcher = Batcher(send, on_error=failed, name=f"call-actor-{self.index}->connection-{shard}")
            self._batchers[shard] = batcher
        return batcher

    # --- the direct links from the connection actors (see actor_link) --------------------

    async def _serve_links(self) -> None:
        import ray

        from . import kvstore

        secret = await (await kvstore.AppSecrets.open(self.app)).link_secret()
        if not secret:
            log.error("CallActor %d: no link secret stored for app %r", self.index, self.app)
            return
        self._link_server = LinkServer(secret, self._on_link)
        self._endpoint = await self._link_server.start(ray.util.get_node_ip_address())
        self._endpoint_ready.set()

    async def endpoint(self) -> tuple[str, int]:
        """Where the connection actors link to this actor."""
        await asyncio.wait_for(self._endpoint_ready.wait(), 30.0)
        return self._endpoint

    async def _on_link(self, link: Link, hello: Any) -> None:
        shard = int(hello[1])
        old = self._streams.get(shard)
        self._streams[shard] = link
        event = self._link_events.setdefault(shard, asyncio.Event())
        event.set()
        if old is not None and old is not link:
            old.close()
        try:
            while True:
                message = await link.recv()
                kind = message[0]
                if kind == "deliver":
                    refused = await self.deliver(shard, message[2])
                    if refused:
                        offers = {item[1]: item for item in message[2] if item[0] == m.OFFER}
                        link.send(("refused", [offers[cid] for cid in refused if cid in offers]))
                elif kind == "confirm":
                    # Everything before it on this ordered stream has been applied.
                    link.send(("delivered", message[1], []))
        except LinkClosed:
            pass
        finally:
            if self._streams.get(shard) is link:
                del self._streams[shard]
                self._link_events[shard].clear()
                # Requests in flight on that link will get no result: say so now.
                self._fail_requests(
                    [rid for rid, (_, s) in self._requests.items() if s == shard],
                    LinkClosed(f"link to connection shard {shard} closed"),
                )

    async def _link_for(self, shard: int) -> Link:
        link = self._streams.get(shard)
        if link is not None and not link.closed:
            return link
        # A connection actor (re)starting links to us within seconds; wait a little.
        event = self._link_events.setdefault(shard, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), 5.0)
        except asyncio.TimeoutError:
            raise LinkClosed(f"no link from connection shard {shard}") from None
        link = self._streams.get(shard)
        if link is None or link.closed:
            raise LinkClosed(f"no link from connection shard {shard}")
        return link

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
        req_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._requests[req_id] = (future, shard)
        self._batcher(shard).put((req_id, method, params))
        try:
            # The connection actor enforces the request timeout; this is a safety net.
            return await asyncio.wait_for(future, self.request_timeout + 5.0)
        except asyncio.TimeoutError:
            raise RelayError("timeout", f"Request timeout for {method}") from None
        finally:
            self._requests.pop(req_id, None)

    def next_shard(self) -> int:
        self._rr = (self._rr + 1) % self.shards
        return self._rr

    # --- from the connection actors ------------------------------------------------

    async def deliver(self, shard: int, batch: list[tuple[Any, ...]]) -> list[str]:
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
                elif kind == m.ADOPT:
                    self._adopt(shard, item[2])
                elif kind == m.RESTARTED:
                    self._fail_requests(
                        [rid for rid, (_, s) in self._requests.items() if s == shard],
                        RuntimeError("restart"),
                    )
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

    async def _run_handler(self, call: Call) -> None:
        assert self.on_call is not None
        await run_call_handler(self.on_call, call, self.counters, self.handler_timeout)

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
        await run_message_handler(self.on_message, message, self.counters)

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
                tag, lambda: self.request(shard, "calling.dial", payload), future, timeout, self._hang_up_legs
            )
        finally:
            self._dials.pop(tag, None)
        if handler is not None:
            self.tasks.spawn(self._run_given_handler(handler, call), f"dial handler for {call.call_id}")
        return call

    def _hang_up_legs(self, tag: str) -> None:
        """Nobody takes the dial: end its legs."""
        for call in list(self.calls.values()):
            if call.tag == tag and not call._core.ended:
                self.tasks.spawn(call.hangup("cancel"), f"hang-up of abandoned dial leg {call.call_id}")

    async def _run_given_handler(self, handler: Callable[[Call], Any], call: Call) -> None:
        try:
            await handler(call)
        except Exception:
            self.counters["handler_errors"] += 1
            log.exception("handler failed for dialled call %s", call.call_id)

    async def dial_remote(
        self, devices: Any, handler: bytes | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        """A dial asked for by the driver: the call (and ``handler``) live here."""
        fn = cloudpickle.loads(handler) if handler else None
        call = await self.dial(devices, handler=fn, **options)
        return {"call_id": call.call_id, "node_id": call.node_id, "tag": call.tag, "actor": self.index}

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
        if message_id:
            if message._track(self._messages):
                self._message_objects[message_id] = message
                self._message_shard[message_id] = shard
        return message

    async def send_message_remote(self, params: dict[str, Any], wait: float | None) -> dict[str, Any]:
        """A message sent by the driver; returns its id and, with ``wait``, its final state."""
        message = await self.send_message(**params)
        if wait:
            with contextlib.suppress(asyncio.TimeoutError):
                await message.wait(wait)
        return {"message_id": message.message_id, "state": message.state, "reason": message.reason}

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
        return {"incarnation": self.incarnation, "calls": len(self.calls), "capacity": self.capacity}

    async def stats(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "incarnation": self.incarnation,
            **_where(),
            "calls": len(self.calls),
            "pending_requests": len(self._requests),
            "pending_dials": len(self._dials),
            "handler_tasks": len(self.tasks),
            "batchers": {s: b.stats() for s, b in self._batchers.items()},
            **self.counters,
        }

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Flush what is queued, stop handlers, close the links."""
        for batcher in self._batchers.values():
            await batcher.close(drain=True, timeout=timeout)
        await self.tasks.cancel_all()
        for link in list(self._streams.values()):
            link.close()
        if self._link_server is not None:
            await self._link_server.close()


class ActorSideClient:
    """What a ``RelayClient`` is inside a CallActor: requests go through the app's
    connection actors. Handler registration is the driver's business, so the
    decorators here only return the function."""

    def __init__(self, host: CallActor) -> None:
        self._host = host

    def __repr__(self) -> str:
        return f"<RelayClient proxy in CallActor {self._host.index} of app {self._host.app!r}>"

    def on_call(self, handler: Callable[[Call], Any]) -> Callable[[Call], Any]:
        return handler

    def on_message(self, handler: Callable[[Message], Any]) -> Callable[[Message], Any]:
        return handler

    @property
    def relay_protocol(self) -> str:
        return ""

    async def dial(self, devices: Any, **kw: Any) -> Call:
        return await self._host.dial(devices, **kw)

    async def send_message(self, **kw: Any) -> Message:
        return await self._host.send_message(**kw)

    async def execute(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._host.request(self._host.next_shard(), method, params or {})

    async def receive(self, contexts: Sequence[str]) -> None:
        for shard in range(self._host.shards):
            await self._host.request(shard, c.METHOD_RECEIVE, {"contexts": list(contexts)})

    async def unreceive(self, contexts: Sequence[str]) -> None:
        for shard in range(self._host.shards):
            await self._host.request(shard, c.METHOD_UNRECEIVE, {"contexts": list(contexts)})

    def run(self) -> None:
        raise RuntimeError("run() belongs to the driver, not to a handler inside a CallActor")

    async def connect(self) -> None:
        """Already connected through the connection actors."""

    async def disconnect(self) -> None:
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
