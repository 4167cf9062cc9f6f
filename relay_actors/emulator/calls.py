"""Calls: inbound offers, dialled legs, and the ``calling.*`` methods acting on them.

State machine (§6.3): ``created -> ringing -> answered -> ending -> ended``.
Inbound offers go round-robin to the sessions subscribed to the context;
``calling.pass`` moves the offer to the next subscriber. Dials ring each inner
device list in parallel and the outer lists in series, with per-number outcomes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from ..protocol import constants as c
from . import call_commands, caller
from .actions import ACTION_VERBS, Action, build_script
from .rpc import InvalidParams, require, require_device_lists, result

if TYPE_CHECKING:
    from .core import EmulatorCore
    from .session import Session

__all__ = ["Call", "CallService"]

#: End reasons per dial outcome.
_OUTCOME_END_REASON = {"busy": "busy", "no-answer": "noAnswer", "failure": "error"}
#: Seconds an ended call still answers ``410`` before it is forgotten (then ``404``).
_ENDED_RETENTION = 300.0


def _device_number(device: Any) -> str:
    if not isinstance(device, dict):
        return ""
    params = device.get("params")
    if not isinstance(params, dict):
        return ""
    return str(params.get("to_number") or params.get("to") or "")


class Call:
    """One call leg."""

    def __init__(
        self,
        core: EmulatorCore,
        *,
        direction: str,
        device: dict[str, Any],
        context: str = "",
        tag: str = "",
        session: Session | None = None,
    ) -> None:
        self.core = core
        self.call_id = str(uuid.uuid4())
        self.node_id = core.node_id
        self.segment_id = str(uuid.uuid4())
        self.direction = direction
        self.device = device
        self.context = context
        self.tag = tag
        self.session = session
        self.state = c.CALL_STATE_CREATED
        #: ``calling.answer`` requests taken (a second one is refused with ``strict_commands``).
        self.answer_commands = 0
        self.end_reason: str | None = None
        self.actions: dict[str, Action] = {}
        self.offered: set[str] = set()  # protocols that were offered this call
        self.peer: Call | None = None
        self.collect_result: dict[str, Any] | None = None
        #: What the far side presses and says, one item per collect (``caller.parse_inputs``).
        #: A dialled number starts with its ``caller_inputs`` from the configuration.
        self.inputs: deque[dict[str, Any]] = deque(
            core.config.caller_inputs.get(_device_number(device), ()) if direction == "outbound" else ()
        )
        #: Given a script (``inputs``): once it is spent the caller does nothing (``no_input``)
        #: instead of being the configured default caller.
        self.scripted = bool(self.inputs)
        #: A dialled number's detect events come from the configuration's ``detect_outcomes``.
        outcome = core.config.detect_outcomes.get(_device_number(device)) if direction == "outbound" else None
        self.detect_result: list[str] | None = list(outcome) if outcome is not None else None
        self.hangup_after: float | None = None
        self.transcribe_control_id: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        if session is not None:
            session.call_ids.add(self.call_id)

    @property
    def ended(self) -> bool:
        """True once ``ended`` was emitted."""
        return self.state == c.CALL_STATE_ENDED

    def emit(self, event_type: str, params: dict[str, Any]) -> None:
        """Send a call event (``call_id``/``node_id`` added) to the owning session."""
        if self.session is not None:
            self.session.emit(event_type, {"call_id": self.call_id, "node_id": self.node_id, **params})

    def set_state(self, state: str, **extra: Any) -> None:
        """Move to ``state`` and emit ``calling.call.state``."""
        self.state = state
        self.core.count_call_state(self)
        self.emit(
            c.EVENT_CALL_STATE,
            {
                "tag": self.tag,
                "call_state": state,
                "direction": self.direction,
                "device": self.device,
                **extra,
            },
        )

    def schedule(self, delay: float, callback: Any, *args: Any) -> None:
        """Replace the call's single timer (ring timeout, far-side hang-up)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, callback, *args)

    def end(self, reason: str, *, ending: bool = True) -> None:
        """Terminate running actions, then emit ``ending`` (optional) and ``ended``."""
        if self.ended:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for action in list(self.actions.values()):
            action.stop()
        if ending:
            self.set_state(c.CALL_STATE_ENDING)
        self.end_reason = reason
        self.set_state(c.CALL_STATE_ENDED, end_reason=reason)
        if self.session is not None:
            self.session.call_ids.discard(self.call_id)
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.peer = None
            peer.end("hangup")
        self.core.calls.forget_later(self)

    def describe(self) -> dict[str, Any]:
        """JSON view for the control API."""
        return {
            "call_id": self.call_id,
            "node_id": self.node_id,
            "state": self.state,
            "direction": self.direction,
            "context": self.context,
            "tag": self.tag,
            "device": self.device,
            "end_reason": self.end_reason,
            "session": self.session.protocol if self.session else None,
            "actions": sorted(self.actions),
            "inputs": list(self.inputs),
        }


class CallService:
    """Every call of the emulator and the ``calling.*`` methods."""

    def __init__(self, core: EmulatorCore) -> None:
        self.core = core
        self.calls: dict[str, Call] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- bookkeeping ------------------------------------------------------------
    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background (kept referenced until done)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def add(self, call: Call) -> Call:
        """Register a new call."""
        self.calls[call.call_id] = call
        return call

    def forget_later(self, call: Call) -> None:
        """Keep an ended call for a while (so it answers 410), then forget it (404)."""
        asyncio.get_running_loop().call_later(_ENDED_RETENTION, self.calls.pop, call.call_id, None)

    def end_session_calls(self, session: Session, reason: str = "hangup") -> None:
        """End every live call of ``session`` (restart or grace period over)."""
        for call_id in list(session.call_ids):
            call = self.calls.get(call_id)
            if call is not None:
                call.end(reason, ending=False)

    # --- inbound ---------------------------------------------------------------
    def inject(
        self,
        context: str,
        *,
        from_number: str = "+15551230001",
        to_number: str = "+15557650002",
        ring_timeout: float | None = None,
        hangup_after: float | None = None,
        collect: dict[str, Any] | None = None,
        detect: list[str] | None = None,
        inputs: list[dict[str, Any]] | None = None,
    ) -> Call:
        """Create an inbound call on ``context`` and offer it to the next subscriber.

        ``inputs``: what the caller presses and says, one item per collect
        (:func:`~relay_actors.emulator.caller.parse_inputs`; raises ValueError)."""
        scripted = caller.parse_inputs(inputs) if inputs is not None else []
        device = {"type": "phone", "params": {"from_number": from_number, "to_number": to_number}}
        call = self.add(Call(self.core, direction="inbound", device=device, context=context))
        self.core.count_call_state(call)
        call.collect_result = collect
        call.inputs.extend(scripted)
        call.scripted = call.scripted or inputs is not None
        call.detect_result = detect
        call.hangup_after = hangup_after
        timeout = self.core.config.ring_timeout if ring_timeout is None else ring_timeout
        if timeout > 0:
            call.schedule(timeout, self._ring_timeout, call)
        self.offer(call)
        return call

    def _ring_timeout(self, call: Call) -> None:
        # Nobody answered in time: the caller is dropped (documented as ``noAnswer``).
        if call.state in (c.CALL_STATE_CREATED, c.CALL_STATE_RINGING):
            call.end("noAnswer", ending=False)

    def offer(self, call: Call) -> None:
        """Offer ``call`` to the next subscriber of its context that has not had it, else end it."""
        session = self.core.next_subscriber(call.context, exclude=call.offered)
        if session is None:
            # No (other) subscriber: the call fails; the last holder, if any, learns it ended.
            call.end("abandoned" if call.offered else "not_found", ending=False)
            return
        call.offered.add(session.protocol)
        call.session = session
        session.call_ids.add(call.call_id)
        session.emit(
            c.EVENT_CALL_RECEIVE,
            {
                "call_id": call.call_id,
                "node_id": call.node_id,
                "project_id": session.project,
                "context": call.context,
                "tag": "",
                "call_state": self.core.config.offer_call_state,
                "direction": "inbound",
                "segment_id": call.segment_id,
                "device": call.device,
            },
        )

    def add_inputs(self, call_id: str, inputs: Any) -> list[dict[str, Any]] | None:
        """Queue more caller input on a live call; its pending inputs, or None if unknown/ended.

        Raises:
            ValueError: a malformed input (see :mod:`relay_actors.emulator.caller`).
        """
        scripted = caller.parse_inputs(inputs)
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return None
        call.inputs.extend(scripted)
        call.scripted = True
        return list(call.inputs)

    def hangup(self, call_id: str, reason: str = "hangup") -> bool:
        """The far side hangs up; False when the call is unknown or already ended."""
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return False
        call.end(reason, ending=False)
        return True

    # --- dialling --------------------------------------------------------------
    def _outcome(self, device: Any) -> str:
        cfg = self.core.config
        return cfg.dial_outcomes.get(_device_number(device), cfg.default_dial_outcome)

    async def _ring(self, session: Session, devices: list[Any], tag: str, on_first: Any) -> Call | None:
        """Ring the outer lists in series, each inner list in parallel; the answered leg or None."""
        cfg = self.core.config
        for group_index, group in enumerate(devices):
            group = group if isinstance(group, list) else [group]
            legs = [
                self.add(Call(self.core, direction="outbound", device=d, tag=tag, session=session))
                for d in group
            ]
            for leg in legs:
                leg.set_state(c.CALL_STATE_CREATED)
            if group_index == 0 and on_first is not None:
                on_first()
            await asyncio.sleep(cfg.duration("ring"))
            outcomes = [self._outcome(leg.device) for leg in legs]
            for leg, outcome in zip(legs, outcomes, strict=True):
                if outcome != "failure" and not leg.ended:
                    leg.set_state(c.CALL_STATE_RINGING)
            await asyncio.sleep(cfg.duration("answer"))
            answered = [leg for leg, o in zip(legs, outcomes, strict=True) if o == "answer" and not leg.ended]
            winner = answered[0] if answered else None
            if winner is not None:
                winner.set_state(c.CALL_STATE_ANSWERED)
            for leg, outcome in zip(legs, outcomes, strict=True):
                if leg is not winner:
                    leg.end("cancel" if winner else _OUTCOME_END_REASON.get(outcome, "cancel"), ending=False)
            if winner is not None:
                return winner
        return None

    async def _dial(self, session: Session, tag: str, devices: list[Any]) -> None:
        node = self.core.node_id

        def dialing() -> None:
            session.emit(c.EVENT_CALL_DIAL, {"tag": tag, "node_id": node, "dial_state": c.DIAL_STATE_DIALING})

        winner = await self._ring(session, devices, tag, dialing)
        if winner is None:
            session.emit(
                c.EVENT_CALL_DIAL,
                {"tag": tag, "node_id": node, "dial_state": c.DIAL_STATE_FAILED, "call": {}},
            )
            return
        session.emit(
            c.EVENT_CALL_DIAL,
            {
                "tag": tag,
                "node_id": node,
                "dial_state": c.DIAL_STATE_ANSWERED,
                "call": {
                    "call_id": winner.call_id,
                    "node_id": winner.node_id,
                    "tag": tag,
                    "device": winner.device,
                    "dial_winner": True,
                },
            },
        )

    async def _begin(self, leg: Call) -> None:
        leg.set_state(c.CALL_STATE_CREATED)
        await asyncio.sleep(self.core.config.duration("ring"))
        outcome = self._outcome(leg.device)
        if outcome != "failure":
            leg.set_state(c.CALL_STATE_RINGING)
        await asyncio.sleep(self.core.config.duration("answer"))
        if outcome == "answer":
            leg.set_state(c.CALL_STATE_ANSWERED)
        else:
            leg.end(_OUTCOME_END_REASON[outcome], ending=False)

    async def connect(self, call: Call, devices: list[Any], tag: str) -> None:
        """Ring ``devices`` for ``call`` (``calling.connect``) and bridge the winner to it."""
        call.emit(c.EVENT_CALL_CONNECT, {"connect_state": c.CONNECT_STATE_CONNECTING})
        assert call.session is not None
        await asyncio.sleep(self.core.config.duration("connect"))
        peer = await self._ring(call.session, devices, tag, None)
        if call.ended:
            if peer is not None:
                peer.end("hangup", ending=False)
            return
        if peer is None:
            call.emit(c.EVENT_CALL_CONNECT, {"connect_state": c.CONNECT_STATE_FAILED})
            return
        call.peer, peer.peer = peer, call
        call.emit(
            c.EVENT_CALL_CONNECT,
            {
                "connect_state": c.CONNECT_STATE_CONNECTED,
                "peer": {"call_id": peer.call_id, "node_id": peer.node_id, "tag": tag, "device": peer.device},
            },
        )

    # --- calling.* dispatch ----------------------------------------------------
    def handle(self, session: Session, verb: str, params: dict[str, Any]) -> dict[str, Any]:
        """Answer ``calling.<verb>``; raises :class:`InvalidParams` for missing params."""
        if verb == "dial":
            require(params, "tag")
            self.spawn(self._dial(session, str(params["tag"]), require_device_lists(params)))
            return result("200", "Dialing")
        if verb == "begin":
            require(params, "device")
            leg = self.add(
                Call(
                    self.core,
                    direction="outbound",
                    device=params["device"],
                    tag=str(params.get("tag", "")),
                    session=session,
                )
            )
            self.spawn(self._begin(leg))
            return result("200", "Call started", call_id=leg.call_id, node_id=leg.node_id)

        require(params, "call_id")
        base, _, sub = verb.partition(".")
        action_spec = ACTION_VERBS.get(base)
        if base != "queue" and sub and action_spec is not None:
            require(params, "control_id")
            if sub not in action_spec[1] and not (sub == "start_input_timers" and base == "collect"):
                return result("200", "OK", call_id=params["call_id"], control_id=params["control_id"])
        elif action_spec is not None:
            require(params, "control_id", *action_spec[0])
        call = self.calls.get(params["call_id"])
        if call is None:
            return result("404", "Call not found")
        if call.ended:
            return result("410", "Call has ended")
        if call.session is not session:
            # Another session owns it (the caller passed it, or a takeover): adopt it.
            if call.session is not None:
                call.session.call_ids.discard(call.call_id)
            call.session = session
            session.call_ids.add(call.call_id)
        if action_spec is not None:
            if sub:
                return self._action_command(call, base, sub, params)
            return self._start_action(call, base, params)
        return call_commands.run(self, call, verb, params)

    def _start_action(self, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
        control_id = str(params["control_id"])
        if verb == "collect" and "digits" not in params and "speech" not in params:
            raise InvalidParams("collect needs 'digits' or 'speech'")
        if verb == "transcribe":
            running = call.transcribe_control_id
            if running is not None and running in call.actions:
                return result(
                    "409", "Transcription already running", call_id=call.call_id, control_id=control_id
                )
            call.transcribe_control_id = control_id
        script = build_script(verb, call, params, self.core.config)
        action = Action(call, verb, control_id, script, self.core.config)
        previous = call.actions.get(control_id)
        if previous is not None:
            previous.stop()
        call.actions[control_id] = action
        action.start()
        return result("200", script.message, call_id=call.call_id, control_id=control_id, **script.result)

    def _action_command(self, call: Call, verb: str, sub: str, params: dict[str, Any]) -> dict[str, Any]:
        control_id = str(params["control_id"])
        echo = {"call_id": call.call_id, "control_id": control_id}
        action = call.actions.get(control_id)
        if sub == "volume":
            require(params, "volume")
        if action is None:
            return result("404", "Control ID not found", **echo)
        if sub == "stop":
            action.stop()
            return result("200", "Stopped", **echo)
        if sub == "pause":
            return (
                result("200", "Paused", **echo) if action.pause() else result("400", "Cannot pause", **echo)
            )
        if sub == "resume":
            return (
                result("200", "Resumed", **echo)
                if action.resume()
                else result("400", "Cannot resume", **echo)
            )
        if sub == "volume":
            return result("200", "Volume set", **echo)
        return result("200", "Input timers started", **echo)
