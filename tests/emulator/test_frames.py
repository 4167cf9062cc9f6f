"""The example frame sequences of tests/fixtures/relay-frames: same shapes from the emulator.

For each file the emulator is driven through the file's client->server requests
(ids, call ids and credentials replaced by live ones) and every server->client
frame of the file must appear, in order, among the frames received: same kind
(result/error/method), same event type, same states, same key sets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import RawClient, wait_until

# In the repository: a missing file fails the test that reads it (FileNotFoundError), never skips it.
FRAMES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "relay-frames"

_STATE_KEYS = ("state", "call_state", "message_state", "dial_state", "connect_state")


def _load(name: str) -> list[dict[str, Any]]:
    return json.loads((FRAMES_DIR / f"{name}.json").read_text())


def _signature(frame: dict[str, Any]) -> tuple[Any, ...]:
    """What must match: kind, method, event type, states and key sets."""
    if "method" in frame:
        params = frame.get("params", {})
        if frame["method"] != "signalwire.event":
            return ("request", frame["method"], tuple(sorted(params)))
        inner = params.get("params", {})
        states = tuple(inner.get(k) for k in _STATE_KEYS)
        phase = (inner.get("fax") or {}).get("type") or ((inner.get("detect") or {}).get("params") or {}).get(
            "event"
        )
        return ("event", params.get("event_type"), states, phase, tuple(sorted(inner)))
    if "error" in frame:
        return ("error", frame["error"].get("code"), frame["error"].get("data"))
    result = frame.get("result")
    keys = tuple(sorted(result)) if isinstance(result, dict) else ()
    code = result.get("code") if isinstance(result, dict) else None
    return ("result", code, keys)


def _expected(name: str) -> list[tuple[Any, ...]]:
    return [_signature(e["frame"]) for e in _load(name) if e["dir"] == "server->client"]


def _requests(name: str) -> list[dict[str, Any]]:
    return [e["frame"] for e in _load(name) if e["dir"] == "client->server" and "method" in e["frame"]]


async def _assert_shapes(name: str, *clients: RawClient) -> None:
    # The authorization state push may come at any point after connect: check it apart.
    auth = "signalwire.authorization.state"
    expected = [s for s in _expected(name) if s[1] != auth]
    received = [_signature(f) for c in clients for f in c.frames]
    if len(expected) != len(_expected(name)):
        assert any(s[1] == auth for s in received), f"{name}: no {auth} event"
    received = [s for s in received if s[1] != auth]
    position = 0
    for signature in expected:
        try:
            position = received.index(signature, position) + 1
        except ValueError:
            raise AssertionError(f"{name}: {signature} not received in order; got {received}") from None


async def _answered_call(emulator: Emulator, client: RawClient) -> str:
    [call_id] = emulator.core.inject_calls("office")
    await client.wait_event("calling.call.receive", call_id=call_id)
    await client.request("calling.answer", {"call_id": call_id})
    await client.wait_event("calling.call.state", call_id=call_id, call_state="answered")
    client.frames.clear()
    return call_id


async def _replay_on_call(emulator: Emulator, client: RawClient, name: str, call_id: str) -> None:
    for frame in _requests(name):
        await client.request(frame["method"], {**frame["params"], "call_id": call_id})


@pytest.fixture
async def office(client_factory) -> RawClient:
    return await client_factory(contexts=["office", "support"])


async def test_connect_ok(emulator: Emulator, client_factory) -> None:
    client = await client_factory(connect=False)
    await client.connect(emulator.project, emulator.token, contexts=["office", "support"])
    await client.wait_event("signalwire.authorization.state")
    await _assert_shapes("connect_ok", client)


async def test_connect_bad_auth(emulator: Emulator, client_factory) -> None:
    clients = []
    for frame in _requests("connect_bad_auth"):
        client = await client_factory(connect=False)
        await client.call("signalwire.connect", frame["params"])
        clients.append(client)
    await _assert_shapes("connect_bad_auth", *clients)


async def test_connect_resume(emulator: Emulator, client_factory) -> None:
    first = await client_factory(contexts=["office"])
    call_id = await _answered_call(emulator, first)
    emulator.core.set_config({"durations": {"play": 0.05}})
    emulator.core.drop(first.protocol)
    await wait_until(lambda: not emulator.core.session(first.protocol).attached)
    emulator.core.calls.calls[call_id].emit(
        "calling.call.play", {"control_id": "queued", "state": "finished"}
    )
    second = await client_factory(connect=False)
    await second.connect(
        emulator.project,
        emulator.token,
        contexts=["office"],
        protocol=first.protocol,
        authorization_state=first.authorization_state,
    )
    play = _requests("connect_resume")[1]
    await second.request("calling.play", {**play["params"], "call_id": call_id})
    await second.wait_event("signalwire.authorization.state")
    await _assert_shapes("connect_resume", second)


async def test_inbound_call_answer_hangup(emulator: Emulator, office: RawClient) -> None:
    [call_id] = emulator.core.inject_calls("office")
    await office.wait_event("calling.call.receive", call_id=call_id)
    await _replay_on_call(emulator, office, "inbound_call_answer_hangup", call_id)
    await office.wait_event("calling.call.state", call_state="ended")
    await _assert_shapes("inbound_call_answer_hangup", office)


@pytest.mark.parametrize("name", ["dial_answered", "dial_failed"])
async def test_dial(emulator: Emulator, office: RawClient, name: str) -> None:
    emulator.core.set_config({"dial_outcomes": {"+15551110002": "no-answer", "+15551110003": "failure"}})
    [dial] = _requests(name)
    await office.request("calling.dial", dial["params"])
    await office.wait_event(
        "calling.call.dial", dial_state="answered" if name == "dial_answered" else "failed"
    )
    await _assert_shapes(name, office)


async def test_play_finished_with_pause_resume(emulator: Emulator, office: RawClient) -> None:
    emulator.core.set_config({"durations": {"play": 0.3}})
    call_id = await _answered_call(emulator, office)
    await _replay_on_call(emulator, office, "play_finished", call_id)
    await office.wait_event("calling.call.play", state="finished")
    await _assert_shapes("play_finished", office)


@pytest.mark.parametrize("name", ["play_and_collect_digits", "record_finished", "detect_machine"])
async def test_actions(emulator: Emulator, office: RawClient, name: str) -> None:
    emulator.core.set_config(
        {"durations": {"record": 5}, "detect_results": {"machine": ["MACHINE", "NOT_READY", "READY"]}}
    )
    call_id = await _answered_call(emulator, office)
    await _replay_on_call(emulator, office, name, call_id)
    expected_last = _load(name)[-2]["frame"]["params"]
    await office.wait_event(expected_last["event_type"])
    await wait_until(lambda: len(office.frames) >= len(_expected(name)))
    if name == "detect_machine":
        await office.wait_frame(
            lambda f: "finished" in str(f.get("params", {}).get("params", {}).get("detect"))
        )
    await _assert_shapes(name, office)


async def test_messaging_send_delivered(emulator: Emulator, client_factory) -> None:
    client = await client_factory()
    [send] = _requests("messaging_send_delivered")
    await client.request("messaging.send", {**send["params"], "context": client.protocol})
    await client.wait_event("messaging.state", message_state="delivered")
    await _assert_shapes("messaging_send_delivered", client)


async def test_messaging_receive(emulator: Emulator, office: RawClient) -> None:
    emulator.core.messaging.inject("office", media=["https://m.invalid/1.jpg"])
    await office.wait_event("messaging.receive")
    [send] = _requests("messaging_receive")
    await office.request("messaging.send", send["params"])
    await _assert_shapes("messaging_receive", office)


async def test_server_disconnect_restart(emulator: Emulator, client_factory) -> None:
    first = await client_factory(contexts=["office", "support"])
    await emulator.core.disconnect(first.protocol, restart=True)
    second = await client_factory(connect=False)
    await second.connect(emulator.project, emulator.token, contexts=["office", "support"])
    await second.wait_event("signalwire.authorization.state")
    await _assert_shapes("server_disconnect_restart", first, second)


async def test_ping(emulator: Emulator, office: RawClient) -> None:
    office.frames.clear()
    emulator.core.session(office.protocol).request("signalwire.ping", {})
    await office.wait_frame(lambda f: f.get("method") == "signalwire.ping")
    await office.request("signalwire.ping", {})
    await _assert_shapes("ping", office)


async def test_receive_unreceive(emulator: Emulator, office: RawClient) -> None:
    emulator.core.set_config({"receive_402": ["premium-support"]})
    receive, unreceive, paid = _requests("receive_unreceive")
    await office.request(receive["method"], receive["params"])
    emulator.core.inject_calls("sales")
    await office.wait_event("calling.call.receive", context="sales")
    await office.request(unreceive["method"], unreceive["params"])
    await office.request(paid["method"], paid["params"])
    await _assert_shapes("receive_unreceive", office)


async def test_call_gone_404(emulator: Emulator, office: RawClient) -> None:
    call_id = await _answered_call(emulator, office)
    emulator.core.hangup(call_id)
    await office.wait_event("calling.call.state", call_state="ended")
    play, end = _requests("call_gone_404")
    await office.request(play["method"], {**play["params"], "call_id": "unknown-call"})
    await office.request(end["method"], {**end["params"], "call_id": call_id})
    await _assert_shapes("call_gone_404", office)
