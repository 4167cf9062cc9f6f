"""What happened on a call or to a message, from the far side's point of view (sans-IO).

The emulator's journal holds every frame between the app and the emulator. The
functions here turn those frames into a short list of typed events — the call was
answered, a prompt played, digits were collected, a recording made, a transfer rang,
who hung up and why; a message's reply and its delivery — in the order they happened.
No sockets, no threads: they are fed journal entries (``{"t", "dir", "frame"}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Answered",
    "CallEvent",
    "Collected",
    "Connected",
    "Delivery",
    "Detected",
    "HungUp",
    "MessageEvent",
    "Prompt",
    "Recording",
    "Reply",
    "call_timeline",
    "dialed_call_ids",
    "message_timeline",
]


@dataclass(frozen=True)
class Answered:
    """The app answered the call (or the dialled number picked up)."""

    def describe(self) -> str:
        return "answered"


@dataclass(frozen=True)
class Prompt:
    """The app played something to the caller: ``text`` (its TTS, joined) and/or ``urls``.

    ``collects`` is True for a prompt that also waits for input (``play_and_collect``)."""

    text: str = ""
    urls: tuple[str, ...] = ()
    collects: bool = False

    @property
    def url(self) -> str:
        """The first audio URL played ("" for none)."""
        return self.urls[0] if self.urls else ""

    def describe(self) -> str:
        what = " + ".join([repr(self.text)] * bool(self.text) + list(self.urls))
        return f"prompt {what or '(silence)'}{' (collecting)' if self.collects else ''}"


@dataclass(frozen=True)
class Collected:
    """What the app collected: ``kind`` is ``digit``, ``speech``, ``no_input`` or ``no_match``."""

    kind: str
    digits: str = ""
    terminator: str = ""
    text: str = ""
    confidence: float | None = None

    def describe(self) -> str:
        if self.kind == "digit":
            return f"collected digits {self.digits!r}" + (
                f" (terminator {self.terminator!r})" if self.terminator else ""
            )
        if self.kind == "speech":
            return f"collected speech {self.text!r}"
        return f"collected {self.kind}"


@dataclass(frozen=True)
class Recording:
    """A recording the app made (``state`` ``finished`` with its ``url``, or why not)."""

    url: str
    state: str = "finished"
    duration: float | None = None
    size: int | None = None

    def describe(self) -> str:
        return f"recording {self.url or '(none)'}" + ("" if self.state == "finished" else f" ({self.state})")


@dataclass(frozen=True)
class Connected:
    """A transfer (``calling.connect``): the numbers or addresses rung, and its outcome
    (``connected`` or ``failed``)."""

    to: tuple[str, ...]
    state: str

    def describe(self) -> str:
        return f"connect to {', '.join(self.to) or '?'} ({self.state})"


@dataclass(frozen=True)
class Detected:
    """A detection's answer, e.g. ``HUMAN``, ``MACHINE``, ``UNKNOWN`` (``kind`` ``machine``)."""

    result: str
    kind: str = "machine"

    def describe(self) -> str:
        return f"detected {self.result} ({self.kind})"


@dataclass(frozen=True)
class HungUp:
    """The call ended: ``by`` the ``app``, or the far side (``caller`` for a call into the
    app, ``callee`` for a number the app dialled); ``reason`` as the service says it
    (``hangup``, ``busy``, ``noAnswer``, ...)."""

    by: str
    reason: str

    def describe(self) -> str:
        return f"hung up by the {self.by} ({self.reason})"


@dataclass(frozen=True)
class Reply:
    """A message the app sent back to the sender of an inbound message."""

    body: str
    to: str
    from_: str
    media: tuple[str, ...] = ()
    message_id: str = ""

    def describe(self) -> str:
        return f"reply {self.body!r} to {self.to}"


@dataclass(frozen=True)
class Delivery:
    """A reply's final delivery state (``delivered``, ``undelivered``, ``failed``), with
    every state it went through and the carrier's reason."""

    state: str
    states: tuple[str, ...] = field(default=())
    reason: str = ""

    def describe(self) -> str:
        return f"delivery {self.state}" + (f" ({self.reason})" if self.reason else "")


CallEvent = Answered | Prompt | Collected | Recording | Connected | Detected | HungUp
MessageEvent = Reply | Delivery

_FINAL_MESSAGE_STATES = frozenset({"delivered", "undelivered", "failed"})
#: Detect events that are not an answer (the beep is ready, the detection ended).
_NOT_A_DETECTION = frozenset({"finished", "READY", "NOT_READY", "error"})


def _frames(entries: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(direction, frame) of every frame, in time order (batched frames unpacked)."""
    ordered = sorted(enumerate(entries), key=lambda item: (item[1].get("t", 0.0), item[0]))
    for _, entry in ordered:
        frame = entry.get("frame")
        for item in frame if isinstance(frame, list) else [frame]:
            if isinstance(item, dict):
                yield str(entry.get("dir")), item


def _event(frame: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    if frame.get("method") != "signalwire.event":
        return None
    outer = frame.get("params")
    if not isinstance(outer, dict) or not isinstance(outer.get("params"), dict):
        return None
    return str(outer.get("event_type")), outer["params"]


def _number(device: Any) -> str:
    params = device.get("params") if isinstance(device, dict) else None
    if not isinstance(params, dict):
        return ""
    return str(params.get("to_number") or params.get("to") or "")


def _media(play: Any) -> tuple[str, tuple[str, ...]]:
    texts: list[str] = []
    urls: list[str] = []
    for item in play if isinstance(play, list) else []:
        params = item.get("params") if isinstance(item, dict) else None
        if not isinstance(params, dict):
            continue
        if item.get("type") == "tts" and params.get("text"):
            texts.append(str(params["text"]))
        elif params.get("url"):
            urls.append(str(params["url"]))
    return " ".join(texts), tuple(urls)


def call_timeline(
    entries: Iterable[dict[str, Any]], call_id: str, far_side: str
) -> tuple[list[CallEvent], bool]:
    """The events of ``call_id`` in order, and whether the call has ended.

    ``entries``: journal entries of every session (they are sorted by time here);
    ``far_side``: who ended a call the app did not end (``caller`` or ``callee``)."""
    events: list[CallEvent] = []
    targets: tuple[str, ...] = ()
    app_ended = False
    detected: set[str] = set()
    for direction, frame in _frames(entries):
        if direction == "in":
            params = frame.get("params")
            method = frame.get("method")
            if not isinstance(params, dict) or params.get("call_id") != call_id:
                continue
            if method in ("calling.play", "calling.play_and_collect"):
                text, urls = _media(params.get("play"))
                events.append(Prompt(text, urls, collects=method == "calling.play_and_collect"))
            elif method == "calling.connect":
                targets = _targets(params)
            elif method == "calling.end":
                app_ended = True
            continue
        found = _event(frame)
        if found is None or found[1].get("call_id") != call_id:
            continue
        event_type, p = found
        if event_type == "calling.call.state":
            state = p.get("call_state")
            if state == "answered" and not any(isinstance(e, Answered) for e in events):
                events.append(Answered())
            elif state == "ended":
                events.append(HungUp("app" if app_ended else far_side, str(p.get("end_reason") or "")))
                return events, True
        elif event_type == "calling.call.collect" and isinstance(p.get("result"), dict):
            events.append(_collected(p["result"]))
        elif event_type == "calling.call.record" and p.get("state") not in ("recording", "paused"):
            events.append(
                Recording(str(p.get("url", "")), str(p.get("state")), p.get("duration"), p.get("size"))
            )
        elif event_type == "calling.call.connect" and p.get("connect_state") in ("connected", "failed"):
            events.append(Connected(targets, str(p["connect_state"])))
        elif event_type == "calling.call.detect":
            detection = _detection(p)
            control_id = str(p.get("control_id"))
            if detection is not None and control_id not in detected:
                detected.add(control_id)
                events.append(detection)
    return events, False


def _targets(connect: dict[str, Any]) -> tuple[str, ...]:
    """The numbers a ``calling.connect`` rings, in order."""
    devices: list[Any] = connect["devices"] if isinstance(connect.get("devices"), list) else []
    return tuple(_number(d) for group in devices for d in (group if isinstance(group, list) else [group]))


def _collected(result: dict[str, Any]) -> Collected:
    """What a collect's ``result`` says the caller pressed or said."""
    r: dict[str, Any] = result["params"] if isinstance(result.get("params"), dict) else {}
    confidence = r.get("confidence")
    return Collected(
        str(result.get("type", "")),
        digits=str(r.get("digits", "")),
        terminator=str(r.get("terminator", "")),
        text=str(r.get("text", "")),
        confidence=float(confidence) if isinstance(confidence, (int, float)) else None,
    )


def _detection(params: dict[str, Any]) -> Detected | None:
    """What a ``calling.call.detect`` event detected; None for a non-detection (``finished``, ...)."""
    detect: dict[str, Any] = params["detect"] if isinstance(params.get("detect"), dict) else {}
    result = (detect.get("params") or {}).get("event") if isinstance(detect.get("params"), dict) else None
    if not result or result in _NOT_A_DETECTION:
        return None
    return Detected(str(result), str(detect.get("type", "machine")))


def dialed_call_ids(entries: Iterable[dict[str, Any]], number: str) -> list[str]:
    """Ids of the outbound legs to ``number`` (dials, transfers), in the order they began."""
    found: list[str] = []
    for direction, frame in _frames(entries):
        event = _event(frame) if direction == "out" else None
        if event is None or event[0] != "calling.call.state":
            continue
        p = event[1]
        if (
            p.get("direction") == "outbound"
            and _number(p.get("device")) == number
            and p.get("call_id") not in found
        ):
            found.append(str(p.get("call_id")))
    return found


def message_timeline(
    entries: Iterable[dict[str, Any]], message_id: str, sender: str
) -> tuple[list[MessageEvent], bool]:
    """What followed inbound message ``message_id`` from ``sender``: each reply sent to
    the sender after it arrived and the reply's final delivery state. Done (second value)
    once there is a reply and every reply has its final state."""
    events: list[MessageEvent] = []
    arrived = False
    requests: dict[Any, dict[str, Any]] = {}  # messaging.send request id -> its params
    replies: dict[str, list[str]] = {}  # reply message id -> states so far
    for direction, frame in _frames(entries):
        if direction == "in":
            params = frame.get("params")
            if arrived and frame.get("method") == "messaging.send" and isinstance(params, dict):
                if params.get("to_number") == sender:
                    requests[frame.get("id")] = params
            continue
        if "result" in frame and frame.get("id") in requests:
            params = requests.pop(frame.get("id"))
            result = frame["result"] if isinstance(frame["result"], dict) else {}
            reply_id = str(result.get("message_id", ""))
            media: list[Any] = params["media"] if isinstance(params.get("media"), list) else []
            events.append(
                Reply(
                    str(params.get("body") or ""),
                    sender,
                    str(params.get("from_number")),
                    tuple(str(m) for m in media),
                    reply_id,
                )
            )
            replies[reply_id] = []
            continue
        found = _event(frame)
        if found is None:
            continue
        event_type, p = found
        if event_type == "messaging.receive" and p.get("message_id") == message_id:
            arrived = True
        elif event_type == "messaging.state" and p.get("message_id") in replies:
            states = replies[str(p["message_id"])]
            state = str(p.get("message_state"))
            states.append(state)
            if state in _FINAL_MESSAGE_STATES:
                events.append(Delivery(state, tuple(states), str(p.get("reason") or "")))
    # Done once answered and every answer is final (an app that never answers is waited
    # for until the deadline: nothing tells that it will not).
    finished = all(any(s in _FINAL_MESSAGE_STATES for s in states) for states in replies.values())
    return events, arrived and bool(replies) and finished and not requests
