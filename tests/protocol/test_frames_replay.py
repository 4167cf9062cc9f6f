"""Replays every recorded sequence of ``tests/fixtures/relay-frames/`` through the protocol core.

Client→server frames are produced by the core (requests registered under the
recorded ids, acks produced by ``receive``) and compared with the recording;
server→client frames are fed in and their effect on calls, actions, dials and
messages is checked file by file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay_actors.protocol import constants as c
from relay_actors.protocol.actions import ACTION_KINDS
from relay_actors.protocol.calls import CallCore
from relay_actors.protocol.routing import EventRouter, Route
from relay_actors.protocol.session import (
    ClientSession,
    Connected,
    ConnectFailed,
    Credentials,
    DisconnectRequested,
    EventReceived,
    Item,
    PingReceived,
    RequestFailed,
    ResponseReceived,
)

# The recordings live in the repository; a missing file fails its test, it never skips.
FRAMES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "relay-frames"
FILES = sorted(p.name for p in FRAMES_DIR.glob("*.json"))


class Replay:
    """Drives one ClientSession + EventRouter through a recorded sequence."""

    def __init__(self, steps: list[dict[str, Any]]) -> None:
        self.steps = steps
        first_connect = next(
            (s["frame"] for s in steps if s["frame"].get("method") == c.METHOD_CONNECT), None
        )
        auth = first_connect["params"]["authentication"] if first_connect else {"project": "p", "token": "t"}
        contexts = first_connect["params"].get("contexts", []) if first_connect else []
        self.session = ClientSession(Credentials(**auth), contexts=contexts)
        if first_connect is None:
            # A mid-session recording: the socket is already authenticated.
            self.session.connected = True
            self.session.protocol = "signalwire_recorded"
        self.router: EventRouter[CallCore] = EventRouter()
        self.items: list[Item] = []
        self.finished_actions: list[Any] = []
        self.ended_calls: list[str] = []
        self.offers: list[str] = []
        self.requests: dict[str, str] = {}
        self.replies: list[bytes] = []

    def call(self, call_id: str) -> CallCore:
        core = self.router.calls.get(call_id)
        if core is None:
            core = CallCore(call_id)
            self.router.add_call(call_id, core)
        return core

    def client_frame(self, frame: dict[str, Any]) -> None:
        if "method" not in frame:
            # An answer from the client: it must be exactly what the core produced.
            assert self.replies, f"the core produced no reply for {frame}"
            assert orjson.loads(self.replies.pop(0)) == frame
            return
        method, params, req_id = frame["method"], frame["params"], frame["id"]
        if method == c.METHOD_CONNECT:
            if "protocol" in params and not self.session.protocol:
                # A recording that starts at the reconnect: seed the state saved before the drop.
                self.session.restore(params)
            _, data = self.session.start_connect()
            sent = orjson.loads(data)
            # Same params as recorded (agent aside); re-key the pending id to the recorded one.
            assert {k: v for k, v in sent["params"].items() if k != "agent"} == {
                k: v for k, v in params.items() if k != "agent"
            }
            self.session.pending[req_id] = self.session.pending.pop(sent["id"])
            return
        if method.startswith("calling.") and params.get("control_id"):
            verb = method[len("calling.") :]
            if verb in ACTION_KINDS:
                self.call(params["call_id"]).actions.start(verb, params["control_id"])
        elif method.startswith("calling.") and params.get("call_id"):
            self.call(params["call_id"])
        if method == "calling.dial":
            self.router.dials.start(params["tag"])
        rid, data = self.session.request(method, params, req_id=req_id)
        assert rid == req_id
        assert data is None or orjson.loads(data) == frame

    def server_frame(self, frame: dict[str, Any]) -> None:
        reply, items = self.session.receive(orjson.dumps(frame))
        if reply is not None:
            self.replies.append(reply)
        for item in items:
            self.items.append(item)
            if isinstance(item, Connected):
                for queued in self.session.take_queued():
                    assert orjson.loads(queued)["method"]
            if isinstance(item, ResponseReceived) and item.method == "messaging.send":
                self.router.messages.sent(item.result["message_id"])
            if isinstance(item, EventReceived):
                self.route(item.event)

    def route(self, event: Any) -> None:
        routed = self.router.route(event)
        if routed.route is Route.OFFER:
            self.offers.append(event.call_id)
            self.router.add_call(event.call_id, CallCore.from_params(event.params))
        elif routed.route is Route.DIAL_LEG:
            self.router.add_call(event.call_id, CallCore.from_params(event.params, "outbound"))
            self.route(event)
        elif routed.route is Route.CALL:
            assert routed.target is not None
            update = routed.target.apply(event)
            self.finished_actions.extend(update.finished)
            if routed.call_ended:
                self.ended_calls.append(event.call_id)
        self.routes = [*getattr(self, "routes", []), routed]

    def run(self) -> Replay:
        for step in self.steps:
            if step["dir"] == "client->server":
                self.client_frame(step["frame"])
            else:
                self.server_frame(step["frame"])
        return self


def replay(name: str) -> Replay:
    return Replay(json.loads((FRAMES_DIR / name).read_text())).run()


def kinds(r: Replay, cls: type) -> list[Any]:
    return [i for i in r.items if isinstance(i, cls)]


def test_every_frame_file_is_covered() -> None:
    assert FRAMES_DIR.is_dir(), f"{FRAMES_DIR} is missing: the relay-frames fixtures belong to the repository"
    assert len(FILES) >= 16
    assert set(FILES) == set(EXPECTATIONS)


def _connect_ok(r: Replay) -> None:
    (conn,) = kinds(r, Connected)
    assert conn.protocol.startswith("signalwire_") and not conn.restored
    assert r.session.authorization_state  # kept for the next connect


def _connect_bad_auth(r: Replay) -> None:
    failures = kinds(r, ConnectFailed)
    assert len(failures) == 3
    assert all(
        f.error.code == -32000 and f.error.data["signalwire_error_code"] == "AUTH_REQUIRED"
        for f in failures
    )
    assert not r.session.connected


def _connect_resume(r: Replay) -> None:
    (conn,) = kinds(r, Connected)
    assert conn.restored
    assert r.session.authorization_state.startswith("Q2lwaGVydGV4dEV4YW1wbGVUd28")  # the fresh blob won
    (play_ok,) = kinds(r, ResponseReceived)
    assert play_ok.result["code"] == "200"


def _inbound(r: Replay) -> None:
    assert len(r.offers) == 1
    assert r.ended_calls == r.offers
    assert r.offers[0] not in r.router.calls  # forgotten once ended
    assert [i.method for i in kinds(r, ResponseReceived)] == ["calling.answer", "calling.end"]


def _dial_answered(r: Replay) -> None:
    (done,) = [x for x in r.routes if x.route is Route.DIAL_DONE]
    assert done.dial is not None and done.dial.answered
    winner = done.dial.call["call_id"]
    assert winner in r.router.calls and r.router.calls[winner].state == c.CALL_STATE_ANSWERED
    assert len(done.dial.losers) == 1 and done.dial.losers[0] in r.ended_calls
    assert not r.router.dials.pending


def _dial_failed(r: Replay) -> None:
    (done,) = [x for x in r.routes if x.route is Route.DIAL_DONE]
    assert done.dial is not None and not done.dial.answered
    assert r.ended_calls and not r.router.calls


def _action_done(kind: str, terminal_check: Any) -> Any:
    def check(r: Replay) -> None:
        (record,) = r.finished_actions
        assert record.kind.name == kind and record.done
        terminal_check(record.result)

    return check


def _call_gone(r: Replay) -> None:
    failures = kinds(r, RequestFailed)
    assert [f.error.code for f in failures] == [404, 410]
    assert all(f.error.call_gone for f in failures)
    # The pending play resolved with the ended event instead of hanging.
    (record,) = r.finished_actions
    assert record.result.params["call_state"] == "ended"


def _messaging_send(r: Replay) -> None:
    states = [x for x in r.routes if x.route is Route.MESSAGE_STATE]
    assert [x.message.state for x in states][-1] == "delivered"
    assert states[-1].message_done and not r.router.messages.tracked


def _messaging_receive(r: Replay) -> None:
    assert [x.route for x in r.routes] == [Route.MESSAGE_IN]
    assert r.routes[0].event.params["body"]


def _disconnect_restart(r: Replay) -> None:
    (disc,) = kinds(r, DisconnectRequested)
    assert disc.restart
    (conn,) = kinds(r, Connected)
    assert not conn.restored


def _ping(r: Replay) -> None:
    assert len(kinds(r, PingReceived)) == 1
    (pong,) = kinds(r, ResponseReceived)
    assert pong.method == c.METHOD_PING
    assert r.session.pending  # the last client ping is still waiting for its answer


def _receive_unreceive(r: Replay) -> None:
    ok = kinds(r, ResponseReceived)
    assert [i.method for i in ok] == ["signalwire.receive", "signalwire.unreceive"]
    (failed,) = kinds(r, RequestFailed)
    assert failed.error.code == 402 and failed.error.failure is None
    assert r.offers


EXPECTATIONS = {
    "connect_ok.json": _connect_ok,
    "connect_bad_auth.json": _connect_bad_auth,
    "connect_resume.json": _connect_resume,
    "inbound_call_answer_hangup.json": _inbound,
    "dial_answered.json": _dial_answered,
    "dial_failed.json": _dial_failed,
    "play_finished.json": _action_done("play", lambda ev: ev.params["state"] == "finished"),
    "play_and_collect_digits.json": _action_done(
        "play_and_collect",
        lambda ev: ev.event_type == c.EVENT_CALL_COLLECT and ev.params["result"]["type"] == "digit",
    ),
    "record_finished.json": _action_done("record", lambda ev: ev.url and ev.duration and ev.size),
    "detect_machine.json": _action_done("detect", lambda ev: ev.detect_event == "MACHINE"),
    "call_gone_404.json": _call_gone,
    "messaging_send_delivered.json": _messaging_send,
    "messaging_receive.json": _messaging_receive,
    "server_disconnect_restart.json": _disconnect_restart,
    "ping.json": _ping,
    "receive_unreceive.json": _receive_unreceive,
}


# Parametrized by the expectations, not by the files found: a missing file is a failure, not an empty set.
@pytest.mark.parametrize("name", sorted(EXPECTATIONS))
def test_replay(name: str) -> None:
    r = replay(name)
    assert not r.replies, "every ack the core produced appears in the recording"
    assert not [i for i in r.items if type(i).__name__ == "ProtocolViolation"]
    EXPECTATIONS[name](r)
