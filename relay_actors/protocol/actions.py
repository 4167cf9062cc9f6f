"""Long-running call operations tracked by ``control_id``, sans-IO.

An action (play, record, collect, ...) is registered under its ``control_id``
*before* its start request goes out, so early events are not lost. Each kind
has a terminal test; the first event that passes it resolves the action once.
The tests follow the official SDK, except where it is known to be wrong:

* ``play_and_collect`` shares one ``control_id`` between play and collect
  events: a play ``finished`` only ends the prompt; the action resolves on the
  collect result (gotcha 2).
* ``detect`` resolves on the first event carrying a ``detect`` payload, as the
  SDK does, or on ``finished``/``error``; later detect events (``READY``) still
  reach the record's ``events`` and listeners (gotcha 3).
* a standalone ``collect`` with partial results does **not** resolve on a
  result marked ``final: false`` (the SDK does; gotcha 4).
* ``fax`` resolves on a top-level ``state`` *or* on ``fax.type``
  ``finished``/``error`` (the SDK needs the former; gotcha 6).
* when the call ends, every pending action resolves with the ``ended`` event
  (the SDK leaves them hanging; gotcha 8).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import constants as c
from .events import RelayEvent

__all__ = ["ACTION_KINDS", "ActionKind", "ActionRecord", "ActionTable", "empty_event"]


def empty_event() -> RelayEvent:
    """The event an action resolves with when its call is gone (404/410, already ended)."""
    return RelayEvent("", {})


def _state_in(*states: str) -> Callable[[RelayEvent], bool]:
    terminal = frozenset(states)

    def test(event: RelayEvent) -> bool:
        return event.state in terminal

    return test


def _collect_done(event: RelayEvent) -> bool:
    if event.event_type != c.EVENT_CALL_COLLECT:
        return False
    result = event.params.get("result")
    if isinstance(result, dict) and result:
        return event.params.get("final") is not False
    return event.state in ("finished", "error", "no_input", "no_match")


def _detect_done(event: RelayEvent) -> bool:
    detect = event.params.get("detect")
    if isinstance(detect, dict) and detect:
        return True
    return event.state in ("finished", "error")


def _fax_done(event: RelayEvent) -> bool:
    if event.state in ("finished", "error"):
        return True
    fax = event.params.get("fax")
    return isinstance(fax, dict) and fax.get("type") in ("finished", "error")


@dataclass(frozen=True, slots=True)
class ActionKind:
    """What one kind of action listens to and when it is over.

    ``name`` is the wire verb (``calling.<name>``); ``stop`` the sub-command
    prefix (``calling.<stop>.stop``).
    """

    name: str
    event_types: frozenset[str]
    is_terminal: Callable[[RelayEvent], bool]
    stop: str


def _kind(
    name: str, events: Iterable[str], terminal: Callable[[RelayEvent], bool], stop: str = ""
) -> ActionKind:
    return ActionKind(name, frozenset(events), terminal, stop or name)


ACTION_KINDS: dict[str, ActionKind] = {
    k.name: k
    for k in (
        _kind("play", [c.EVENT_CALL_PLAY], _state_in("finished", "error")),
        _kind("record", [c.EVENT_CALL_RECORD], _state_in("finished", "no_input", "error")),
        _kind("collect", [c.EVENT_CALL_COLLECT], _collect_done),
        _kind("play_and_collect", [c.EVENT_CALL_COLLECT, c.EVENT_CALL_PLAY], _collect_done),
        _kind("detect", [c.EVENT_CALL_DETECT], _detect_done),
        _kind("send_fax", [c.EVENT_CALL_FAX], _fax_done),
        _kind("receive_fax", [c.EVENT_CALL_FAX], _fax_done),
        _kind("tap", [c.EVENT_CALL_TAP], _state_in("finished", "error")),
        _kind("stream", [c.EVENT_CALL_STREAM], _state_in("finished", "error")),
        _kind("pay", [c.EVENT_CALL_PAY], _state_in("finished", "error")),
        _kind("transcribe", [c.EVENT_CALL_TRANSCRIBE], _state_in("finished", "error")),
        _kind("ai", [c.EVENT_CALL_AI], _state_in("finished", "error")),
        _kind("send_digits", [c.EVENT_CALL_SEND_DIGITS], _state_in("finished", "error")),
    )
}


@dataclass(slots=True)
class ActionRecord:
    """The state of one action. ``result`` is the terminal event once ``done``."""

    kind: ActionKind
    control_id: str
    state: str = ""
    done: bool = False
    result: RelayEvent | None = None
    events: int = 0

    def resolve(self, event: RelayEvent) -> None:
        self.done = True
        self.result = event


@dataclass(slots=True)
class ActionTable:
    """The running actions of one call, by ``control_id``."""

    running: dict[str, ActionRecord] = field(default_factory=dict)

    def start(self, kind: str, control_id: str) -> ActionRecord:
        """Register an action before its start request is sent."""
        record = ActionRecord(ACTION_KINDS[kind], control_id)
        self.running[control_id] = record
        return record

    def feed(self, event: RelayEvent) -> ActionRecord | None:
        """Apply an event. Returns the record it resolved, if it resolved one."""
        record = self.running.get(event.control_id)
        if record is None or event.event_type not in record.kind.event_types:
            return None
        record.events += 1
        state = event.state
        if state and (event.event_type != c.EVENT_CALL_PLAY or record.kind.name == "play"):
            record.state = state
        if record.kind.is_terminal(event):
            del self.running[record.control_id]
            record.resolve(event)
            return record
        return None

    def finish(self, control_id: str, event: RelayEvent | None = None) -> ActionRecord | None:
        """Resolve one action now (its start failed with call-gone, or it was abandoned)."""
        record = self.running.pop(control_id, None)
        if record is not None:
            record.resolve(event or empty_event())
        return record

    def discard(self, control_id: str) -> None:
        """Forget an action whose start request failed with a real error."""
        self.running.pop(control_id, None)

    def finish_all(self, event: RelayEvent) -> list[ActionRecord]:
        """The call ended: resolve every pending action with ``event``."""
        records = list(self.running.values())
        self.running.clear()
        for record in records:
            record.resolve(event)
        return records
