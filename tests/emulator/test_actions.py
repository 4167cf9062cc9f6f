"""Every calling method of §6.7/§6.8: result shape, event sequence, sub-commands, errors."""

from __future__ import annotations

from typing import Any

import pytest

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import RawClient

TAP = {"type": "audio", "params": {"direction": "both"}}
RTP = {"type": "rtp", "params": {"addr": "127.0.0.1", "port": 1234}}

# verb, extra params, event type, expected sequence of a progress key per event
ACTIONS: list[tuple[str, dict[str, Any], str, list[Any]]] = [
    (
        "play",
        {"play": [{"type": "tts", "params": {"text": "hi"}}]},
        "calling.call.play",
        ["playing", "finished"],
    ),
    ("record", {"record": {"audio": {"format": "mp3"}}}, "calling.call.record", ["recording", "finished"]),
    ("collect", {"digits": {"max": 4}}, "calling.call.collect", ["finished"]),
    (
        "detect",
        {"detect": {"type": "machine", "params": {}}},
        "calling.call.detect",
        ["MACHINE", "READY", "finished"],
    ),
    ("tap", {"tap": TAP, "device": RTP}, "calling.call.tap", ["tapping", "finished"]),
    ("stream", {"url": "wss://example.invalid/s"}, "calling.call.stream", ["streaming", "finished"]),
    ("send_fax", {"document": "https://example.invalid/a.pdf"}, "calling.call.fax", ["page", "finished"]),
    ("receive_fax", {}, "calling.call.fax", ["page", "finished"]),
    (
        "pay",
        {"payment_connector_url": "https://example.invalid/pay"},
        "calling.call.pay",
        ["started", "finished"],
    ),
    ("transcribe", {}, "calling.call.transcribe", ["finished"]),
]


def _phase(event: dict[str, Any]) -> Any:
    if "detect" in event:
        return event["detect"]["params"]["event"]
    if "fax" in event:
        return event["fax"]["type"]
    return event.get("state")


async def _answered_call(emulator: Emulator, client: RawClient) -> str:
    [call_id] = emulator.core.inject_calls("office")
    await client.wait_event("calling.call.receive", call_id=call_id)
    await client.request("calling.answer", {"call_id": call_id})
    return call_id


@pytest.mark.parametrize(("verb", "extra", "event_type", "phases"), ACTIONS, ids=[a[0] for a in ACTIONS])
async def test_action_result_and_events(emulator, client, verb, extra, event_type, phases) -> None:
    call_id = await _answered_call(emulator, client)
    control_id = f"ctl-{verb}"
    result = await client.request(f"calling.{verb}", {"call_id": call_id, "control_id": control_id, **extra})
    assert result["code"] == "200"
    assert result["call_id"] == call_id
    assert result["control_id"] == control_id
    await client.wait_frame(
        lambda f: (
            f.get("params", {}).get("params", {}).get("control_id") == control_id
            and _phase(f["params"]["params"]) == phases[-1]
        )
    )
    events = [e for e in client.events(event_type) if e.get("control_id") == control_id]
    assert [_phase(e) for e in events] == phases
    assert all(e["call_id"] == call_id for e in events)
    if verb in ("send_fax", "receive_fax"):
        assert events[-1]["state"] == "finished"  # the SDK's FaxAction needs a top-level state
    if verb == "record":
        assert result["url"] == events[-1]["record"]["url"] == events[-1]["url"]
        assert events[-1]["record"]["duration"] > 0
        assert events[-1]["record"]["size"] > 0
    if verb == "tap":
        assert "source_device" in result


async def test_play_and_collect_play_events_then_result(emulator: Emulator, client: RawClient) -> None:
    call_id = await _answered_call(emulator, client)
    emulator.core.calls.calls[call_id].collect_result = {"type": "speech", "params": {"text": "sales"}}
    params = {"call_id": call_id, "control_id": "pc", "play": [{"type": "tts"}], "collect": {"speech": {}}}
    result = await client.request("calling.play_and_collect", params)
    assert result["control_id"] == "pc"
    collect = await client.wait_event("calling.call.collect", control_id="pc")
    assert collect["result"] == {"type": "speech", "params": {"text": "sales"}}
    assert [e["state"] for e in client.events("calling.call.play")] == ["playing", "finished"]


async def test_play_pause_resume_volume_stop(emulator: Emulator, client: RawClient) -> None:
    emulator.core.set_config({"durations": {"play": 30}})
    call_id = await _answered_call(emulator, client)
    ids = {"call_id": call_id, "control_id": "p"}
    await client.request("calling.play", {**ids, "play": [{"type": "silence"}]})
    for sub, state in (("pause", "paused"), ("resume", "playing")):
        result = await client.request(f"calling.play.{sub}", ids)
        assert result["code"] == "200"
        assert result["control_id"] == "p"
        await client.wait_frame(
            lambda f, s=state: f.get("params", {}).get("params", {}).get("state") == s, start=0
        )
    assert (await client.request("calling.play.volume", {**ids, "volume": -3}))["code"] == "200"
    await client.request("calling.play.stop", ids)
    await client.wait_event("calling.call.play", control_id="p", state="finished")
    assert [e["state"] for e in client.events("calling.call.play")] == [
        "playing",
        "paused",
        "playing",
        "finished",
    ]
    assert (await client.request("calling.play.stop", ids))["code"] == "404"


async def test_record_pause_and_stop(emulator: Emulator, client: RawClient) -> None:
    emulator.core.set_config({"durations": {"record": 30}})
    call_id = await _answered_call(emulator, client)
    ids = {"call_id": call_id, "control_id": "r"}
    await client.request("calling.record", {**ids, "record": {"audio": {}}})
    await client.request("calling.record.pause", ids)
    await client.wait_event("calling.call.record", state="paused")
    await client.request("calling.record.stop", ids)
    finished = await client.wait_event("calling.call.record", state="finished")
    assert finished["record"]["url"]


async def test_ai_runs_until_stopped_and_collect_start_input_timers(
    emulator: Emulator, client: RawClient
) -> None:
    call_id = await _answered_call(emulator, client)
    await client.request("calling.ai", {"call_id": call_id, "control_id": "ai", "prompt": {"text": "hi"}})
    assert "ai" in emulator.core.calls.calls[call_id].actions
    await client.request("calling.ai.stop", {"call_id": call_id, "control_id": "ai"})
    await client.wait_event("calling.call.ai", control_id="ai", state="finished")
    emulator.core.set_config({"durations": {"collect": 30}})
    await client.request("calling.collect", {"call_id": call_id, "control_id": "c", "digits": {"max": 1}})
    result = await client.request(
        "calling.collect.start_input_timers", {"call_id": call_id, "control_id": "c"}
    )
    assert result["code"] == "200"


async def test_second_transcribe_is_409(emulator: Emulator, client: RawClient) -> None:
    emulator.core.set_config({"durations": {"transcribe": 30}})
    call_id = await _answered_call(emulator, client)
    await client.request("calling.transcribe", {"call_id": call_id, "control_id": "t1"})
    result = await client.request("calling.transcribe", {"call_id": call_id, "control_id": "t2"})
    assert result["code"] == "409"


SIMPLE: list[tuple[str, dict[str, Any], str | None]] = [
    ("send_digits", {"control_id": "sd", "digits": "12#"}, "calling.call.send_digits"),
    ("refer", {"device": {"type": "sip", "params": {"to": "sip:a@b"}}}, "calling.call.refer"),
    ("transfer", {"dest": "https://example.invalid/swml"}, None),
    ("join_conference", {"name": "room1"}, "calling.conference"),
    ("hold", {}, "calling.call.hold"),
    ("unhold", {}, "calling.call.hold"),
    ("denoise", {}, "calling.call.denoise"),
    ("denoise.stop", {}, "calling.call.denoise"),
    ("echo", {"timeout": 0}, "calling.call.echo"),
    ("bind_digit", {"digits": "*1", "bind_method": "calling.play"}, None),
    ("clear_digit_bindings", {}, None),
    ("live_transcribe", {"action": {"start": {}}}, None),
    ("live_translate", {"action": {"start": {}}}, None),
    ("join_room", {"name": "r"}, "calling.call.room"),
    ("leave_room", {}, "calling.call.room"),
    ("user_event", {"event": {"a": 1}}, None),
    ("amazon_bedrock", {"prompt": {}}, None),
    ("ai_message", {"message_text": "hi"}, None),
    ("ai_hold", {}, None),
    ("ai_unhold", {}, None),
    ("queue.enter", {"control_id": "q", "queue_name": "support"}, "calling.call.queue"),
    ("queue.leave", {"control_id": "q", "queue_name": "support"}, "calling.call.queue"),
    ("some_future_verb", {}, None),
]


@pytest.mark.parametrize(("verb", "extra", "event_type"), SIMPLE, ids=[s[0] for s in SIMPLE])
async def test_command_result_and_event(emulator, client, verb, extra, event_type) -> None:
    call_id = await _answered_call(emulator, client)
    result = await client.request(f"calling.{verb}", {"call_id": call_id, "node_id": "n", **extra})
    assert result["code"] == "200"
    assert result["call_id"] == call_id
    if verb == "join_conference":
        assert result["conference_id"]
        leave = await client.request(
            "calling.leave_conference", {"call_id": call_id, "conference_id": result["conference_id"]}
        )
        assert leave["code"] == "200"
    if event_type is not None:
        event = await client.wait_event(event_type)
        assert event.get("call_id") == call_id or "conference_id" in event


async def test_connect_and_disconnect(emulator: Emulator, client: RawClient) -> None:
    call_id = await _answered_call(emulator, client)
    devices = [[{"type": "phone", "params": {"to_number": "+1", "from_number": "+2"}}]]
    assert (await client.request("calling.connect", {"call_id": call_id, "devices": devices}))[
        "code"
    ] == "200"
    connected = await client.wait_event("calling.call.connect", connect_state="connected")
    peer_id = connected["peer"]["call_id"]
    assert [e["connect_state"] for e in client.events("calling.call.connect")] == ["connecting", "connected"]
    await client.request("calling.disconnect", {"call_id": call_id})
    await client.wait_event("calling.call.connect", connect_state="disconnected")
    await client.wait_event("calling.call.state", call_id=peer_id, call_state="ended")


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("calling.play", {"control_id": "x", "play": []}),
        ("calling.play", {"call_id": "x", "play": []}),
        ("calling.play", {"call_id": "x", "control_id": "x"}),
        ("calling.record.stop", {"call_id": "x"}),
        ("calling.dial", {"tag": "t"}),
        ("messaging.send", {"context": "c", "to_number": "1", "from_number": "2"}),
        ("calling.answer", {"call_id": 5}),
    ],
)
async def test_missing_params_are_invalid_params(client: RawClient, method: str, params: dict) -> None:
    answer = await client.call(method, params)
    assert answer["error"]["code"] == -32602
    assert answer["error"]["data"]["signalwire_error_code"] == "INVALID_PARAMS"


async def test_unknown_non_calling_method(client: RawClient) -> None:
    answer = await client.call("blade.execute", {})
    assert answer["error"]["code"] == -32601
    assert (await client.request("signalwire.ping", {}))["timestamp"] > 0
