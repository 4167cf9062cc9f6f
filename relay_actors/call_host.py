"""The call host: calls, dials, messages and handler runs, for every runtime.

One :class:`CallHost` serves the in-process client, every CallActor and the Ray
driver. It owns the correlation tables (calls by ``call_id``, dials by ``tag``,
outbound messages by ``message_id``), the inbound offer path, the runs of the
``on_call``/``on_message`` handlers (through :mod:`relay_actors.handlers`), the
dial owner's part (winner, hang-up of legs nobody took, :class:`~relay_actors.dialing.AbandonedDials`)
and message tracking. It touches no socket and no Ray: a runtime gives it a
:class:`HostTransport` (how requests reach the wire) and feeds it what comes back:

- in-process, raw RELAY events through :meth:`CallHost.feed`, which routes them
  (the sans-IO :class:`~relay_actors.protocol.routing.EventRouter`) to the same
  methods a runtime that routes elsewhere calls directly;
- in a CallActor, items the connection actor already routed: :meth:`CallHost.offer`,
  :meth:`CallHost.call_event`, :meth:`CallHost.dial_leg`, :meth:`CallHost.dial_done`,
  :meth:`CallHost.message_state`, :meth:`CallHost.message_in`, :meth:`CallHost.call_lost`;
- on the Ray driver, the events of its dialled calls and sent messages as it fetches them.

Requests leave through *lanes*: a lane is a :class:`~relay_actors.call.CallControl`
(``execute`` and a task set) — the connection in-process, one connection shard
in a CallActor. Every call remembers its lane; a dial or a message takes
:meth:`HostTransport.lane`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from enum import Enum
from typing import Any, Protocol

from . import tracing
from .call import Call, CallControl, _device_lists
from .dialing import AbandonedDials, await_dial, winner
from .errors import ArgumentError, RelayError
from .handlers import run_call_handler, run_message_handler
from .message import Message
from .protocol import constants as c
from .protocol.calls import CallCore
from .protocol.events import RelayEvent
from .protocol.messages import MessageRecord
from .protocol.routing import EventRouter, Route, is_other_leg
from .tasks import BackgroundTasks

__all__ = ["CallHandler", "CallHost", "HostTransport", "MessageHandler", "Offer"]

log = logging.getLogger("relay_actors.call_host")

CallHandler = Callable[[Call], Coroutine[Any, Any, Any]]
MessageHandler = Callable[[Message], Coroutine[Any, Any, Any]]

#: Abandoned dial tags remembered, to end legs that show up after we gave up.
ABANDONED_DIALS_KEPT = 1024
OVER_LIMIT_POLICIES = ("drop", "pass")


class HostTransport(Protocol):
    """What a runtime provides to a :class:`CallHost`: where requests go."""

    def lane(self) -> CallControl:
        """The lane the next dial or message goes through."""
        ...

    def default_context(self) -> str | None:
        """The context of a message sent without one (None: the far side fills it in)."""
        ...

    def dial_abandoned(self, lane: CallControl, tag: str) -> None:
        """Nobody takes the dial ``tag`` (sent through ``lane``): a far side that sees
        its late legs is told here (the host ends those it is fed itself)."""
        ...

    def message_sent(self, host: CallHost, message: Message, result: dict[str, Any]) -> None:
        """``message`` was accepted (``result``: the send's result) and ``host`` tracks it:
        a runtime whose state events come back by asking for them starts asking here."""
        ...


class Offer(str, Enum):
    """What became of an offered call."""

    TAKEN = "taken"  # a new Call, its handler started
    KNOWN = "known"  # a redelivered offer of a call already hosted
    FULL = "full"  # no room: ``capacity`` calls are hosted


class CallHost:
    """Calls, dials, messages and handler runs (see the module docstring).

    Args:
        transport: where requests go (:class:`HostTransport`).
        capacity: calls hosted at most; an offer beyond is :attr:`Offer.FULL`.
        over_limit: what :meth:`feed` does with an offer beyond ``capacity``: ``"drop"``
            it (with a warning) or ``"pass"`` it to another consumer.
        handler_timeout, on_handler_error: for ``on_call`` handlers (:func:`run_call_handler`).
        dial_timeout: a dial's default wait for its outcome, in seconds.
        app: the app's name, in the handlers' log records.
        tasks: the task set of the handlers (the same as the lanes').
    """

    def __init__(
        self,
        transport: HostTransport,
        *,
        capacity: int,
        over_limit: str = "drop",
        handler_timeout: float | None = None,
        on_handler_error: str = "hangup",
        dial_timeout: float = c.DIAL_TIMEOUT,
        app: str = "",
        tasks: BackgroundTasks | None = None,
    ) -> None:
        if over_limit not in OVER_LIMIT_POLICIES:
            raise ArgumentError(f"over_limit must be one of {OVER_LIMIT_POLICIES}, not {over_limit!r}")
        self.transport = transport
        self.capacity = capacity
        self.over_limit = over_limit
        self.handler_timeout = handler_timeout
        self.on_handler_error = on_handler_error
        self.dial_timeout = dial_timeout
        self.app = app
        self.on_call: CallHandler | None = None
        self.on_message: MessageHandler | None = None
        #: The handlers' tasks, and those of the calls' listeners (the lanes' ``tasks``).
        self.tasks = tasks if tasks is not None else BackgroundTasks()
        #: offers, offers_dropped, offers_passed, handler_errors, ...
        self.counters: Counter[str] = Counter()
        self.router: EventRouter[Call] = EventRouter()
        #: Hosted calls by call_id (the router's table).
        self.calls: dict[str, Call] = self.router.calls
        #: Tracked outbound messages by message_id.
        self.messages: dict[str, Message] = {}
        self._message_lanes: dict[str, CallControl] = {}
        self._dials: dict[str, tuple[asyncio.Future[Call], CallControl]] = {}
        #: Dials given up on (timeout, cancel): their late legs are ended once each, by
        #: :meth:`feed` (a runtime that routes elsewhere is told through its transport).
        self.abandoned_dials = AbandonedDials(ABANDONED_DIALS_KEPT)
        #: The traces of tracked outbound messages (only while tracing is on).
        self._message_traces: dict[str, tracing.MessageTrace] = {}

    @property
    def pending_dials(self) -> int:
        return len(self._dials)

    # --- raw RELAY events (a host fed by a connection of its own) --------------------

    def feed(self, event: RelayEvent, ack_id: str | None = None) -> None:
        """One RELAY event, in arrival order (``ack_id``: the connection acks it)."""
        routed = self.router.route(event)
        route = routed.route
        if route is Route.CALL:
            assert routed.target is not None
            routed.target._deliver(event)
        elif route is Route.OFFER:
            self._offer_event(event)
        elif route is Route.DIAL_LEG:
            self.dial_leg(self.transport.lane(), event.params)._deliver(event)
        elif route is Route.DIAL_DONE:
            assert routed.dial is not None
            self.dial_done(routed.dial.tag, routed.dial.answered, routed.dial.call)
        elif route is Route.MESSAGE_STATE:
            assert routed.message is not None
            self._apply_message_state(routed.message, event, routed.message_done)
        elif route is Route.MESSAGE_IN:
            self.message_in(event.params)
        elif route is Route.UNROUTABLE:
            self.counters["events_other_legs" if is_other_leg(event) else "events_unroutable"] += 1
            if self.abandoned_dials:
                self._end_orphan_leg(event)

    def _offer_event(self, event: RelayEvent) -> None:
        """An offer from the wire: admitted, or dropped/passed beyond ``capacity``."""
        self.counters["offers"] += 1
        call_id = event.call_id
        if not call_id:
            self.counters["offers_invalid"] += 1
            log.warning("dropped an offer without a call_id")
            return
        if self.offer(self.transport.lane(), event.params) is not Offer.FULL:
            return
        if self.over_limit == "pass":
            self.counters["offers_passed"] += 1
            log.warning("max active calls (%d) reached; passing inbound call %s", self.capacity, call_id)
            params = {"call_id": call_id, "node_id": event.node_id}
            lane = self.transport.lane()
            self.tasks.spawn(lane.execute("calling.pass", params), f"pass of {call_id}")
        else:
            self.counters["offers_dropped"] += 1
            log.warning("max active calls (%d) reached; dropping inbound call %s", self.capacity, call_id)

    def _end_orphan_leg(self, event: RelayEvent) -> None:
        """A state event of a leg of an abandoned dial (it was unroutable): hang it up once."""
        params = self.abandoned_dials.orphan_leg(event)
        if params is not None:
            self.counters["dial_orphans_ended"] += 1
            lane = self.transport.lane()
            self.tasks.spawn(_end_quietly(lane, params), f"hang-up of abandoned dial leg {params['call_id']}")

    # --- calls ------------------------------------------------------------------------

    def offer(self, lane: CallControl, params: dict[str, Any], trace: list[Any] | None = None) -> Offer:
        """An inbound call (``calling.call.receive`` params) to host, its commands
        going through ``lane``: the ``on_call`` handler starts for it. ``trace``: the
        trace context its offer came with (:func:`relay_actors.tracing.call_started`)."""
        call_id = str(params.get("call_id") or "")
        if call_id in self.calls:
            return Offer.KNOWN
        if len(self.calls) >= self.capacity:
            return Offer.FULL
        call = Call(lane, CallCore.from_params(params))
        self.calls[call_id] = call
        if tracing.ENABLED:
            call._trace = tracing.call_started(call, self.app, trace)
        if self.on_call is None:
            log.warning("inbound call %s but no on_call handler is registered", call_id)
        else:
            self.run_call(call)
        return Offer.TAKEN

    def adopt(self, lane: CallControl, params: dict[str, Any]) -> bool:
        """A call re-homed here after its host was lost: ``recovered = True``, and the
        ``on_call`` handler runs again for it. False if unknown or already hosted."""
        call_id = params.get("call_id", "")
        if not call_id or call_id in self.calls:
            return False
        call = Call(lane, CallCore.from_params(params, params.get("direction") or "inbound"))
        call.recovered = True
        self.calls[call_id] = call
        if tracing.ENABLED:
            call._trace = tracing.call_started(call, self.app)
        self.counters["calls_recovered"] += 1
        if self.on_call is not None:
            self.run_call(call, what="recovered handler")
        return True

    def add_call(self, call: Call) -> None:
        """Host a call made elsewhere (the Ray driver's dialled calls)."""
        self.calls[call.call_id] = call

    def call_event(self, call_id: str, event: RelayEvent) -> Call | None:
        """An event already routed to ``call_id``: delivered; an ended call is forgotten.
        Returns the call, None if it is not hosted here."""
        call = self.calls.get(call_id)
        if call is None:
            return None
        call._deliver(event)
        if call._core.ended:
            del self.calls[call_id]
        return call

    def call_lost(self, call_id: str, reason: str) -> Call | None:
        """The runtime lost ``call_id`` (session or actor gone): it ends here with ``reason``."""
        call = self.calls.pop(call_id, None)
        if call is not None:
            call._lost(reason)
        return call

    def release_call(self, call_id: str) -> bool:
        """A call passed to another consumer: not ours any more (it frees its slot; a later
        offer of it is new). False if it was not hosted."""
        return self.calls.pop(call_id, None) is not None

    async def command_for(
        self, call_id: str, lane: CallControl, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """``method`` for hosted call ``call_id`` sent on another's behalf (the Ray driver's
        Call) through ``lane``: in the call's trace like its own commands."""
        call = self.calls.get(call_id)
        if call is not None and call._trace is not None:
            return await call._trace.command(lane, method, params)
        return await lane.execute(method, params)

    def lane_of(self, call_id: str) -> CallControl | None:
        """The lane of hosted call ``call_id``."""
        call = self.calls.get(call_id)
        return call._control if call is not None else None

    def run_call(self, call: Call, handler: CallHandler | None = None, what: str = "on_call handler") -> None:
        """Run ``handler`` (default ``on_call``) for ``call`` as a task (timeout, error
        policy, log context: :func:`~relay_actors.handlers.run_call_handler`)."""
        fn = handler or self.on_call
        assert fn is not None
        run = run_call_handler(fn, call, self.counters, self.handler_timeout, self.on_handler_error, self.app)
        if call._trace is not None:
            run = call._trace.run(run)
        self.tasks.spawn(run, f"{what} for {call.call_id}")

    # --- dials ------------------------------------------------------------------------

    async def dial(
        self,
        devices: Any,
        *,
        tag: str | None = None,
        dial_timeout: float | None = None,
        handler: CallHandler | None = None,
        **params: Any,
    ) -> Call:
        """Dial out (``params``: ``max_duration``, ``region``, ... sent when not None) and
        return the answered Call; ``handler(call)`` then runs here as a task.

        Raises:
            RelayError: ``dial_failed`` (nobody answered), ``dial_timeout``, or the server's error.
        """
        tag = tag or str(uuid.uuid4())
        if tag in self._dials:
            raise ArgumentError(f"a dial with tag {tag!r} is already pending")
        payload: dict[str, Any] = {"tag": tag, "devices": _device_lists(devices)}
        payload.update((k, v) for k, v in params.items() if v is not None)
        lane = self.transport.lane()
        future: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        self._dials[tag] = (future, lane)
        self.router.dials.start(tag)
        timeout = self.dial_timeout if dial_timeout is None else dial_timeout
        traced = tracing.dial_started(tag, self.app) if tracing.ENABLED else None
        try:
            call = await await_dial(
                tag,
                lambda: (
                    lane.execute("calling.dial", payload)
                    if traced is None
                    else traced.command(lane, "calling.dial", payload)
                ),
                future,
                timeout,
                self._abandon_dial,
            )
        except BaseException as exc:
            if traced is not None:
                why = getattr(exc, "failure", None) or str(getattr(exc, "code", "")) or type(exc).__name__
                traced.end("", why)
            raise
        finally:
            self._dials.pop(tag, None)
            self.router.dials.cancel(tag)
        if traced is not None:
            traced.identify(call, self.app)
            if call._core.ended:
                traced.end(call.end_reason or "")
            else:
                call._trace = traced
        if handler is not None:
            self.run_call(call, handler, "dial handler")
        return call

    def dial_leg(self, lane: CallControl, params: dict[str, Any]) -> Call:
        """A new leg of a pending dial (its first state event's params); events follow."""
        call = Call(lane, CallCore.from_params(params, "outbound"))
        return self.calls.setdefault(call.call_id, call)

    def dial_done(self, tag: str, answered: bool, info: dict[str, Any]) -> None:
        """The outcome of dial ``tag``: its winner (``info``: the dial event's ``call``) or a failure."""
        entry = self._dials.get(tag)
        if entry is None or entry[0].done():
            return
        future, lane = entry
        if not answered:
            future.set_exception(RelayError("dial_failed", f"Dial failed (tag={tag})"))
            return

        def make(core: CallCore) -> Call:
            call = Call(lane, core)
            self.calls[call.call_id] = call
            return call

        future.set_result(winner(self.calls.get(str(info.get("call_id") or "")), tag, info, make))

    def _abandon_dial(self, tag: str) -> None:
        """Nobody takes the dial: end the legs known now, and those that show up later
        (a serial dial rings its next group after we gave up)."""
        for call in list(self.calls.values()):
            if call.tag == tag and not call._core.ended:
                self.tasks.spawn(call.hangup("cancel"), f"hang-up of abandoned dial leg {call.call_id}")
        self.abandoned_dials.add(tag)
        entry = self._dials.get(tag)
        self.transport.dial_abandoned(entry[1] if entry is not None else self.transport.lane(), tag)

    # --- messages ---------------------------------------------------------------------

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
        listener: Callable[[Message, RelayEvent], None] | None = None,
    ) -> Message:
        """Send an SMS (``body``) or MMS (``media``); returns the Message, tracked until
        its terminal state (``listener(message, event)`` sees every state event)."""
        if not body and not media:
            raise ArgumentError("send_message needs body=... and/or media=[...]")
        if not to_number or not from_number:
            raise ArgumentError("send_message needs to_number=... and from_number=...")
        msg_context = context or self.transport.default_context()
        params: dict[str, Any] = {"context": msg_context} if msg_context else {}
        params["to_number"] = to_number
        params["from_number"] = from_number
        for key, value in (("body", body), ("media", media), ("tags", tags), ("region", region)):
            if value:
                params[key] = value
        lane = self.transport.lane()
        traced = tracing.message_sending(str(msg_context or ""), self.app) if tracing.ENABLED else None
        if traced is None:
            result = await lane.execute("messaging.send", params)
        else:
            result = await traced.send(lane, params)
        message_id = str(result.get("message_id") or "")
        message = Message(
            message_id=message_id,
            context=str(result.get("context") or msg_context or ""),
            from_number=from_number,
            to_number=to_number,
            body=body or "",
            media=media,
            tags=tags,
            on_completed=on_completed,
        )
        if listener is not None:
            message.on(lambda event: listener(message, event))
        if not message_id:
            log.warning("messaging.send returned no message_id; delivery cannot be tracked")
            if traced is not None:
                traced.end("")
            return message
        if traced is not None:
            self._message_traces[message_id] = traced
        if message._track(self.router.messages):
            self.messages[message_id] = message
            self._message_lanes[message_id] = lane
            self.transport.message_sent(self, message, result)
        elif traced is not None:  # already at its final state
            self._message_traces.pop(message_id, None)
            traced.end(str(getattr(message, "state", "") or ""))
        return message

    def message_state(self, event: RelayEvent) -> None:
        """A ``messaging.state`` event; one that beats its send's result is kept for it."""
        record, finished = self.router.messages.feed(event)
        if record is not None:
            self._apply_message_state(record, event, finished)

    def _apply_message_state(self, record: MessageRecord, event: RelayEvent, finished: bool) -> None:
        message = self.messages.get(record.message_id)
        if message is not None:
            message._apply(event, record.state, record.reason, finished)
            if self._message_traces:
                traced = self._message_traces.get(record.message_id)
                if traced is not None:
                    traced.state(record.state, finished)
            if finished:
                del self.messages[record.message_id]
                self._message_lanes.pop(record.message_id, None)
                self._message_traces.pop(record.message_id, None)

    def message_failed(self, message_id: str, error: RelayError) -> None:
        """Tracking of ``message_id`` ends without a terminal state: its waiters get ``error``."""
        message = self.messages.pop(message_id, None)
        self._message_lanes.pop(message_id, None)
        traced = self._message_traces.pop(message_id, None)
        if traced is not None:
            traced.end("", error.message)
        self.router.messages.forget(message_id)
        if message is not None:
            message._fail(error)

    def message_in(self, params: dict[str, Any]) -> None:
        """An inbound message (``messaging.receive`` params): ``on_message`` runs for it."""
        message = Message.from_event(params)
        if self.on_message is None:
            log.warning("inbound message %s but no on_message handler is registered", message.message_id)
            return
        run = run_message_handler(self.on_message, message, self.counters, self.app)
        traced = tracing.message_received(message, self.app) if tracing.ENABLED else None
        if traced is not None:
            run = traced.run(run)
        self.tasks.spawn(run, f"on_message handler for {message.message_id}")

    # --- the whole -----------------------------------------------------------------------

    def lose_session(self, reason: str, protocol: str | None = None) -> None:
        """End what the session named ``protocol`` (None: every session, on close) held:
        calls end with ``reason``, pending dials and messages sent on it fail."""
        for call in list(self.calls.values()):
            call._lost(reason)
        self.calls.clear()
        for tag, (future, _) in list(self._dials.items()):
            if not future.done():
                future.set_exception(RelayError(reason, f"dial {tag} lost: the session ended"))
        # A message sent on the lost protocol (the default context) reports to nobody
        # now; one sent on a context keeps reporting to the new session: keep tracking it.
        for message_id, message in list(self.messages.items()):
            if protocol is None or message.context == protocol:
                lost = RelayError(reason, f"message {message_id} lost: the session ended")
                self.message_failed(message_id, lost)

    def owned_by(self, lane: CallControl) -> dict[str, Any]:
        """What goes through ``lane``: calls as (call_id, node_id), pending dial tags,
        tracked message ids (what a restarted connection actor rebuilds its routes from)."""
        return {
            "calls": [(cid, call.node_id) for cid, call in self.calls.items() if call._control is lane],
            "dials": [tag for tag, (_, owner) in self._dials.items() if owner is lane],
            "messages": [mid for mid, owner in self._message_lanes.items() if owner is lane],
        }

    def stats(self) -> dict[str, Any]:
        """Counters and table sizes."""
        return {
            **self.counters,
            "active_calls": len(self.calls),
            "pending_dials": len(self._dials),
            "tracked_messages": len(self.messages),
        }


async def _end_quietly(lane: CallControl, params: dict[str, Any]) -> None:
    """``calling.end``; a call already gone is not an error."""
    try:
        await lane.execute("calling.end", params)
    except RelayError as exc:
        if not exc.call_gone:
            raise
