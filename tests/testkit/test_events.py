"""The typed events read from journal frames (sans-IO), and the in-order walker's failures:
what was expected, what came instead, and everything the caller heard."""

from __future__ import annotations

from typing import Any

import pytest

from relay_actors.testkit import Answered, Collected, Connected, Detected, HungUp, Prompt, Recording
from relay_actors.testkit.events import call_timeline, dialed_call_ids, message_timeline
from relay_actors.testkit.expect import EventSequence

CALL = "c-1"


def command(t: float, method: str, **params: Any) -> dict[str, Any]:
    return {
        "t": t,
        "dir": "in",
        "frame": {"jsonrpc": "2.0", "id": f"r{t}", "method": method, "params": params},
    }


def event(t: float, event_type: str, **params: Any) -> dict[str, Any]:
    frame = {"jsonrpc": "2.0", "id": f"e{t}", "method": "signalwire.event",
             "params": {"event_type": event_type, "params": params}}  # fmt: skip
    return {"t": t, "dir": "out", "frame": frame}


def tts(text: str) -> list[dict[str, Any]]:
    return [{"type": "tts", "params": {"text": text}}]


JOURNAL = [
    event(1, "calling.call.state", call_id=CALL, call_state="answered"),
    command(2, "calling.play_and_collect", call_id=CALL, control_id="p", play=tts("Menu.")),
    event(
        3,
        "calling.call.collect",
        call_id=CALL,
        control_id="p",
        final=True,
        result={"type": "digit", "params": {"digits": "3", "terminator": "#"}},
    ),
    command(
        4,
        "calling.play",
        call_id=CALL,
        control_id="q",
        play=[{"type": "audio", "params": {"url": "https://x/beep.mp3"}}],
    ),
    command(4.5, "calling.detect", call_id=CALL, control_id="d", detect={"type": "machine"}),
    event(
        5,
        "calling.call.detect",
        call_id=CALL,
        control_id="d",
        detect={"type": "machine", "params": {"event": "HUMAN"}},
    ),
    event(
        5.1,
        "calling.call.detect",
        call_id=CALL,
        control_id="d",
        detect={"type": "machine", "params": {"event": "finished"}},
    ),
    event(6, "calling.call.record", call_id=CALL, control_id="r", state="recording"),
    event(7, "calling.call.record", call_id=CALL, control_id="r", state="finished", url="https://x/r.mp3"),
    command(
        8, "calling.connect", call_id=CALL, devices=[[{"type": "phone", "params": {"to_number": "+1999"}}]]
    ),
    event(
        9,
        "calling.call.state",
        call_id="leg",
        call_state="created",
        direction="outbound",
        device={"type": "phone", "params": {"to_number": "+1999"}},
    ),
    event(10, "calling.call.connect", call_id=CALL, connect_state="connected"),
    command(11, "calling.end", call_id=CALL, reason="hangup"),
    event(12, "calling.call.state", call_id=CALL, call_state="ended", end_reason="hangup"),
]


def test_frames_become_the_calls_events_in_order() -> None:
    events, ended = call_timeline(reversed(JOURNAL), CALL, "caller")  # sorted by time, whatever the order
    assert ended
    assert events == [
        Answered(),
        Prompt("Menu.", collects=True),
        Collected("digit", digits="3", terminator="#"),
        Prompt(urls=("https://x/beep.mp3",)),
        Detected("HUMAN"),
        Recording("https://x/r.mp3"),
        Connected(("+1999",), "connected"),
        HungUp("app", "hangup"),
    ]
    assert dialed_call_ids(JOURNAL, "+1999") == ["leg"]
    # Without the app's calling.end, the far side hung up.
    assert call_timeline([e for e in JOURNAL if e["t"] != 11], CALL, "caller")[0][-1] == HungUp(
        "caller", "hangup"
    )


def test_the_walker_names_what_came_instead() -> None:
    events, _ = call_timeline(JOURNAL, CALL, "caller")
    seq = EventSequence(
        lambda: (events, True), what="call c-1", heard="what the caller heard and did", timeout=1
    )
    seq.next_event().is_answered()
    seq.next_event().is_prompt(contains="Menu")
    with pytest.raises(AssertionError) as failure:
        seq.next_event().is_collected(digits="1")
    assert str(failure.value).splitlines()[:5] == [
        "call c-1: expected event 3 to be collected input with digits='1', but it was: "
        "collected digits '3' (terminator '#')",
        "what the caller heard and did:",
        "  1. answered",
        "  2. prompt 'Menu.' (collecting)",
        "> 3. collected digits '3' (terminator '#')",
    ]
    seq.skip_next(4)
    with pytest.raises(AssertionError, match="expected no more events, but event 8 was: hung up by the app"):
        seq.no_more_events()
    seq.next_event().is_hangup(by="app", reason="hangup")
    seq.no_more_events()
    with pytest.raises(AssertionError, match="expected event 9, but it had ended"):
        seq.next_event()


def test_a_call_still_going_fails_on_the_deadline() -> None:
    seq = EventSequence(lambda: ([Answered()], False), what="call c-2", heard="heard", timeout=0.05)
    seq.next_event().is_answered()
    with pytest.raises(AssertionError, match=r"expected event 2, but nothing more happened within 0.05s"):
        seq.next_event()


REPLY = {"to_number": "+1555", "from_number": "+1000", "body": "Hi"}


def test_a_message_and_its_reply() -> None:
    journal = [
        event(1, "messaging.receive", message_id="in-1", from_number="+1555"),
        {"t": 2, "dir": "in", "frame": {"id": "s1", "method": "messaging.send", "params": REPLY}},
        {"t": 3, "dir": "out", "frame": {"id": "s1", "result": {"code": "200", "message_id": "out-1"}}},
        event(4, "messaging.state", message_id="out-1", message_state="queued"),
        event(5, "messaging.state", message_id="out-1", message_state="undelivered", reason="unreachable"),
    ]  # fmt: skip
    events, done = message_timeline(journal, "in-1", "+1555")
    assert done and [e.describe() for e in events] == [
        "reply 'Hi' to +1555",
        "delivery undelivered (unreachable)",
    ]
    assert events[1].states == ("queued", "undelivered")
    assert message_timeline(journal[:4], "in-1", "+1555")[1] is False  # not final yet
