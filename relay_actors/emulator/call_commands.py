"""The ``calling.*`` commands that act on one call and are not actions (no ``control_id`` script).

One handler per method, looked up in :data:`_COMMANDS`; the params each needs
(besides ``call_id``) are checked in one place, :func:`run`, before it runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..protocol import constants as c
from .rpc import require, require_device_lists, result

if TYPE_CHECKING:
    from .calls import Call, CallService

__all__ = ["run"]

#: Handles one command: (service, call, method, params) -> the RELAY result.
CommandHandler = Callable[["CallService", "Call", str, dict[str, Any]], dict[str, Any]]

#: Non-action ``calling.*`` methods: required params and result message.
_SIMPLE_VERBS: dict[str, tuple[tuple[str, ...], str]] = {
    "transfer": (("dest",), "Transferring"),
    "bind_digit": (("digits", "bind_method"), "Digit binding created"),
    "clear_digit_bindings": ((), "Digit bindings cleared"),
    "live_transcribe": (("action",), "Live transcription started"),
    "live_translate": (("action",), "Live translation started"),
    "amazon_bedrock": ((), "AI started"),
    "ai_message": ((), "Message sent"),
    "ai_hold": ((), "AI on hold"),
    "ai_unhold": ((), "AI resumed"),
    "user_event": ((), "Event sent"),
}

#: Params each command needs besides ``call_id`` (``connect`` also checks its ``devices``).
_COMMAND_PARAMS: dict[str, tuple[str, ...]] = {
    "send_digits": ("control_id", "digits"),
    "refer": ("device",),
    "join_conference": ("name",),
    "leave_conference": ("conference_id",),
    "join_room": ("name",),
    "queue.enter": ("control_id", "queue_name"),
    "queue.leave": ("control_id", "queue_name"),
    **{verb: needs for verb, (needs, _) in _SIMPLE_VERBS.items()},
}


def run(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    """Answer ``calling.<verb>`` on ``call`` (live, owned by the caller's session).

    Raises :class:`~relay_actors.emulator.rpc.InvalidParams` for a missing param."""
    require(params, *_COMMAND_PARAMS.get(verb, ()))
    handler = _COMMANDS.get(verb)
    if handler is None:
        # Unknown verbs succeed, as the service does for verbs it does not act on.
        return result("200", "OK", call_id=call.call_id)
    return handler(service, call, verb, params)


def _answer(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    if call.answer_commands and service.core.config.strict_commands:
        service.core.count("repeated_commands_refused")
        return result("409", "Call already answered")
    call.answer_commands += 1
    if call.state != c.CALL_STATE_ANSWERED:
        call.set_state(c.CALL_STATE_ANSWERED)
        if call.hangup_after is not None:
            call.schedule(call.hangup_after, service.hangup, call.call_id, "hangup")
        elif call._timer is not None:
            call._timer.cancel()
    return result("200", "Answered")


def _end(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    reason = params.get("reason") or "hangup"
    call.end(str(reason))
    return result("200", "Disconnecting call")


def _pass(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    if call.session is not None:
        call.session.call_ids.discard(call.call_id)
    service.spawn(_offer_next(service, call))
    return result("200", "Passing call")


async def _offer_next(service: CallService, call: Call) -> None:
    # The result goes out first; the offer then moves on.
    await asyncio.sleep(0)
    if not call.ended:
        service.offer(call)


def _connect(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    devices = require_device_lists(params)
    service.spawn(service.connect(call, devices, str(params.get("tag") or uuid.uuid4())))
    return result("200", "Connecting", call_id=call.call_id)


def _disconnect(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    peer, call.peer = call.peer, None
    call.emit(c.EVENT_CALL_CONNECT, {"connect_state": c.CONNECT_STATE_DISCONNECTED})
    if peer is not None:
        peer.peer = None
        peer.end("hangup", ending=False)
    return result("200", "Disconnecting", call_id=call.call_id)


def _send_digits(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    control_id = params["control_id"]
    asyncio.get_running_loop().call_later(
        service.core.config.duration("send_digits"),
        _emit_unless_ended,
        call,
        c.EVENT_CALL_SEND_DIGITS,
        {"control_id": control_id, "state": "finished"},
    )
    return result("200", "Sending Digits", control_id=control_id, call_id=call.call_id)


def _emit_unless_ended(call: Call, event_type: str, params: dict[str, Any]) -> None:
    if not call.ended:
        call.emit(event_type, params)


def _refer(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    device = params["device"] if isinstance(params["device"], dict) else {}
    to = (device.get("params") or {}).get("to", "") if isinstance(device.get("params"), dict) else ""
    call.emit(
        c.EVENT_CALL_REFER,
        {
            "state": "success",
            "sip_refer_to": to,
            "sip_refer_response_code": "202",
            "sip_notify_response_code": "200",
        },
    )
    return result("200", "Starting SIP REFER", call_id=call.call_id)


def _hold(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    """``hold`` and ``unhold``."""
    call.emit(c.EVENT_CALL_HOLD, {"state": verb})
    return result("200", "Call on hold" if verb == "hold" else "Call off hold", call_id=call.call_id)


def _denoise(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    """``denoise`` and ``denoise.stop``."""
    call.emit(c.EVENT_CALL_DENOISE, {"denoised": verb == "denoise"})
    return result("200", "Denoiser on" if verb == "denoise" else "Denoiser off", call_id=call.call_id)


def _echo(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    call.emit(c.EVENT_CALL_ECHO, {"state": "echoing"})
    return result("200", "Echo started", call_id=call.call_id)


def _join_conference(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    name = str(params["name"])
    conference_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.conference.emulator"))
    conf = {"conference_id": conference_id, "name": name}
    if call.session is not None:
        call.session.emit(c.EVENT_CONFERENCE, {**conf, "status": "conference-start"})
    call.emit(c.EVENT_CONFERENCE, {**conf, "status": "participant-join"})
    return result("200", "Joining conference", conference_id=conference_id, call_id=call.call_id)


def _leave_conference(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    conference_id = params["conference_id"]
    call.emit(c.EVENT_CONFERENCE, {"conference_id": conference_id, "status": "participant-leave"})
    return result("200", "Leaving conference", conference_id=conference_id, call_id=call.call_id)


def _room(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    """``join_room`` and ``leave_room``."""
    joining = verb == "join_room"
    for state in ("joining", "join") if joining else ("leaving", "leave"):
        call.emit("calling.call.room", {"state": state, "name": params.get("name", "")})
    return result("200", "Joining room" if joining else "Leaving room", call_id=call.call_id)


def _queue(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    """``queue.enter`` and ``queue.leave``."""
    queue_id = str(params.get("queue_id") or uuid.uuid5(uuid.NAMESPACE_DNS, f"{params['queue_name']}.q"))
    entering = verb == "queue.enter"
    call.emit(
        c.EVENT_CALL_QUEUE,
        {
            "control_id": params["control_id"],
            "status": "enqueue" if entering else "leave",
            "id": queue_id,
            "name": params["queue_name"],
            "position": 1 if entering else 0,
            "size": 1 if entering else 0,
        },
    )
    return result(
        "200",
        "Entering Queue" if entering else "Leaving Queue",
        control_id=params["control_id"],
        call_id=call.call_id,
    )


def _simple(service: CallService, call: Call, verb: str, params: dict[str, Any]) -> dict[str, Any]:
    """A method of :data:`_SIMPLE_VERBS`: its fixed result."""
    return result("200", _SIMPLE_VERBS[verb][1], call_id=call.call_id)


#: The handler of each command (``calling.<key>``).
_COMMANDS: dict[str, CommandHandler] = {
    "answer": _answer,
    "end": _end,
    "pass": _pass,
    "connect": _connect,
    "disconnect": _disconnect,
    "send_digits": _send_digits,
    "refer": _refer,
    "hold": _hold,
    "unhold": _hold,
    "denoise": _denoise,
    "denoise.stop": _denoise,
    "echo": _echo,
    "join_conference": _join_conference,
    "leave_conference": _leave_conference,
    "join_room": _room,
    "leave_room": _room,
    "queue.enter": _queue,
    "queue.leave": _queue,
    **dict.fromkeys(_SIMPLE_VERBS, _simple),
}
