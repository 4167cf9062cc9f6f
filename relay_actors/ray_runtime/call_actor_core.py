"""The CallActor's decisions, without Ray: what each link item does, its requests to the
shards, the event streams the driver follows.

The CallActor (:mod:`relay_actors.ray_runtime.call_actor`) is the shell: a Ray actor, a link
server, the Ray methods. Everything it is told over the links comes here as a batch of wire
arrays (:meth:`CallActorCore.apply`): decoded by the codec
(:mod:`relay_actors.ray_runtime.actor_messages`), applied to the
:class:`~relay_actors.call_host.CallHost` that hosts its calls, dials, messages and handler
runs, duplicates dropped by event id; refused offers, request results, lost calls, a
resumed session settle here. What it says to a shard goes out through ``send``, a
callable the shell gives (it encodes the item and queues it on the link); nothing here
imports ``ray`` or touches a socket, so the tests drive it with a list as the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ..call import Call, CallControl
from ..call_host import CallHost, Offer
from ..errors import ArgumentError, RelayError
from ..message import Message
from ..protocol import constants as c
from ..protocol.events import RelayEvent, parse_event
from . import actor_messages as m
from .commands_in_doubt import CommandsInDoubt
from .event_dedupe import EventDedupe
from .options import CallActorOptions

__all__ = ["CallActorCore", "EventStream", "Fetched", "ShardLane", "forget_oldest"]

log = logging.getLogger("relay_actors.ray_runtime.call_actor")

#: Messages sent for the driver whose states it has not fetched yet, at most (oldest forgotten).
FOLLOWED_KEPT = 10_000

#: A request made before the links are up waits for them this long.
READY_TIMEOUT = 30.0

#: What a driver's fetch of a stream gets: the number to ask from next, and the events.
Fetched = tuple[int, list[Any]]

#: How the core sends an item to shard ``shard`` (the shell encodes and queues it; raises
#: ``RelayError`` while the links are not up).
Send = Callable[[int, m.ToShard], None]


def _state(call: Call | None) -> str | None:
    """A call's state (None: gone)."""
    return call._core.state if call is not None else None


class EventStream:
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

    async def fetch(self, start: int, timeout: float) -> Fetched:
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


def forget_oldest(streams: OrderedDict[str, EventStream], keep: int) -> int:
    """Bound the streams the driver has not finished fetching; returns how many went."""
    gone = 0
    while len(streams) > keep:
        streams.popitem(last=False)
        gone += 1
    return gone


async def _fetch(
    streams: OrderedDict[str, EventStream], key: str, start: int, timeout: float
) -> Fetched | None:
    """A fetch from stream ``key`` (None: not followed); a stream whose last event is
    among those fetched is forgotten (nothing follows its end)."""
    stream = streams.get(key)
    if stream is None:
        return None
    fetched = await stream.fetch(start, timeout)
    if stream.done:
        streams.pop(key, None)
    return fetched


class ShardLane:
    """The lane (CallControl) of calls, dials and messages of one connection shard."""

    __slots__ = ("core", "shard", "tasks")

    def __init__(self, core: CallActorCore, shard: int) -> None:
        self.core = core
        self.shard = shard
        self.tasks = core.host.tasks

    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.core.request(self.shard, method, params)

    def release_call(self, call_id: str) -> None:
        """The call was passed to another consumer: it is not ours any more."""
        if self.core.host.release_call(call_id):
            self.core.counters["calls_passed"] += 1


class _LinkTransport:
    """How the call host reaches the wire: through the app's connection shards, a new
    dial or message on each in turn."""

    __slots__ = ("core",)

    def __init__(self, core: CallActorCore) -> None:
        self.core = core

    def lane(self) -> CallControl:
        return self.core.lanes[self.core.next_shard()]

    def default_context(self) -> str | None:
        return None  # the connection actor fills in its protocol

    def dial_abandoned(self, lane: CallControl, tag: str) -> None:
        """The shard ends the legs that show up later, and forgets the dial."""
        assert isinstance(lane, ShardLane)
        with contextlib.suppress(RelayError):
            self.core.send(lane.shard, m.DialAbandonedItem(tag))

    def message_sent(self, host: CallHost, message: Message, result: dict[str, Any]) -> None:
        """Nothing to do: the shard routes its state events here."""


class CallActorCore:
    """A CallActor's decisions (see module docstring).

    Args:
        app: the app's name.
        options: the CallActor's options (capacity, timeouts, shards).
        send: how an item goes to a shard (see :data:`Send`).
    """

    def __init__(self, app: str, options: CallActorOptions, send: Send) -> None:
        self.send = send
        self.shards = options.shards
        self.request_timeout = options.request_timeout
        #: The calls, dials, messages and handler runs of this actor.
        self.host = CallHost(
            _LinkTransport(self),
            capacity=options.capacity,
            handler_timeout=options.handler_timeout,
            on_handler_error=options.on_handler_error,
            dial_timeout=options.dial_timeout,
            app=app,
        )
        self.counters = self.host.counters
        #: The lane of each connection shard.
        self.lanes = [ShardLane(self, s) for s in range(self.shards)]
        #: Set by the shell once the links can carry items.
        self.ready = asyncio.Event()
        self.requests: dict[str, tuple[asyncio.Future[dict[str, Any]], int]] = {}
        #: Answers and ends a shard restart left in doubt (resolved once it resumed).
        self.in_doubt = CommandsInDoubt()
        self._request_prefix = os.urandom(8).hex()
        self._request_ids = itertools.count(1)
        #: Driver-sent messages and driver-dialled calls whose events it fetches.
        self.followed: OrderedDict[str, EventStream] = OrderedDict()
        self.streamed: OrderedDict[str, EventStream] = OrderedDict()
        #: Events already applied, by shard (a restarted shard's server redelivers).
        self._seen = EventDedupe()
        self._rr = 0

    def next_shard(self) -> int:
        """The shard the next new dial, message or request goes through (in turn)."""
        self._rr = (self._rr + 1) % self.shards
        return self._rr

    # --- from the connection actors ------------------------------------------------

    def apply(self, shard: int, wires: list[Any]) -> None:
        """Apply a batch from connection shard ``shard`` (wire arrays, in order); the
        offers refused because this actor is full go back to it (placed elsewhere)."""
        refused: list[m.OfferItem] = []
        for wire in wires:
            try:
                item = m.decode(wire)
            except m.MalformedItem as exc:
                self.counters["malformed_items"] += 1
                log.warning("connection shard %d sent %s", shard, exc.message)
                continue
            try:
                self.apply_item(shard, item, refused)
            except Exception:
                self.counters["item_errors"] += 1
                log.exception("failed on a %s from connection shard %d", type(item).__name__, shard)
        if refused:
            self.send(shard, m.RefusedItem(tuple(refused)))

    def apply_item(self, shard: int, item: m.Item, refused: list[m.OfferItem]) -> None:
        """One item from shard ``shard``; an offer this actor is too full for joins ``refused``."""
        host = self.host
        match item:
            case m.EventItem():
                self._on_event(shard, item)
            case m.ResultItem():
                self._resolve(item.req_id, item.result, None)
            case m.FailureItem():
                self._on_failure(item)
            case m.OfferItem():
                if not self._on_offer(shard, item):
                    refused.append(item)
            case m.LegItem():
                host.dial_leg(self.lanes[shard], item.params)
            case m.DialItem():
                host.dial_done(item.tag, item.answered, item.call)
            case m.MsgStateItem():
                host.message_state(parse_event(item.event_type, item.params, item.timestamp))
            case m.MsgInItem():
                host.message_in(item.params)
            case m.LostItem():
                self._on_lost(item)
            case m.AdoptItem():
                host.adopt(self.lanes[shard], item.params)
            case m.ResumedItem():
                self._on_resumed(shard)
            case _:  # an item only a CallActor sends
                self.counters["unknown_items"] += 1

    def _seen_before(self, shard: int, event_id: str | None) -> bool:
        if self._seen.seen_before(shard, event_id):
            self.counters["duplicate_events"] += 1
            return True
        return False

    def _on_event(self, shard: int, item: m.EventItem) -> None:
        if self._seen_before(shard, item.event_id):
            return
        call_id = item.call_id
        call = self.host.call_event(call_id, parse_event(item.event_type, item.params, item.timestamp))
        if call is None:
            self.counters["events_for_unknown_calls"] += 1
            return
        self.counters["events"] += 1
        ended = call._core.ended
        stream = self.streamed.get(call_id)
        if stream is not None:
            stream.add((item.event_type, item.params, item.timestamp), ended)
        if ended:
            self.counters["calls_ended"] += 1

    def _on_failure(self, item: m.FailureItem) -> None:
        entry = self.requests.get(item.req_id)
        if entry is None or entry[0].done():
            return
        error = item.error()
        if error.failure == "connection_closed" and self.in_doubt.cut_off(item.req_id):
            # An answer or end cut off may have run: resolved at the shard's RESUMED.
            self.counters["commands_cut_off"] += 1
            return
        entry[0].set_exception(error)

    def _on_offer(self, shard: int, item: m.OfferItem) -> bool:
        """An offer placed here; False if this actor is full (the shard places it elsewhere)."""
        offered = self.host.offer(self.lanes[shard], item.params, item.trace)  # tracing hook: trace
        if offered is Offer.FULL:
            self.counters["offers_refused"] += 1
            return False
        if offered is Offer.TAKEN:
            self._seen_before(shard, item.event_id)
            self.counters["offers"] += 1
        return True

    def _on_lost(self, item: m.LostItem) -> None:
        """The runtime took the call from this actor: it ends here (and for the driver)."""
        self.host.call_lost(item.call_id, item.reason)
        stream = self.streamed.get(item.call_id)
        if stream is not None:
            stream.add((m.STREAM_LOST, {"reason": item.reason}, 0.0), True)

    def _on_resumed(self, shard: int) -> None:
        """Shard ``shard``'s session is resumed and what it redelivered is applied: the
        commands its restart left in doubt are done, or sent again (see commands_in_doubt)."""
        calls = self.host.calls
        done, resend = self.in_doubt.resumed(shard, lambda cid: _state(calls.get(cid)))
        for req_id in done:
            self._resolve(req_id, {}, None)
        for command in resend:
            self.send(shard, command)
        self.counters["commands_shown_done"] += len(done)
        self.counters["commands_resent"] += len(resend)

    def shard_restarted(self, shard: int, carried_wires: Sequence[Any]) -> None:
        """Shard ``shard`` came back as a new process; ``carried_wires``: what its link had
        not sent yet. Requests that never left this process go to the new one; those it may
        have received and executed get no result: resolvable ones are parked until its
        session resumes, the others fail (``connection_lost``: may or may not have run)."""
        carried = []
        for wire in carried_wires:
            with contextlib.suppress(m.MalformedItem):
                item = m.decode(wire)
                if isinstance(item, m.RequestItem):
                    carried.append(item)
        unsent = {item.req_id for item in carried}
        in_flight = [rid for rid, (_, s) in self.requests.items() if s == shard and rid not in unsent]
        failed = self.in_doubt.shard_restarted(shard, in_flight)
        error = RelayError(
            "connection_lost",
            "the connection actor was lost (restart); the request may or may not have been executed",
        )
        for req_id in failed:
            self._resolve(req_id, None, error)
        for item in carried:
            self.send(shard, item)

    def _resolve(self, req_id: str, result: dict[str, Any] | None, error: RelayError | None) -> None:
        entry = self.requests.get(req_id)
        if entry is None or entry[0].done():
            return
        if error is None:
            entry[0].set_result(result or {})
        else:
            entry[0].set_exception(error)

    # --- to the connection actors ------------------------------------------------------

    async def request(self, shard: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request through connection shard ``shard`` (batched) and await its result."""
        if not self.ready.is_set():
            await asyncio.wait_for(self.ready.wait(), READY_TIMEOUT)
        try:
            orjson.dumps(params)  # only JSON crosses the link: fail here, clearly, not there
        except TypeError as exc:
            raise ArgumentError(f"{method}: params must be JSON values ({exc})") from None
        # Unique across incarnations too: a result for the previous process's request
        # must never resolve one of ours.
        req_id = f"{self._request_prefix}{next(self._request_ids):x}"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.requests[req_id] = (future, shard)
        self.in_doubt.sent(req_id, shard, method, params)
        # The connection actor enforces the request timeout; this is a safety net (a
        # timer, not wait_for: a handler's every command pays for it).
        timer = loop.call_later(self.request_timeout + 5.0, _expire, future, method)
        try:
            self.send(shard, m.RequestItem(req_id, method, params))
            return await future
        finally:
            timer.cancel()
            self.requests.pop(req_id, None)
            self.in_doubt.finished(req_id)

    # --- the streams the driver follows ------------------------------------------------

    def follow_call(self, call: Call) -> None:
        """From here on the events of ``call`` (a dial the driver asked for) are kept for it."""
        stream = self.streamed[call.call_id] = EventStream()
        if call._core.ended:
            stream.done = True
        self.counters["streamed_calls_forgotten"] += forget_oldest(self.streamed, FOLLOWED_KEPT)

    async def call_events(self, call_id: str, start: int, timeout: float) -> Fetched | None:
        """The events of followed ``call_id`` from number ``start`` on (see :class:`EventStream`)."""
        return await _fetch(self.streamed, call_id, start, timeout)

    def message_listener(self) -> tuple[EventStream, Callable[[Message, RelayEvent], None]]:
        """A stream for a message the driver sends, and the listener that feeds it."""
        followed = EventStream()

        def record(message: Message, event: RelayEvent) -> None:
            done = message.state in c.MESSAGE_TERMINAL_STATES
            item = (event.event_type, event.params, event.timestamp, message.state, message.reason, done)
            followed.add(item, done)

        return followed, record

    def follow_message(self, message_id: str, stream: EventStream) -> None:
        self.followed[message_id] = stream
        self.counters["followed_messages_forgotten"] += forget_oldest(self.followed, FOLLOWED_KEPT)

    async def message_events(self, message_id: str, start: int, timeout: float) -> Fetched | None:
        """The state events of followed ``message_id`` from number ``start`` on."""
        return await _fetch(self.followed, message_id, start, timeout)
