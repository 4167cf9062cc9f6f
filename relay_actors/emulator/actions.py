"""Long-running call operations (``control_id`` actions) and their event scripts.

An :class:`Action` plays a :class:`Script`: a list of steps, each waiting a
configured duration then emitting one event. The last step is the terminal
event; ``stop`` cuts the script short with the script's stop events, ``pause``
freezes the clock and emits ``paused``. Exactly one terminal event is sent per
``control_id`` (the call's end terminates every running action first).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..protocol import constants as c
from . import caller

if TYPE_CHECKING:
    from .calls import Call
    from .config import EmulatorConfig

__all__ = ["ACTION_VERBS", "Action", "Script", "Step", "build_script"]


@dataclass(frozen=True)
class Step:
    """Wait ``delay`` (a duration name or seconds), then emit ``event_type`` with ``params``."""

    delay: str | float
    event_type: str
    params: dict[str, Any]


@dataclass
class Script:
    """The event script of one action."""

    steps: list[Step]
    #: Events sent instead of the remaining steps on stop or when the call ends.
    stop: list[tuple[str, dict[str, Any]]]
    #: (event_type, paused params, resumed params) when the action can pause.
    pause: tuple[str, dict[str, Any], dict[str, Any]] | None = None
    #: Extra fields of the start result (beyond code/message/call_id/control_id).
    result: dict[str, Any] = field(default_factory=dict)
    message: str = "Started"
    #: False: the last step is not terminal; the action runs until stopped.
    finishes: bool = True


def _obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _collect_result(call: Call, collect: dict[str, Any], config: EmulatorConfig) -> dict[str, Any]:
    """The next scripted caller input, else the call's fixed result, else nothing if the
    call had a script (it ran out: the caller does nothing), else the configured caller."""
    if call.inputs:
        return caller.collect_result(collect, call.inputs.popleft())
    if call.collect_result is not None:
        return call.collect_result
    if call.scripted:
        return caller.collect_result(collect, {"silence": True})
    pressed = caller.default_input(
        collect, config.collect_digits, config.collect_terminator, config.collect_speech_text
    )
    if "digits" in pressed and "digits" not in collect:
        collect = {**collect, "digits": {}}  # neither digits nor speech asked: keys, as before
    return caller.collect_result(collect, pressed)


#: ``state`` of a standalone collect's terminal event per result type.
_COLLECT_STATES = {"no_input": "no_input", "no_match": "no_match", "error": "error"}


def _detect_events(call: Call, detect: dict[str, Any], config: EmulatorConfig) -> list[str]:
    kind = detect.get("type", "machine") if isinstance(detect, dict) else "machine"
    if call.detect_result is not None:
        return list(call.detect_result)
    return list(config.detect_results.get(kind, ["UNKNOWN"]))


def _fax(direction: str, params: dict[str, Any], success: bool) -> dict[str, Any]:
    return {
        "type": "finished",
        "params": {
            "direction": direction,
            "identity": params.get("identity", "+15550000000"),
            "remote_identity": "+15559999999",
            "document": params.get("document", ""),
            "success": success,
            "result": "1231" if success else "0",
            "result_text": "" if success else "Stopped",
            "pages": 1 if success else 0,
        },
    }


#: Builds the script of one action from the call, the start params and the config.
ScriptBuilder = Callable[["Call", dict[str, Any], "EmulatorConfig"], Script]


def _play_script(call: Call, params: dict[str, Any], config: EmulatorConfig) -> Script:
    ev, finished = c.EVENT_CALL_PLAY, {"state": "finished"}
    return Script(
        steps=[Step(0, ev, {"state": "playing"}), Step("play", ev, finished)],
        stop=[(ev, finished)],
        pause=(ev, {"state": "paused"}, {"state": "playing"}),
        message="Playing",
    )


def _record_script(call: Call, params: dict[str, Any], config: EmulatorConfig) -> Script:
    ev = c.EVENT_CALL_RECORD
    record = _obj(params.get("record"))
    fmt = (record.get("audio") or {}).get("format", "mp3") if isinstance(record.get("audio"), dict) else "mp3"
    url = f"https://files.emulator.invalid/recordings/{params['control_id']}.{fmt}"
    duration = config.duration("record")
    done = {"url": url, "duration": duration, "size": int(duration * 16000) + 1024}
    final = {"state": "finished", **done, "record": {**record, **done}}
    return Script(
        steps=[Step(0, ev, {"state": "recording", "record": record}), Step("record", ev, final)],
        stop=[(ev, final)],
        pause=(ev, {"state": "paused", "record": record}, {"state": "recording", "record": record}),
        result={"url": url},
        message="Recording",
    )


def _collect_script(call: Call, params: dict[str, Any], config: EmulatorConfig) -> Script:
    ev = c.EVENT_CALL_COLLECT
    result = _collect_result(call, params, config)
    steps = []
    if params.get("send_start_of_input"):
        steps.append(Step(0, ev, {"state": "collecting"}))
    state = _COLLECT_STATES.get(result.get("type", ""), "finished")
    steps.append(Step("collect", ev, {"final": True, "state": state, "result": result}))
    return Script(
        steps=steps,
        stop=[(ev, {"final": True, "state": "no_input", "result": {"type": "no_input", "params": {}}})],
        message="Collecting",
    )


def _play_and_collect_script(call: Call, params: dict[str, Any], config: EmulatorConfig) -> Script:
    play_ev, ev, finished = c.EVENT_CALL_PLAY, c.EVENT_CALL_COLLECT, {"state": "finished"}
    collect = _obj(params.get("collect"))
    result = _collect_result(call, collect, config)
    return Script(
        steps=[
            Step(0, play_ev, {"state": "playing"}),
            Step("play", play_ev, finished),
            Step("collect", ev, {"final": True, "result": result}),
        ],
        stop=[(play_ev, finished), (ev, {"final": True, "result": {"type": "no_input", "params": {}}})],
        message="Prompting",
    )


def _detect_script(call: Call, params: dict[str, Any], config: EmulatorConfig) -> Script:
    ev = c.EVENT_CALL_DETECT
    detect = _obj(params.get("detect"))
    kind = detect.get("type", "machine")
    steps = [
        Step("detect" if i == 0 else "step", ev, {"detect": {"type": kind, "params": {"event": name}}})
        for i, name in enumerate(_detect_events(call, detect, config))
    ]
    end = {"detect": {"type": kind, "params": {"event": "finished"}}}
    steps.append(Step("step", ev, end))
    return Script(steps=steps, stop=[(ev, end)], message="Detecting")


def _tap_script(call: Call, params: dict[str, Any], config: EmulatorConfig) -> Script:
    ev = c.EVENT_CALL_TAP
    tap, device = params.get("tap"), params.get("device")
    return Script(
        steps=[
            Step(0, ev, {"state": "tapping", "tap": tap, "device": device}),
            Step("tap", ev, {"state": "finished", "tap": tap, "device": device}),
        ],
        stop=[(ev, {"state": "finished", "tap": tap, "device": device})],
        result={"source_device": {"type": "rtp", "params": {"addr": "127.0.0.1", "port": 12000}}},
        message="Tapping",
    )


def _stream_script(call: Call, params: dict[str, Any], config: EmulatorConfig) -> Script:
    ev = c.EVENT_CALL_STREAM
    info = {"url": params.get("url"), "name": params.get("name", "")}
    return Script(
        steps=[
            Step(0, ev, {"state": "streaming", **info}),
            Step("stream", ev, {"state": "finished", **info}),
        ],
        stop=[(ev, {"state": "finished", **info})],
        message="Streaming",
    )


def _fax_script(direction: str) -> ScriptBuilder:
    """The script builder of a fax in ``direction`` (``send`` or ``receive``)."""

    def build(call: Call, params: dict[str, Any], config: EmulatorConfig) -> Script:
        ev = c.EVENT_CALL_FAX
        page = {"fax": {"type": "page", "params": {"direction": direction, "number": 1}}}
        # FaxAction completes only on a top-level ``state``: send it with ``fax.type``.
        return Script(
            steps=[
                Step("step", ev, page),
                Step("fax", ev, {"state": "finished", "fax": _fax(direction, params, True)}),
            ],
            stop=[(ev, {"state": "finished", "fax": _fax(direction, params, False)})],
            message="Sending fax" if direction == "send" else "Receiving fax",
        )

    return build


def _pay_script(call: Call, params: dict[str, Any], config: EmulatorConfig) -> Script:
    ev, finished = c.EVENT_CALL_PAY, {"state": "finished"}
    return Script(
        steps=[Step(0, ev, {"state": "started"}), Step("pay", ev, finished)],
        stop=[(ev, finished)],
        message="Paying",
    )


def _transcribe_script(call: Call, params: dict[str, Any], config: EmulatorConfig) -> Script:
    ev = c.EVENT_CALL_TRANSCRIBE
    cid = params["control_id"]
    done = {
        "state": "finished",
        "url": f"https://files.emulator.invalid/transcriptions/{cid}.json",
        "recording_id": str(uuid.uuid5(uuid.NAMESPACE_URL, cid)),
        "duration": config.duration("transcribe"),
        "size": 2048,
    }
    return Script(steps=[Step("transcribe", ev, done)], stop=[(ev, done)], message="Transcribing")


def _ai_script(call: Call, params: dict[str, Any], config: EmulatorConfig) -> Script:
    ev, finished = c.EVENT_CALL_AI, {"state": "finished"}
    runs_forever = config.duration("ai") <= 0
    return Script(
        steps=[] if runs_forever else [Step("ai", ev, finished)],
        stop=[(ev, finished)],
        message="AI started",
        finishes=not runs_forever,
    )


#: The script builder of each action verb (the keys of :data:`ACTION_VERBS`).
_SCRIPT_BUILDERS: dict[str, ScriptBuilder] = {
    "play": _play_script,
    "record": _record_script,
    "collect": _collect_script,
    "play_and_collect": _play_and_collect_script,
    "detect": _detect_script,
    "tap": _tap_script,
    "stream": _stream_script,
    "send_fax": _fax_script("send"),
    "receive_fax": _fax_script("receive"),
    "pay": _pay_script,
    "transcribe": _transcribe_script,
    "ai": _ai_script,
}


def build_script(verb: str, call: Call, params: dict[str, Any], config: EmulatorConfig) -> Script:
    """The script of action ``verb`` (a key of :data:`ACTION_VERBS`) started with ``params``.

    Raises ``KeyError`` for a verb that is not an action."""
    return _SCRIPT_BUILDERS[verb](call, params, config)


#: Action verbs, their required params (besides ``call_id``/``control_id``) and sub-commands.
ACTION_VERBS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "play": (("play",), frozenset({"pause", "resume", "stop", "volume"})),
    "record": (("record",), frozenset({"pause", "resume", "stop"})),
    "collect": ((), frozenset({"stop", "start_input_timers"})),
    "play_and_collect": (("play", "collect"), frozenset({"stop", "volume"})),
    "detect": (("detect",), frozenset({"stop"})),
    "tap": (("tap", "device"), frozenset({"stop"})),
    "stream": (("url",), frozenset({"stop"})),
    "send_fax": (("document",), frozenset({"stop"})),
    "receive_fax": ((), frozenset({"stop"})),
    "pay": (("payment_connector_url",), frozenset({"stop"})),
    "transcribe": ((), frozenset({"stop"})),
    "ai": ((), frozenset({"stop"})),
}


class Action:
    """One running action on a call: plays its script, obeys stop/pause/resume."""

    def __init__(self, call: Call, verb: str, control_id: str, script: Script, config: EmulatorConfig):
        self.call = call
        self.verb = verb
        self.control_id = control_id
        self.script = script
        self.config = config
        self.done = False
        self.paused = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the script in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _emit(self, event_type: str, params: dict[str, Any]) -> None:
        self.call.emit(event_type, {"control_id": self.control_id, **params})

    async def _sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` of unpaused time; False when stopped meanwhile."""
        loop = asyncio.get_running_loop()
        remaining = seconds
        while remaining > 0 or self.paused:
            if self.done:
                return False
            self._wake.clear()
            if self.paused:
                await self._wake.wait()
                continue
            started = loop.time()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                return not self.done
            remaining -= loop.time() - started
        return not self.done

    async def _run(self) -> None:
        steps = self.script.steps
        for index, step in enumerate(steps):
            delay = step.delay if isinstance(step.delay, (int, float)) else self.config.duration(step.delay)
            if delay > 0 and not await self._sleep(delay):
                return
            if self.done:
                return
            last = index == len(steps) - 1 and self.script.finishes
            if last:
                self._finish()
            self._emit(step.event_type, step.params)

    def _finish(self) -> None:
        self.done = True
        self._wake.set()
        self.call.actions.pop(self.control_id, None)

    def stop(self) -> None:
        """End now with the script's stop events (no-op once finished)."""
        if self.done:
            return
        self._finish()
        for event_type, params in self.script.stop:
            self._emit(event_type, params)

    def pause(self) -> bool:
        """Freeze the script and emit ``paused``; False if the action cannot pause."""
        if self.script.pause is None or self.done:
            return False
        if not self.paused:
            self.paused = True
            self._wake.set()
            self._emit(self.script.pause[0], self.script.pause[1])
        return True

    def resume(self) -> bool:
        """Unfreeze the script and emit the running state; False if the action cannot pause."""
        if self.script.pause is None or self.done:
            return False
        if self.paused:
            self.paused = False
            self._wake.set()
            self._emit(self.script.pause[0], self.script.pause[2])
        return True
