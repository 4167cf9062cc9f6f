"""The core of a :class:`~relay_actors.call.Call`: state, waiters, delivery and command plumbing.

A Call speaks to a :class:`CallControl` — the in-process connection, or a
proxy to the connection actor on Ray — so the same handler code runs in both.
Its protocol state (state machine, actions by ``control_id``) is a sans-IO
:class:`~relay_actors.protocol.calls.CallCore`; the host feeds it events with
:meth:`CallBase._deliver`. The verbs, grouped by family, are in
:mod:`relay_actors.verbs`.

The conventions every verb follows are in :mod:`relay_actors.call`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from . import tracing
from .action import (
    Action,
    OnCompleted,
)
from .errors import ArgumentError, CallEndedError, RelayError
from .protocol import constants as c
from .protocol.actions import empty_event
from .protocol.calls import STATE_RANK, CallCore
from .protocol.events import CallStateEvent, RelayEvent
from .tasks import CALLBACK_CONTEXT, BackgroundTasks, call_handler

__all__ = ["CallBase", "CallControl"]

log = logging.getLogger("relay_actors.call")

#: Verbs that may be sent again when the connection was cut while they were out (the
#: server ends up in the same state whether it ran them once or twice).
_IDEMPOTENT = frozenset({"answer", "end"})
_IDEMPOTENT_RETRIES = 2
#: Failures of a request whose connection went before its result came back.
_CUT_OFF = frozenset({"connection_lost", "connection_closed"})

A = TypeVar("A", bound=Action)
EventHandler = Callable[[RelayEvent], Any]
#: A ``wait_for``: the event type, its predicate (None: any), the future it resolves.
_Waiter = tuple[str, Callable[[RelayEvent], bool] | None, "asyncio.Future[RelayEvent]"]


def _state_reached(rank: int) -> Callable[[RelayEvent], bool]:
    def reached(event: RelayEvent) -> bool:
        return STATE_RANK.get(event.params.get("call_state") or "", -1) >= rank

    return reached


#: The predicate of a wait for each state, shared by every call (no closure per wait).
_REACHED = {state: _state_reached(rank) for state, rank in STATE_RANK.items()}


class CallControl(Protocol):
    """What a Call needs from its host: a way to execute requests, and a task set. A
    control may also have ``release_call(call_id)``: a passed call is then forgotten."""

    tasks: BackgroundTasks

    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]: ...


def _opts(**kw: Any) -> dict[str, Any]:
    """Keyword arguments that were given (not None)."""
    return {k: v for k, v in kw.items() if v is not None}


def _media_list(media: Any) -> list[dict[str, Any]]:
    if isinstance(media, dict):
        media = [media]
    if (
        not isinstance(media, list)
        or not media
        or not all(isinstance(m, dict) and m.get("type") for m in media)
    ):
        raise ArgumentError(
            'media must be a non-empty list of {"type": ..., "params": {...}} objects '
            '(e.g. [{"type": "tts", "params": {"text": "Hello"}}])'
        )
    return media


def _device_lists(devices: Any) -> list[list[dict[str, Any]]]:
    """Devices as the wire wants them: a list (tried in series) of lists (rung in parallel)."""
    if isinstance(devices, dict):
        devices = [[devices]]
    if isinstance(devices, list) and devices and all(isinstance(d, dict) for d in devices):
        devices = [devices]  # one parallel group
    if (
        not isinstance(devices, list)
        or not devices
        or not all(
            isinstance(g, list) and g and all(isinstance(d, dict) and d.get("type") for d in g)
            for g in devices
        )
    ):
        raise ArgumentError(
            'devices must be a list of lists of {"type": ..., "params": {...}} device objects'
        )
    return devices


class CallBase:
    """The core of a call: identity and state, listeners and waits, event delivery, the
    plumbing of commands and the lifecycle verbs. The verb families in :mod:`relay_actors.verbs`
    build on it; :class:`~relay_actors.call.Call` is all of them together."""

    # Per-call state is compact (a server holds thousands of calls): slots, and the
    # tables most calls never use (actions, listeners, waiters) made on first use.
    # ``__dict__`` stays so an app may set its own attributes on a call, as on the
    # SDK's; it costs a pointer until one is set.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_actions",
        "_control",
        "_core",
        "_ended_event",
        "_listeners",
        "_trace",
        "_waiters",
        "recovered",
    )

    def __init__(self, control: CallControl, core: CallCore) -> None:
        self._control = control
        self._core = core
        self._actions: dict[str, Action] | None = None
        self._listeners: dict[str, list[EventHandler]] | None = None
        self._waiters: list[_Waiter] | tuple[()] = ()
        #: The ``ended`` state event, once the call has ended (``wait_for_ended()`` returns it).
        self._ended_event: RelayEvent | None = None
        self.recovered = False
        """True when this call was re-homed to a new process after a crash (Ray runtime)."""
        #: This call's trace (:mod:`relay_actors.tracing`); None when tracing is off.
        self._trace: tracing.CallTrace | None = None

    # --- identity and state -------------------------------------------------------
    # The string under each property is its docstring for the API reference (read from the source).

    call_id = property(lambda self: self._core.call_id, doc="The call leg's UUID.")
    """The call leg's UUID."""
    node_id = property(lambda self: self._core.node_id, doc="The server node that owns the call.")
    """The server node that owns the call."""
    project_id = property(lambda self: self._core.project_id, doc="The SignalWire project of the call.")
    """The SignalWire project of the call."""
    tag = property(lambda self: self._core.tag, doc="The client's tag of the call (its dial's ``tag``).")
    """The client's tag of the call (its dial's ``tag``)."""
    direction = property(lambda self: self._core.direction, doc="``inbound`` or ``outbound``.")
    """``inbound`` or ``outbound``."""
    device = property(lambda self: self._core.device, doc="``{type, params}`` of the far end.")
    """``{type, params}`` of the far end."""
    segment_id = property(lambda self: self._core.segment_id, doc="The call segment's id, when sent.")
    """The call segment's id, when sent."""
    state = property(
        lambda self: self._core.state, doc="``created``, ``ringing``, ``answered``, ``ending``, ``ended``."
    )
    """``created``, ``ringing``, ``answered``, ``ending``, ``ended``."""
    end_reason = property(
        lambda self: self._core.end_reason, doc="Why the call ended (``hangup``, ``busy``, ...)."
    )
    """Why the call ended (``hangup``, ``busy``, ...)."""

    @property
    def context(self) -> str:
        """The context the call arrived on (the SDK reports its protocol string instead)."""
        return self._core.context

    @property
    def from_number(self) -> str:
        """The caller's number (the device's ``from_number``)."""
        params = self.device.get("params") or {}
        return str(params.get("from_number") or params.get("from") or "")

    @property
    def to_number(self) -> str:
        """The called number (the device's ``to_number``)."""
        params = self.device.get("params") or {}
        return str(params.get("to_number") or params.get("to") or "")

    def __repr__(self) -> str:
        return f"<Call {self.call_id} {self.direction} {self.state}>"

    # --- event plumbing -----------------------------------------------------------

    def _deliver(self, event: RelayEvent) -> None:
        """Feed one event for this call (called by the host, in arrival order)."""
        if self._trace is not None:
            self._trace.deliver(self, event)  # in a span, through _apply_event
        else:
            self._apply_event(event)

    def _apply_event(self, event: RelayEvent) -> None:
        update = self._core.apply(event)
        if not update.accepted:
            return
        if update.finished and self._actions:
            for record in update.finished:
                action = self._actions.pop(record.control_id, None)
                if action is not None and record.result is not None:
                    action._resolve(record.result)
        if update.state_changed and self._core.ended:
            self._ended_event = event
        if self._waiters:
            for waiter in list(self._waiters):
                event_type, predicate, future = waiter
                if future.done():
                    self._drop_waiter(waiter)
                elif event.event_type == event_type:
                    try:
                        matched = predicate is None or predicate(event)
                    except Exception as exc:
                        # A broken predicate fails its own waiter, not the delivery to the others.
                        self._drop_waiter(waiter)
                        future.set_exception(exc)
                        continue
                    if matched:
                        self._drop_waiter(waiter)
                        future.set_result(event)
        if self._listeners:
            for handler in self._listeners.get(event.event_type, ()):
                self._fire(handler, event, f"listener for {event.event_type}")
        if self._core.ended:
            self._gone(event)

    def _gone(self, event: RelayEvent) -> None:
        """The call ended (or was lost): no action or state waiter may wait forever."""
        if self._trace is not None:
            self._trace.end(self._core.end_reason)
            self._trace = None
        if self._actions:
            actions = list(self._actions.values())
            self._actions = None
            for action in actions:
                action._resolve(event)
        waiters, self._waiters = self._waiters, ()
        for _, _, future in waiters:
            if not future.done():
                future.set_exception(CallEndedError(f"call {self.call_id} ended"))

    def _lost(self, reason: str = "lost") -> None:
        """The host lost this call (e.g. the session was restarted): end it locally."""
        if self._core.ended:
            return
        event = RelayEvent(
            c.EVENT_CALL_STATE,
            {
                "call_id": self.call_id,
                "node_id": self.node_id,
                "call_state": c.CALL_STATE_ENDED,
                "end_reason": reason,
            },
            self.call_id,
        )
        self._deliver(event)

    def _fire(self, handler: EventHandler, event: RelayEvent, what: str) -> None:
        call_handler(self._control.tasks, handler, event, what=f"{what} on call {self.call_id}")

    def on(self, event_type: str, handler: EventHandler) -> None:
        """Call ``handler`` (plain or async) with every ``event_type`` event of this call."""
        if self._listeners is None:
            self._listeners = {}
        self._listeners.setdefault(event_type, []).append(handler)

    def off(self, event_type: str, handler: EventHandler | None = None) -> None:
        """Remove one listener, or all listeners of ``event_type``."""
        if not self._listeners:
            return
        if handler is None:
            self._listeners.pop(event_type, None)
        elif handler in self._listeners.get(event_type, ()):
            self._listeners[event_type].remove(handler)

    async def wait_for(
        self,
        event_type: str,
        predicate: Callable[[RelayEvent], bool] | None = None,
        timeout: float | None = None,
    ) -> RelayEvent:
        """The next ``event_type`` event (matching ``predicate``). Raises
        ``asyncio.TimeoutError`` when ``timeout`` passes; :class:`~relay_actors.errors.CallEndedError`
        (a ``RelayError`` and an ``asyncio.TimeoutError``) at once if the call has ended or
        ends first, since no event will come."""
        return await self._wait(event_type, predicate, timeout)

    def _wait(
        self, event_type: str, predicate: Callable[[RelayEvent], bool] | None, timeout: float | None
    ) -> Awaitable[RelayEvent]:
        """What :meth:`wait_for` awaits: a waiter's future (under ``asyncio.wait_for`` with a
        timeout). A future, not a coroutine: a call held in a wait costs one future."""
        if self._core.ended:
            # Nothing more will come, state events included (``wait_for_*`` answer at once).
            raise CallEndedError(f"call {self.call_id} has ended")
        future: asyncio.Future[RelayEvent] = asyncio.get_running_loop().create_future()
        # A waiter whose wait ends otherwise (timeout, cancelled) leaves the table at once.
        future.add_done_callback(self._waiter_done, context=CALLBACK_CONTEXT)
        if not isinstance(self._waiters, list):
            self._waiters = []
        self._waiters.append((event_type, predicate, future))
        return future if timeout is None else asyncio.wait_for(future, timeout)

    def _waiter_done(self, future: asyncio.Future[RelayEvent]) -> None:
        if not future.cancelled():
            future.exception()  # retrieved: its awaiter has it, or nobody waits any more
        for waiter in self._waiters:
            if waiter[2] is future:
                self._drop_waiter(waiter)
                return

    def _drop_waiter(self, waiter: _Waiter) -> None:
        if isinstance(self._waiters, list) and waiter in self._waiters:
            self._waiters.remove(waiter)

    def _wait_state(self, state: str, timeout: float | None) -> Awaitable[RelayEvent]:
        if self._core.at_least(state):
            reached: asyncio.Future[RelayEvent] = asyncio.get_running_loop().create_future()
            reached.set_result(self._state_event(state))
            return reached
        return self._wait(c.EVENT_CALL_STATE, _REACHED[state], timeout)

    def _state_event(self, state: str) -> RelayEvent:
        """The event of ``state``, which the call has reached: the ``ended`` event itself;
        for an earlier state one made up of the call's identity (the events in between are
        not kept: a held call keeps no event)."""
        if state == c.CALL_STATE_ENDED and self._ended_event is not None:
            return self._ended_event
        params = {"call_id": self.call_id, "node_id": self.node_id, "call_state": state}
        return CallStateEvent(c.EVENT_CALL_STATE, params, self.call_id)

    async def wait_for_ringing(self, timeout: float | None = None) -> RelayEvent:
        """Wait until the call rings (returns at once if it already did or has ended)."""
        return await self._wait_state(c.CALL_STATE_RINGING, timeout)

    async def wait_for_answered(self, timeout: float | None = None) -> RelayEvent:
        """Wait until the call is answered (returns at once if it already was or has ended)."""
        return await self._wait_state(c.CALL_STATE_ANSWERED, timeout)

    async def wait_for_ending(self, timeout: float | None = None) -> RelayEvent:
        """Wait until the call is ending (returns at once if it already is or has ended)."""
        return await self._wait_state(c.CALL_STATE_ENDING, timeout)

    async def wait_for_ended(self, timeout: float | None = None) -> RelayEvent:
        """The ``ended`` state event (at once if the call already ended)."""
        return await self._wait_state(c.CALL_STATE_ENDED, timeout)

    # --- plumbing for commands ----------------------------------------------------

    async def _execute(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send ``calling.<method>`` for this call. 404/410 → ``{}`` (logged)."""
        payload: dict[str, Any] = {"node_id": self.node_id, "call_id": self.call_id}
        if params:
            payload.update(params)
        attempts = _IDEMPOTENT_RETRIES if method in _IDEMPOTENT else 0
        while True:
            try:
                if self._trace is not None:
                    return await self._trace.command(self._control, f"calling.{method}", payload)
                return await self._control.execute(f"calling.{method}", payload)
            except RelayError as exc:
                if exc.call_gone:
                    log.info("call %s is gone (%s) during %s", self.call_id, exc.code, method)
                    return {}
                if attempts and exc.failure in _CUT_OFF:
                    # The connection went while the request was out: it may or may not
                    # have run. Running it again is harmless for these verbs, and failing
                    # would make a handler give up a healthy call over a network blip.
                    attempts -= 1
                    log.info("call %s: %s cut off (%s); sending it again", self.call_id, method, exc.failure)
                    continue
                raise

    async def _start(
        self,
        kind: str,
        params: dict[str, Any],
        control_id: str | None,
        on_completed: OnCompleted | None,
        factory: Callable[[str], A],
        method: str | None = None,
    ) -> A:
        """Register an action under its control_id, then send its start request."""
        control_id = control_id or str(uuid.uuid4())
        action = factory(control_id)
        if on_completed is not None:
            action._on_completed = on_completed
        if self._core.ended:
            action._resolve(empty_event())
            return action
        self._core.actions.start(kind, control_id)
        if self._actions is None:
            self._actions = {}
        self._actions[control_id] = action
        try:
            result = await self._execute(method or kind, {"control_id": control_id, **params})
        except BaseException as exc:
            self._core.actions.discard(control_id)
            if self._actions:
                self._actions.pop(control_id, None)
            action._fail(exc)
            raise
        action.start_result = result
        if not result:
            # The call is gone: nothing will ever finish this action but us.
            self._core.actions.finish(control_id)
            if self._actions and self._actions.pop(control_id, None) is not None:
                action._resolve(empty_event())
        return action

    # --- lifecycle ----------------------------------------------------------------

    async def answer(self, **kw: Any) -> dict[str, Any]:
        """Answer an inbound call (``codecs``, ``max_duration`` may be given)."""
        return await self._execute("answer", kw)

    async def hangup(self, reason: str = "hangup") -> dict[str, Any]:
        """End the call (``calling.end``); ``reason``: hangup, cancel, busy, noAnswer, decline, error."""
        return await self._execute("end", {"reason": reason})

    async def pass_(self) -> dict[str, Any]:
        """Decline to handle an inbound call: the service offers it to another consumer.

        Once passed the call is no longer ours: it ends here (``end_reason``
        ``"passed"``; waiters and actions resolve) and frees its slot."""
        result = await self._execute("pass")
        if result:
            self._lost("passed")
            release = getattr(self._control, "release_call", None)
            if release is not None:
                release(self.call_id)
        return result
