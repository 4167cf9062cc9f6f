"""Tunable behaviour of the emulator: durations of scripted operations and outcomes.

Everything here can be changed at runtime through the control API
(``POST /config``) or :meth:`relay_actors.emulator.core.EmulatorCore.set_config`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .caller import parse_inputs

__all__ = [
    "DIAL_OUTCOMES",
    "MESSAGE_OUTCOMES",
    "EmulatorConfig",
    "default_durations",
    "parse_durations",
]

#: Outcomes of one dialled leg (``answer`` is the default).
DIAL_OUTCOMES = ("answer", "busy", "no-answer", "failure")
#: Terminal states of an outbound message (``delivered`` is the default).
MESSAGE_OUTCOMES = ("delivered", "undelivered", "failed")


def default_durations() -> dict[str, float]:
    """Seconds each scripted phase lasts (short, so tests and demos run fast)."""
    return {
        "ring": 0.05,  # created -> ringing of a dialled leg
        "answer": 0.05,  # ringing -> answered/ended of a dialled leg
        "play": 0.2,
        "record": 0.5,
        "collect": 0.2,
        "detect": 0.2,
        "fax": 0.3,
        "tap": 0.3,
        "stream": 0.3,
        "pay": 0.3,
        "transcribe": 0.3,
        "ai": 0.0,  # 0 = the AI session runs until stopped or the call ends
        "send_digits": 0.05,
        "connect": 0.1,
        "message": 0.02,  # between two messaging.state events
        "step": 0.02,  # between two progress events of one operation
    }


def parse_durations(text: str) -> dict[str, float]:
    """Parse ``"play=0.2,record=0.5"`` into a dict; raises ValueError on a bad item."""
    out: dict[str, float] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"duration {item!r} is not NAME=SECONDS")
        out[name.strip()] = float(value)
    return out


@dataclass
class EmulatorConfig:
    """Behaviour knobs. All fields are JSON-friendly so the control API can read/write them."""

    durations: dict[str, float] = field(default_factory=default_durations)
    #: Per destination number (``to_number`` or sip ``to``): one of :data:`DIAL_OUTCOMES`.
    dial_outcomes: dict[str, str] = field(default_factory=dict)
    default_dial_outcome: str = "answer"
    #: Per destination number: one of :data:`MESSAGE_OUTCOMES`.
    message_outcomes: dict[str, str] = field(default_factory=dict)
    default_message_outcome: str = "delivered"
    #: Send every messaging.state event before the messaging.send result (the SDK's race).
    message_states_before_result: bool = False
    #: Seconds an inbound offer may ring before it ends with ``noAnswer``.
    ring_timeout: float = 30.0
    #: ``call_state`` of an inbound offer (``created`` or ``ringing``).
    offer_call_state: str = "created"
    #: Collect result when none is set on the call (digits requested -> this digit result).
    collect_digits: str = "1234"
    collect_terminator: str = "#"
    collect_speech_text: str = "yes please"
    #: Per dialled number: what the callee presses and says, one item per collect
    #: (``[{"digits": "1"}, {"speech": "sales"}, {"silence": true}]``, see ``caller.py``).
    caller_inputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Detect events per detect type, in order; ``finished`` follows automatically.
    detect_results: dict[str, list[str]] = field(
        default_factory=lambda: {"machine": ["MACHINE", "READY"], "fax": ["CED"], "digit": ["1"]}
    )
    #: Per dialled number: its detect events (``{"+1555...": ["HUMAN"]}``), instead of
    #: ``detect_results``, whatever the detect type (answering-machine detection per callee).
    detect_outcomes: dict[str, list[str]] = field(default_factory=dict)
    #: ``signalwire.receive`` answers 402 for these contexts ("*" = every context).
    receive_402: list[str] = field(default_factory=list)
    #: Seconds between server pings (0 = never).
    ping_interval: float = 15.0
    #: Seconds a detached session (and its calls and queued events) is kept for a resume.
    resume_grace: float = 60.0
    #: Most unacked events kept per session; beyond it the oldest are dropped and counted.
    max_unacked: int = 100_000
    #: Seconds to wait for the ack of ``signalwire.disconnect`` before closing anyway. Generous:
    #: the official SDK clears its protocol only after its ack went out, so closing early
    #: on a loaded machine leaves it resuming a retired session.
    disconnect_ack_timeout: float = 5.0
    #: Refuse a repeated ``calling.answer`` (``409``) as a stricter service might, instead
    #: of answering it ``200`` again. A repeated ``calling.end`` is refused either way
    #: (``410``: the first one ended the call). Off by default.
    strict_commands: bool = False
    #: Record every frame per session (credentials masked). Off for benchmarks.
    journal: bool = True
    #: Most frames kept per session in the journal.
    journal_limit: int = 5000

    def duration(self, name: str) -> float:
        """Seconds of phase ``name`` (0 for an unknown phase)."""
        return self.durations.get(name, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON view of the whole configuration."""
        return asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update; ``durations`` and outcome maps are merged, not replaced.

        Raises:
            ValueError: unknown field or bad outcome value.
        """
        names = {f.name for f in fields(self)}
        for key, value in changes.items():
            if key not in names:
                raise ValueError(f"unknown config field {key!r}")
            if key == "durations":
                self.durations.update({str(k): float(v) for k, v in value.items()})
            elif key in ("dial_outcomes", "message_outcomes"):
                allowed = DIAL_OUTCOMES if key == "dial_outcomes" else MESSAGE_OUTCOMES
                for number, outcome in value.items():
                    if outcome not in allowed:
                        raise ValueError(f"{key}[{number}] must be one of {allowed}, not {outcome!r}")
                getattr(self, key).update(value)
            elif key == "detect_outcomes":
                if not isinstance(value, dict) or not all(
                    isinstance(v, list) and all(isinstance(e, str) for e in v) for v in value.values()
                ):
                    raise ValueError('detect_outcomes must map a number to a list of events, e.g. ["HUMAN"]')
                self.detect_outcomes.update({str(n): list(v) for n, v in value.items()})
            elif key == "caller_inputs":
                if not isinstance(value, dict):
                    raise ValueError("caller_inputs must map a number to a list of inputs")
                self.caller_inputs.update({str(n): parse_inputs(items) for n, items in value.items()})
            else:
                setattr(self, key, value)
