"""Every verb of the Call API and every Action sub-command against the emulator,
with the wire frame the client sent checked in the emulator's journal (§9.2, §9.3)."""

from __future__ import annotations

import asyncio
import pickle
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from relay_actors import Call, CallEndedError, RelayError
from relay_actors.emulator.testing import wait_until
from relay_actors.handlers import run_call_handler
from relay_actors.protocol.events import RelayEvent

from .conftest import PHONE, SLOW, Harness

TTS = {"type": "tts", "params": {"text": "Hello"}}
DIGITS = {"max": 4, "terminators": "#"}


def assert_sent(frame: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        assert frame.get(key) == value, f"{key}: sent {frame.get(key)!r}, expected {value!r}"


# --- commands returning a dict -----------------------------------------------------------

Verb = Callable[[Call], Any]

COMMANDS: list[tuple[str, Verb, str, dict[str, Any]]] = [
    ("answer", lambda c: c.answer(codecs="PCMU"), "calling.answer", {"codecs": "PCMU"}),
    (
        "connect",
        lambda c: c.connect([[PHONE]], ringback=[TTS], tag="t1", max_duration=60),
        "calling.connect",
        {"devices": [[PHONE]], "ringback": [TTS], "tag": "t1", "max_duration": 60},
    ),
    ("disconnect", lambda c: c.disconnect(), "calling.disconnect", {}),
    ("send_digits", lambda c: c.send_digits("12#w"), "calling.send_digits", {"digits": "12#w"}),
    (
        "refer",
        lambda c: c.refer({"type": "sip", "params": {"to": "sip:a@b"}}, status_url="https://s"),
        "calling.refer",
        {"device": {"type": "sip", "params": {"to": "sip:a@b"}}, "status_url": "https://s"},
    ),
    (
        "transfer",
        lambda c: c.transfer("context:sales", x=1),
        "calling.transfer",
        {"dest": "context:sales", "x": 1},
    ),
    (
        "join_conference",
        lambda c: c.join_conference("room1", muted=True, beep="onEnter", stream_obj={"url": "wss://s"}),
        "calling.join_conference",
        {"name": "room1", "muted": True, "beep": "onEnter", "stream": {"url": "wss://s"}},
    ),
    (
        "leave_conference",
        lambda c: c.leave_conference("conf-1"),
        "calling.leave_conference",
        {"conference_id": "conf-1"},
    ),
    ("hold", lambda c: c.hold(), "calling.hold", {}),
    ("unhold", lambda c: c.unhold(), "calling.unhold", {}),
    ("denoise", lambda c: c.denoise(), "calling.denoise", {}),
    ("denoise_stop", lambda c: c.denoise_stop(), "calling.denoise.stop", {}),
    (
        "echo",
        lambda c: c.echo(timeout=5, status_url="https://e"),
        "calling.echo",
        {"timeout": 5, "status_url": "https://e"},
    ),
    (
        "bind_digit",
        lambda c: c.bind_digit("*1", "calling.play", bind_params={"play": [TTS]}, realm="r", max_triggers=2),
        "calling.bind_digit",
        {
            "digits": "*1",
            "bind_method": "calling.play",
            "params": {"play": [TTS]},
            "realm": "r",
            "max_triggers": 2,
        },
    ),
    (
        "clear_digit_bindings",
        lambda c: c.clear_digit_bindings(realm="r"),
        "calling.clear_digit_bindings",
        {"realm": "r"},
    ),
    (
        "live_transcribe",
        lambda c: c.live_transcribe({"start": {}}),
        "calling.live_transcribe",
        {"action": {"start": {}}},
    ),
    (
        "live_translate",
        lambda c: c.live_translate({"start": {}}, status_url="https://t"),
        "calling.live_translate",
        {"action": {"start": {}}, "status_url": "https://t"},
    ),
    (
        "join_room",
        lambda c: c.join_room("r1", status_url="https://r"),
        "calling.join_room",
        {"name": "r1", "status_url": "https://r"},
    ),
    ("leave_room", lambda c: c.leave_room(), "calling.leave_room", {}),
    ("user_event", lambda c: c.user_event(event={"k": "v"}), "calling.user_event", {"event": {"k": "v"}}),
    (
        "amazon_bedrock",
        lambda c: c.amazon_bedrock(prompt={"text": "hi"}, SWAIG={"functions": []}, ai_params={"a": 1}),
        "calling.amazon_bedrock",
        {"prompt": {"text": "hi"}, "SWAIG": {"functions": []}, "params": {"a": 1}},
    ),
    (
        "ai_message",
        lambda c: c.ai_message(message_text="hello", role="user"),
        "calling.ai_message",
        {"message_text": "hello", "role": "user"},
    ),
    (
        "ai_hold",
        lambda c: c.ai_hold(timeout=10, prompt="wait"),
        "calling.ai_hold",
        {"timeout": 10, "prompt": "wait"},
    ),
    ("ai_unhold", lambda c: c.ai_unhold(prompt="back"), "calling.ai_unhold", {"prompt": "back"}),
    (
        "queue_enter",
        lambda c: c.queue_enter("support", control_id="q1", status_url="https://q"),
        "calling.queue.enter",
        {"queue_name": "support", "control_id": "q1", "status_url": "https://q"},
    ),
    (
        "queue_leave",
        lambda c: c.queue_leave("support", control_id="q2", queue_id="qid"),
        "calling.queue.leave",
        {"queue_name": "support", "control_id": "q2", "queue_id": "qid"},
    ),
]


@pytest.mark.parametrize(
    ("verb", "method", "expected"), [(v, m, e) for _, v, m, e in COMMANDS], ids=[n for n, *_ in COMMANDS]
)
async def test_command_wire_frame(
    harness: Harness, verb: Verb, method: str, expected: dict[str, Any]
) -> None:
    call = await harness.answered()
    result = await verb(call)
    assert result.get("code") == "200"
    sent = harness.requests(method)[-1]
    assert sent["call_id"] == call.call_id and sent["node_id"] == call.node_id
    assert_sent(sent, expected)
    # Keywords not given are not sent (None means "absent").
    assert None not in sent.values()


async def test_hangup_sends_end_with_reason_and_ends(harness: Harness) -> None:
    call = await harness.answered()
    assert (await call.hangup("busy"))["code"] == "200"
    ended = await call.wait_for_ended(timeout=5)
    assert harness.request("calling.end", call_id=call.call_id)["reason"] == "busy"
    assert ended.params["end_reason"] == "busy" and call.state == "ended" and call.end_reason == "busy"


async def test_pass_hands_the_offer_on(harness: Harness, make_harness: Any) -> None:
    other = await make_harness()
    call = await harness.inbound()
    assert (await call.pass_())["code"] == "200"
    harness.request("calling.pass", call_id=call.call_id)
    moved = await asyncio.wait_for(other.calls.get(), 5)
    assert moved.call_id == call.call_id
    # No longer ours: ended here, slot freed (a leaked slot per pass starves max_active_calls).
    assert call.state == "ended" and call.end_reason == "passed"
    assert harness.client.stats()["active_calls"] == 0 and other.client.stats()["active_calls"] == 1


async def test_a_passed_call_offered_again_is_a_new_offer(harness: Harness, make_harness: Any) -> None:
    await make_harness()  # someone to pass to
    call = await harness.inbound()
    await call.pass_()
    # The service offers it to us again later (another round): a new offer, not a duplicate.
    offer = {
        "call_id": call.call_id,
        "node_id": call.node_id,
        "context": "office",
        "call_state": "created",
        "direction": "inbound",
    }
    harness.core.push_event(harness.protocol, "calling.call.receive", offer)
    again = await asyncio.wait_for(harness.calls.get(), 5)
    assert again.call_id == call.call_id and again is not call and again.state == "created"


async def test_send_digits_on_completed(harness: Harness) -> None:
    call = await harness.answered()
    done: asyncio.Future[RelayEvent] = asyncio.get_running_loop().create_future()
    result = await call.send_digits("1", control_id="sd1", on_completed=done.set_result)
    assert (
        result["code"] == "200" and harness.request("calling.send_digits", control_id="sd1")["digits"] == "1"
    )
    event = await asyncio.wait_for(done, 5)
    assert event.event_type == "calling.call.send_digits" and event.params["state"] == "finished"


async def test_bad_arguments_are_refused_before_sending(harness: Harness) -> None:
    call = await harness.answered()
    before = len(harness.frames())
    for bad in (
        call.send_digits("12x"),
        call.play([]),
        call.play_tts(""),
        call.play_and_collect([TTS], {}),
        call.collect(),
        call.detect({"type": "other"}),
        call.connect([]),
    ):
        with pytest.raises(ValueError):
            await bad
    assert len(harness.frames()) == before


# --- actions: start frame and terminal event ----------------------------------------------

ACTIONS: list[tuple[str, Verb, str, dict[str, Any], str]] = [
    (
        "play",
        lambda c: c.play([TTS], volume=2.0, direction="both", loop=2),
        "calling.play",
        {"play": [TTS], "volume": 2.0, "direction": "both", "loop": 2},
        "calling.call.play",
    ),
    (
        "play_tts",
        lambda c: c.play_tts("Hi", language="en-US", voice="man", volume=-3.0),
        "calling.play",
        {
            "play": [{"type": "tts", "params": {"text": "Hi", "language": "en-US", "voice": "man"}}],
            "volume": -3.0,
        },
        "calling.call.play",
    ),
    (
        "play_audio",
        lambda c: c.play_audio("https://a/x.mp3"),
        "calling.play",
        {"play": [{"type": "audio", "params": {"url": "https://a/x.mp3"}}]},
        "calling.call.play",
    ),
    (
        "play_silence",
        lambda c: c.play_silence(1.5),
        "calling.play",
        {"play": [{"type": "silence", "params": {"duration": 1.5}}]},
        "calling.call.play",
    ),
    (
        "play_ringtone",
        lambda c: c.play_ringtone("us", duration=2.0),
        "calling.play",
        {"play": [{"type": "ringtone", "params": {"name": "us", "duration": 2.0}}]},
        "calling.call.play",
    ),
    ("record", lambda c: c.record(), "calling.record", {"record": {"audio": {}}}, "calling.call.record"),
    (
        "record_audio",
        lambda c: c.record({"beep": True, "format": "wav"}, status_url="https://r"),
        "calling.record",
        {"record": {"audio": {"beep": True, "format": "wav"}}, "status_url": "https://r"},
        "calling.call.record",
    ),
    (
        "play_and_collect",
        lambda c: c.play_and_collect([TTS], {"digits": DIGITS}, volume=1.0),
        "calling.play_and_collect",
        {"play": [TTS], "collect": {"digits": DIGITS}, "volume": 1.0},
        "calling.call.collect",
    ),
    (
        "prompt_tts",
        lambda c: c.prompt_tts("Press", {"digits": DIGITS}, gender="female"),
        "calling.play_and_collect",
        {
            "play": [{"type": "tts", "params": {"text": "Press", "gender": "female"}}],
            "collect": {"digits": DIGITS},
        },
        "calling.call.collect",
    ),
    (
        "prompt_audio",
        lambda c: c.prompt_audio("https://a/p.mp3", {"speech": {}}),
        "calling.play_and_collect",
        {"play": [{"type": "audio", "params": {"url": "https://a/p.mp3"}}], "collect": {"speech": {}}},
        "calling.call.collect",
    ),
    (
        "collect",
        lambda c: c.collect(
            digits=DIGITS, initial_timeout=4.0, partial_results=True, start_input_timers=False
        ),
        "calling.collect",
        {"digits": DIGITS, "initial_timeout": 4.0, "partial_results": True, "start_input_timers": False},
        "calling.call.collect",
    ),
    (
        "detect",
        lambda c: c.detect({"type": "fax", "params": {}}, timeout=10.0),
        "calling.detect",
        {"detect": {"type": "fax", "params": {}}, "timeout": 10.0},
        "calling.call.detect",
    ),
    (
        "detect_answering_machine",
        lambda c: c.detect_answering_machine(initial_timeout=4.5, detect_message_end=True),
        "calling.detect",
        {"detect": {"type": "machine", "params": {"initial_timeout": 4.5, "detect_message_end": True}}},
        "calling.call.detect",
    ),
    (
        "detect_fax",
        lambda c: c.detect_fax(tone="CED"),
        "calling.detect",
        {"detect": {"type": "fax", "params": {"tone": "CED"}}},
        "calling.call.detect",
    ),
    (
        "detect_digit",
        lambda c: c.detect_digit(digits="123"),
        "calling.detect",
        {"detect": {"type": "digit", "params": {"digits": "123"}}},
        "calling.call.detect",
    ),
    (
        "send_fax",
        lambda c: c.send_fax("https://d/doc.pdf", identity="+1555", header_info=""),
        "calling.send_fax",
        {"document": "https://d/doc.pdf", "identity": "+1555", "header_info": ""},
        "calling.call.fax",
    ),
    ("receive_fax", lambda c: c.receive_fax(), "calling.receive_fax", {}, "calling.call.fax"),
    (
        "tap",
        lambda c: c.tap(
            {"type": "audio", "params": {}}, {"type": "rtp", "params": {"addr": "1.2.3.4", "port": 9}}
        ),
        "calling.tap",
        {
            "tap": {"type": "audio", "params": {}},
            "device": {"type": "rtp", "params": {"addr": "1.2.3.4", "port": 9}},
        },
        "calling.call.tap",
    ),
    (
        "stream",
        lambda c: c.stream(
            "wss://s/x",
            name="s1",
            codec="PCMU",
            track="both_tracks",
            custom_parameters={"a": "b"},
            authorization_bearer_token="bt",
            status_url_method="GET",
        ),
        "calling.stream",
        {
            "url": "wss://s/x",
            "name": "s1",
            "codec": "PCMU",
            "track": "both_tracks",
            "custom_parameters": {"a": "b"},
            "authorization_bearer_token": "bt",
            "status_url_method": "GET",
        },
        "calling.call.stream",
    ),
    (
        "pay",
        lambda c: c.pay(
            "https://pay",
            input_method="dtmf",
            charge_amount="9.99",
            timeout="5",
            parameters=[{"name": "n", "value": "v"}],
        ),
        "calling.pay",
        {
            "payment_connector_url": "https://pay",
            "input": "dtmf",
            "charge_amount": "9.99",
            "timeout": "5",
            "parameters": [{"name": "n", "value": "v"}],
        },
        "calling.call.pay",
    ),
    (
        "transcribe",
        lambda c: c.transcribe(status_url="https://t"),
        "calling.transcribe",
        {"status_url": "https://t"},
        "calling.call.transcribe",
    ),
]


@pytest.mark.parametrize(
    ("start", "method", "expected", "terminal"),
    [(s, m, e, t) for _, s, m, e, t in ACTIONS],
    ids=[n for n, *_ in ACTIONS],
)
async def test_action_start_frame_and_completion(
    harness: Harness, start: Verb, method: str, expected: dict[str, Any], terminal: str
) -> None:
    call = await harness.answered()
    action = await start(call)
    assert action.call is call and action.control_id
    sent = harness.request(method, control_id=action.control_id)
    assert sent["call_id"] == call.call_id
    assert_sent(sent, expected)
    assert "input_method" not in sent and "ai_params" not in sent
    event = await action.wait(timeout=5)
    assert event.event_type == terminal and event.params["control_id"] == action.control_id
    assert action.is_done and action.completed and action.result is event


async def test_record_url_and_tap_source_device(harness: Harness) -> None:
    call = await harness.answered()
    record = await call.record({"format": "wav"})
    assert record.url.endswith(f"{record.control_id}.wav")  # from the start result
    await record.wait(timeout=5)
    assert record.result is not None and record.result.params["url"] == record.url
    tap = await call.tap({"type": "audio"}, {"type": "rtp", "params": {}})
    assert tap.start_result["source_device"]["type"] == "rtp"


async def test_ai_runs_until_stopped_with_params(harness: Harness) -> None:
    call = await harness.answered()
    ai = await call.ai(
        prompt={"text": "be nice"}, ai_params={"temperature": 0.2}, hints=["x"], SWAIG={"functions": []}
    )
    sent = harness.request("calling.ai", control_id=ai.control_id)
    assert_sent(
        sent,
        {
            "prompt": {"text": "be nice"},
            "params": {"temperature": 0.2},
            "hints": ["x"],
            "SWAIG": {"functions": []},
        },
    )
    assert "ai_params" not in sent
    with pytest.raises(asyncio.TimeoutError):
        await ai.wait(timeout=0.1)
    assert (await ai.stop())["code"] == "200"
    harness.request("calling.ai.stop", control_id=ai.control_id)
    assert (await ai.wait(timeout=5)).params["state"] == "finished"


# --- action sub-commands -----------------------------------------------------------------

SUBCOMMANDS: list[tuple[str, Verb, list[tuple[Callable[[Any], Any], str, dict[str, Any]]]]] = [
    (
        "play",
        lambda c: c.play_tts("long"),
        [
            (lambda a: a.pause(), "calling.play.pause", {}),
            (lambda a: a.resume(), "calling.play.resume", {}),
            (lambda a: a.volume(-6.0), "calling.play.volume", {"volume": -6.0}),
            (lambda a: a.stop(), "calling.play.stop", {}),
        ],
    ),
    (
        "record",
        lambda c: c.record(),
        [
            (lambda a: a.pause(behavior="silence"), "calling.record.pause", {"behavior": "silence"}),
            (lambda a: a.resume(), "calling.record.resume", {}),
            (lambda a: a.stop(), "calling.record.stop", {}),
        ],
    ),
    (
        "collect",
        lambda c: c.collect(speech={}),
        [
            (lambda a: a.start_input_timers(), "calling.collect.start_input_timers", {}),
            (lambda a: a.stop(), "calling.collect.stop", {}),
        ],
    ),
    (
        "play_and_collect",
        lambda c: c.prompt_tts("Press", {"digits": DIGITS}),
        [
            (lambda a: a.volume(3.0), "calling.play_and_collect.volume", {"volume": 3.0}),
            (lambda a: a.start_input_timers(), "calling.collect.start_input_timers", {}),
            (lambda a: a.stop(), "calling.play_and_collect.stop", {}),
        ],
    ),
    ("detect", lambda c: c.detect_answering_machine(), [(lambda a: a.stop(), "calling.detect.stop", {})]),
    (
        "tap",
        lambda c: c.tap({"type": "audio"}, {"type": "rtp", "params": {}}),
        [(lambda a: a.stop(), "calling.tap.stop", {})],
    ),
    ("stream", lambda c: c.stream("wss://s"), [(lambda a: a.stop(), "calling.stream.stop", {})]),
    ("pay", lambda c: c.pay("https://pay"), [(lambda a: a.stop(), "calling.pay.stop", {})]),
    ("transcribe", lambda c: c.transcribe(), [(lambda a: a.stop(), "calling.transcribe.stop", {})]),
    ("ai", lambda c: c.ai(), [(lambda a: a.stop(), "calling.ai.stop", {})]),
    ("send_fax", lambda c: c.send_fax("https://d.pdf"), [(lambda a: a.stop(), "calling.send_fax.stop", {})]),
    ("receive_fax", lambda c: c.receive_fax(), [(lambda a: a.stop(), "calling.receive_fax.stop", {})]),
]


@pytest.mark.parametrize(
    ("start", "commands"), [(s, cmds) for _, s, cmds in SUBCOMMANDS], ids=[n for n, *_ in SUBCOMMANDS]
)
async def test_action_subcommands(harness: Harness, start: Verb, commands: list[Any]) -> None:
    harness.core.set_config({"durations": SLOW})
    call = await harness.answered()
    action = await start(call)
    for command, method, expected in commands:
        result = await command(action)
        # A 2xx answer proves the emulator found the action running under this control_id.
        assert result["code"] == "200", (method, result)
        sent = harness.requests(method, control_id=action.control_id)
        assert len(sent) == 1, f"{method} not sent once"
        assert sent[0]["call_id"] == call.call_id
        assert_sent(sent[0], expected)
    event = await action.wait(timeout=5)  # stop ended it long before its 30 s
    assert action.is_done and action.result is event and event.params["control_id"] == action.control_id


async def test_play_pause_emits_paused_and_resume_playing(harness: Harness) -> None:
    harness.core.set_config({"durations": SLOW})
    call = await harness.answered()
    states: list[str] = []
    call.on("calling.call.play", lambda ev: states.append(ev.params["state"]))
    play = await call.play_tts("x")
    await play.pause()
    await wait_until(lambda: "paused" in states)
    await play.resume()
    await wait_until(lambda: states.count("playing") == 2)
    await play.stop()
    assert (await play.wait(timeout=5)).params["state"] == "finished"
    assert states == ["playing", "paused", "playing", "finished"]


# --- waiting, completion callbacks, listeners ----------------------------------------------


async def test_wait_timeout_does_not_cancel_the_action(harness: Harness) -> None:
    harness.core.set_config({"durations": {"play": 30.0}})
    call = await harness.answered()
    play = await call.play_tts("long")
    with pytest.raises(asyncio.TimeoutError):
        await play.wait(timeout=0.05)
    assert not play.is_done and play.result is None and not play.completed
    waiter = asyncio.create_task(play.wait())
    await play.stop()
    event = await asyncio.wait_for(waiter, 5)
    assert event.params["state"] == "finished" and play.result is event


async def test_on_completed_plain_and_async(harness: Harness) -> None:
    call = await harness.answered()
    plain: list[RelayEvent] = []
    async_done: asyncio.Future[RelayEvent] = asyncio.get_running_loop().create_future()

    async def on_done(event: RelayEvent) -> None:
        await asyncio.sleep(0)
        async_done.set_result(event)

    first = await call.play_tts("a", on_completed=plain.append)
    second = await call.record(on_completed=on_done)
    await first.wait(timeout=5)
    assert plain == [first.result]
    assert (await asyncio.wait_for(async_done, 5)) is second.result
    assert second.result is not None and second.result.params["state"] == "finished"


async def test_on_completed_fires_when_the_call_ends_mid_action(harness: Harness) -> None:
    harness.core.set_config({"durations": SLOW})
    call = await harness.answered()
    fired: list[RelayEvent] = []
    play = await call.play_tts("long", on_completed=fired.append)
    ai = await call.ai(on_completed=fired.append)
    harness.core.hangup(call.call_id)
    await call.wait_for_ended(timeout=5)
    await asyncio.wait_for(ai.wait(), 5)
    assert play.is_done and ai.is_done and len(fired) == 2


async def test_on_completed_fires_when_the_call_is_already_gone(harness: Harness) -> None:
    call = await harness.answered()
    harness.core.hangup(call.call_id)
    await call.wait_for_ended(timeout=5)
    fired: list[RelayEvent] = []
    done: asyncio.Future[RelayEvent] = asyncio.get_running_loop().create_future()

    async def on_done(event: RelayEvent) -> None:
        done.set_result(event)

    play = await call.play_tts("late", on_completed=fired.append)
    record = await call.record(on_completed=on_done)
    assert play.is_done and fired == [play.result] and fired[0].event_type == ""
    assert (await asyncio.wait_for(done, 5)).event_type == "" and record.is_done


async def test_on_completed_fires_when_the_start_gets_410(harness: Harness) -> None:
    """The server ended the call but its ``ended`` event has not reached us: 410 → resolved, empty."""
    call = await harness.answered()
    server_call = harness.core.calls.calls[call.call_id]
    session, server_call.session = server_call.session, None  # the ended event goes nowhere
    server_call.end("hangup")
    server_call.session = session
    fired: list[RelayEvent] = []
    play = await call.play_tts("late", on_completed=fired.append)
    assert harness.request("calling.play", control_id=play.control_id)
    assert play.is_done and play.start_result == {} and fired == [play.result] and fired[0].event_type == ""
    assert call.state == "answered"  # nothing told the client otherwise


async def test_action_start_error_raises_and_fails_the_action(harness: Harness) -> None:
    call = await harness.answered()
    await call.transcribe()
    with pytest.raises(RelayError) as info:
        await call.transcribe()  # a second transcription → 409
    assert info.value.code == 409 and info.value.failure is None and not info.value.call_gone


async def test_call_on_and_wait_for(harness: Harness) -> None:
    call = await harness.answered()
    seen: list[str] = []
    got_async: asyncio.Future[RelayEvent] = asyncio.get_running_loop().create_future()

    async def listener(event: RelayEvent) -> None:
        if not got_async.done():
            got_async.set_result(event)

    call.on("calling.call.play", lambda ev: seen.append(ev.params["state"]))
    call.on("calling.call.play", listener)
    finished = asyncio.create_task(
        call.wait_for("calling.call.play", lambda ev: ev.params.get("state") == "finished", timeout=5)
    )
    play = await call.play_tts("x")
    event = await finished
    assert event.params["control_id"] == play.control_id
    assert (await asyncio.wait_for(got_async, 5)).params["state"] == "playing"
    assert seen == ["playing", "finished"]
    call.off("calling.call.play")
    await (await call.play_tts("y")).wait(timeout=5)
    assert seen == ["playing", "finished"]
    with pytest.raises(asyncio.TimeoutError):
        await call.wait_for("calling.call.record", timeout=0.05)


async def test_wait_for_states_inbound(harness: Harness) -> None:
    call = await harness.inbound()
    assert call.state == "created"
    answered = asyncio.create_task(call.wait_for_answered(timeout=5))
    ending = asyncio.create_task(call.wait_for_ending(timeout=5))
    ended = asyncio.create_task(call.wait_for_ended(timeout=5))
    await call.answer()
    assert (await answered).params["call_state"] == "answered"
    assert not ending.done()
    await call.hangup()
    assert (await ending).params["call_state"] == "ending"
    assert (await ended).params["call_state"] == "ended"
    # Already past: they return at once.
    for waiter in (call.wait_for_ringing, call.wait_for_answered, call.wait_for_ending, call.wait_for_ended):
        assert (await waiter(timeout=0.01)).event_type == "calling.call.state"
    with pytest.raises(RelayError) as info:
        await call.wait_for("calling.call.play", timeout=1)
    assert info.value.failure == "call_ended"


async def test_wait_for_states_outbound_and_waiters_fail_on_end(harness: Harness) -> None:
    call = await harness.client.dial([[PHONE]], dial_timeout=5)
    assert (await call.wait_for_ringing(timeout=0.01)).params["call_state"] in ("ringing", "answered")
    pending = asyncio.create_task(call.wait_for("calling.call.play", timeout=5))
    await wait_until(lambda: call._waiters)
    harness.core.hangup(call.call_id)
    with pytest.raises(RelayError) as info:
        await pending
    assert info.value.failure == "call_ended"
    assert (await call.wait_for_ended(timeout=5)).params["end_reason"] == "hangup"


async def test_call_attributes(harness: Harness) -> None:
    call = await harness.inbound(from_number="+15551112222", to_number="+15553334444")
    server = harness.core.calls.calls[call.call_id]
    assert call.node_id == server.node_id and call.segment_id == server.segment_id
    assert call.project_id == harness.emulator.project and call.context == "office"
    assert (
        call.direction == "inbound"
        and call.from_number == "+15551112222"
        and call.to_number == "+15553334444"
    )
    assert call.device["type"] == "phone" and call.call_id in repr(call)


async def test_a_broken_predicate_fails_only_its_own_waiter(harness: Harness) -> None:
    call = await harness.answered()
    seen: list[str] = []
    call.on("calling.call.state", lambda ev: seen.append(ev.params["call_state"]))
    broken = asyncio.create_task(call.wait_for("calling.call.state", lambda ev: ev.params["nope"], timeout=5))
    ended = asyncio.create_task(call.wait_for_ended(timeout=5))
    await wait_until(lambda: len(call._waiters) == 2)
    await call.hangup()
    assert (await ended).params["call_state"] == "ended"
    with pytest.raises(KeyError):
        await broken
    assert seen == ["ending", "ended"]


async def test_wait_for_on_an_ended_call_raises_at_once(harness: Harness) -> None:
    call = await harness.answered()
    await call.hangup()
    await call.wait_for_ended(timeout=5)
    for event_type in ("calling.call.state", "calling.call.play"):
        with pytest.raises(RelayError) as info:
            await call.wait_for(event_type, timeout=5)
        assert info.value.failure == "call_ended"


async def test_a_wait_cut_short_by_the_end_is_also_the_sdk_s_timeout(harness: Harness) -> None:
    """SDK code written ``except asyncio.TimeoutError`` (the SDK waits its timeout out on an
    ended call) takes the same path here, at once; ``RelayError`` code checks work too."""
    call = await harness.answered()
    pending = asyncio.create_task(call.wait_for("calling.call.play", timeout=30))
    await wait_until(lambda: call._waiters)
    await call.hangup()
    started = asyncio.get_running_loop().time()
    with pytest.raises(asyncio.TimeoutError) as info:
        await pending
    assert asyncio.get_running_loop().time() - started < 5  # not the 30 s timeout
    err = info.value
    assert isinstance(err, CallEndedError) and isinstance(err, RelayError)
    assert err.failure == "call_ended" and err.code == -1
    again = pickle.loads(pickle.dumps(err))  # crosses Ray's process boundary intact
    assert type(again) is CallEndedError and again.failure == "call_ended" and again.message == err.message
    try:
        await call.wait_for("calling.call.state", timeout=30)
    except asyncio.TimeoutError:
        caught = "timeout"
    assert caught == "timeout"


async def test_a_handler_that_lets_the_end_of_its_call_escape_is_no_timeout(harness: Harness) -> None:
    """A handler whose wait the end of its call cut short failed; it did not run over
    ``handler_timeout`` (the runner tells the two apart although both are TimeoutErrors)."""
    call = await harness.answered()
    await call.hangup()
    await call.wait_for_ended(timeout=5)

    async def handler(c: Any) -> None:
        await c.wait_for("calling.call.play", timeout=30)

    counters: Counter[str] = Counter()
    await run_call_handler(handler, call, counters, timeout=60)
    assert counters["handler_errors"] == 1 and counters["handler_timeouts"] == 0


async def test_partial_collect_results_do_not_resolve_the_action(harness: Harness) -> None:
    harness.core.set_config({"durations": SLOW})
    call = await harness.answered()
    partials: list[bool] = []
    call.on("calling.call.collect", lambda ev: partials.append(ev.params.get("final")))
    collect = await call.collect(speech={}, partial_results=True)
    base = {"call_id": call.call_id, "node_id": call.node_id, "control_id": collect.control_id}
    partial = {"type": "speech", "params": {"text": "ye", "confidence": 0.5}}
    harness.core.push_event(
        harness.protocol, "calling.call.collect", {**base, "final": False, "result": partial}
    )
    await wait_until(lambda: partials == [False])
    assert not collect.is_done  # the official SDK resolves here, on a partial
    final = {"type": "speech", "params": {"text": "yes", "confidence": 0.9}}
    harness.core.push_event(
        harness.protocol, "calling.call.collect", {**base, "final": True, "result": final}
    )
    event = await collect.wait(timeout=5)
    assert event.params["result"]["params"]["text"] == "yes"


async def test_detect_resolves_on_the_first_result_and_later_ones_still_arrive(harness: Harness) -> None:
    call = await harness.answered()
    seen: list[str] = []
    call.on("calling.call.detect", lambda ev: seen.append(ev.params["detect"]["params"]["event"]))
    detect = await call.detect_answering_machine()
    first = await detect.wait(timeout=5)
    assert first.params["detect"]["params"]["event"] == "MACHINE"
    await wait_until(lambda: seen == ["MACHINE", "READY", "finished"])
