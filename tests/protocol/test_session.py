"""ClientSession: connect params, correlation, acks, pings, disconnect, queueing, bad input."""

from __future__ import annotations

import orjson
import pytest

from relay_actors.errors import ConfigError, RelayError
from relay_actors.protocol import codec
from relay_actors.protocol import constants as c
from relay_actors.protocol.session import (
    ClientSession,
    Connected,
    ConnectFailed,
    Credentials,
    DisconnectRequested,
    EventReceived,
    PingReceived,
    ProtocolViolation,
    RequestFailed,
    ResponseReceived,
    check_result,
)


def event_frame(event_type: str, params: object, fid: str = "e1") -> bytes:
    return orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": fid,
            "method": "signalwire.event",
            "params": {"event_type": event_type, "timestamp": 12.5, "params": params},
        }
    )


def connected_session() -> ClientSession:
    s = ClientSession(Credentials("proj", "tok"), contexts=["office"])
    rid, _ = s.start_connect()
    s.receive(codec.encode_result(rid, {"protocol": "signalwire_abc", "identity": "i"}))
    return s


def test_credentials_never_printed() -> None:
    creds = Credentials("proj-secret", "tok-secret")
    assert "secret" not in repr(creds) and "secret" not in str(creds)
    with pytest.raises(ConfigError):
        Credentials("proj")
    assert Credentials(jwt_token="j").authentication() == {"jwt_token": "j"}


def test_connect_params_fresh_and_resume() -> None:
    s = ClientSession(Credentials("p", "t"), contexts=["a", "b"])
    params = orjson.loads(s.start_connect()[1])["params"]
    assert params["event_acks"] is True and params["contexts"] == ["a", "b"]
    assert params["authentication"] == {"project": "p", "token": "t"}
    assert "protocol" not in params and "authorization_state" not in params
    s.restore({"protocol": "signalwire_x", "authorization_state": "a:b"})
    params = orjson.loads(s.start_connect()[1])["params"]
    assert params["protocol"] == "signalwire_x" and params["authorization_state"] == "a:b"
    assert "contexts" not in ClientSession(Credentials(jwt_token="j")).connect_params()


def test_connect_result_is_not_code_checked_and_failure_is_typed() -> None:
    s = ClientSession(Credentials("p", "t"))
    rid, _ = s.start_connect()
    _, items = s.receive(codec.encode_result(rid, {"code": "500", "protocol": "signalwire_1"}))
    assert isinstance(items[0], Connected) and s.connected and s.protocol == "signalwire_1"
    s2 = ClientSession(Credentials("p", "t"))
    rid, _ = s2.start_connect()
    _, items = s2.receive(
        codec.encode_error(rid, -32000, "Authentication failed", {"signalwire_error_code": "AUTH_REQUIRED"})
    )
    (fail,) = items
    assert isinstance(fail, ConnectFailed) and fail.error.code == -32000 and fail.error.failure is None
    assert not s2.connected


def test_event_is_acked_before_delivery_and_duplicates_delivered_once() -> None:
    s = connected_session()
    reply, items = s.receive(
        event_frame("calling.call.play", {"call_id": "c", "control_id": "x", "state": "playing"})
    )
    assert orjson.loads(reply) == {"jsonrpc": "2.0", "id": "e1", "result": {}}
    (item,) = items
    assert isinstance(item, EventReceived) and item.event.timestamp == 12.5 and item.event.call_id == "c"
    reply2, items2 = s.receive(
        event_frame("calling.call.play", {"call_id": "c", "control_id": "x", "state": "playing"})
    )
    assert reply2 == reply and items2 == [] and s.stats["duplicate_events"] == 1


@pytest.mark.parametrize("params", [None, [], "str", 5])
def test_event_with_bad_inner_params_is_acked_and_counted(params: object) -> None:
    s = connected_session()
    reply, items = s.receive(event_frame("calling.call.state", params, fid="bad"))
    assert orjson.loads(reply)["id"] == "bad"
    (item,) = items
    assert isinstance(item, ProtocolViolation) and item.error.failure == "invalid_params"


@pytest.mark.parametrize("outer", [None, [], "x", 1])
def test_request_with_bad_outer_params_is_a_violation_and_still_acked(outer: object) -> None:
    s = connected_session()
    reply, items = s.receive(
        orjson.dumps({"jsonrpc": "2.0", "id": "z", "method": "signalwire.event", "params": outer})
    )
    assert orjson.loads(reply) == {"jsonrpc": "2.0", "id": "z", "result": {}}
    assert isinstance(items[0], ProtocolViolation) and items[0].error.failure == "invalid_params"


def test_unknown_event_type_is_delivered_and_counted() -> None:
    s = connected_session()
    _, items = s.receive(event_frame("calling.call.brand_new", {"call_id": "c"}))
    assert isinstance(items[0], EventReceived)
    assert isinstance(items[1], ProtocolViolation) and items[1].error.failure == "unknown_event"
    _, items = s.receive(event_frame("", {"call_id": "c"}, fid="e2"))
    assert isinstance(items[0], ProtocolViolation)


def test_authorization_state_kept_and_empty_never_overwrites() -> None:
    s = connected_session()
    s.receive(event_frame(c.EVENT_AUTHORIZATION_STATE, {"authorization_state": "a:b"}, "a1"))
    s.receive(event_frame(c.EVENT_AUTHORIZATION_STATE, {"authorization_state": ""}, "a2"))
    assert s.authorization_state == "a:b"
    assert "a:b" not in repr(
        s.receive(event_frame(c.EVENT_AUTHORIZATION_STATE, {"authorization_state": "a:b"}, "a3"))[1]
    )


def test_ping_and_disconnect() -> None:
    s = connected_session()
    s.restore({"protocol": "signalwire_abc", "authorization_state": "x:y"})
    reply, items = s.receive(b'{"jsonrpc":"2.0","id":"p1","method":"signalwire.ping","params":{}}')
    assert orjson.loads(reply)["result"] == {} and isinstance(items[0], PingReceived)
    reply, items = s.receive(b'{"jsonrpc":"2.0","id":"d1","method":"signalwire.disconnect","params":{}}')
    assert items == [DisconnectRequested(False)] and s.protocol == "signalwire_abc"
    reply, items = s.receive(
        b'{"jsonrpc":"2.0","id":"d2","method":"signalwire.disconnect","params":{"restart":true}}'
    )
    assert orjson.loads(reply)["id"] == "d2"
    assert items == [DisconnectRequested(True)] and s.protocol == "" and s.authorization_state == ""


def test_result_codes() -> None:
    assert check_result("calling.answer", {"code": "200"}) == {"code": "200"}
    assert check_result("calling.answer", {"code": "204"})
    assert check_result("calling.answer", ["x"]) == {"raw": ["x"]}
    for bad, code in (("2000", 2000), ("199", 199), ("300", 300), ("404", 404), ("abc", -1)):
        with pytest.raises(RelayError) as info:
            check_result("calling.answer", {"code": bad, "message": "m"})
        # As the SDK: an int, -1 when the server's code is not a number; a server error has no failure.
        assert type(info.value.code) is int and info.value.code == code and info.value.failure is None
    assert RelayError("abc", "m").code == -1 and RelayError("abc", "m").failure == "abc"


def test_request_correlation_and_unknown_ids() -> None:
    s = connected_session()
    rid, frame = s.request("calling.answer", {"call_id": "c", "node_id": "n"})
    assert frame is not None and orjson.loads(frame)["method"] == "calling.answer"
    _, items = s.receive(codec.encode_result(rid, {"code": "404", "message": "gone"}))
    (fail,) = items
    assert isinstance(fail, RequestFailed) and fail.error.call_gone
    _, items = s.receive(codec.encode_result(rid, {"code": "200"}))  # answered twice
    assert isinstance(items[0], ProtocolViolation) and items[0].error.failure == "unknown_response"
    rid2, _ = s.request("calling.play", {})
    _, items = s.receive(codec.encode_result(rid2, "not-a-dict"))
    assert items == [ResponseReceived(rid2, "calling.play", {"raw": "not-a-dict"})]
    _, items = s.receive(codec.encode_error("nope", -32601, "x"))
    assert isinstance(items[0], ProtocolViolation)


def test_queue_while_disconnected_is_bounded_and_flushed_in_order() -> None:
    s = ClientSession(Credentials("p", "t"), max_queued=3)
    ids = [s.request("calling.play", {"n": i})[0] for i in range(3)]
    with pytest.raises(RelayError) as info:
        s.request("calling.play", {"n": 3})
    assert info.value.failure == "queue_full"
    rid, _ = s.start_connect()
    s.receive(codec.encode_result(rid, {"protocol": "signalwire_q"}))
    frames = [orjson.loads(f) for f in s.take_queued()]
    assert [f["params"]["n"] for f in frames] == [0, 1, 2] and [f["id"] for f in frames] == ids
    assert s.take_queued() == []


def test_connection_lost_fails_in_flight_keeps_queued() -> None:
    s = connected_session()
    in_flight, _ = s.request("calling.answer", {})
    s.connected = False
    queued, frame = s.request("calling.end", {})
    assert frame is None
    lost = s.connection_lost()
    assert lost == [(in_flight, "calling.answer")]
    assert queued in s.pending and queued in s.queued


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"not json", "invalid_json"),
        (b"[1,2]", "not_an_object"),
        (b'"s"', "not_an_object"),
        (b"{}", "invalid_frame"),
        (b'{"method": 5}', "invalid_frame"),
        (b'{"id": {"a": 1}, "result": {}}', "invalid_frame"),
        (b'{"result": {}}', "invalid_frame"),
        (b"x" * (codec.MAX_FRAME_SIZE + 1), "frame_too_large"),
    ],
)
def test_malformed_frames(data: bytes, code: str) -> None:
    s = connected_session()
    reply, items = s.receive(data)
    assert reply is None
    (item,) = items
    assert isinstance(item, ProtocolViolation) and item.error.failure == code and item.error.code == -1
    assert s.stats[f"violation.{code}"] == 1


def test_unknown_server_request_is_answered_with_an_error() -> None:
    s = connected_session()
    reply, items = s.receive(b'{"jsonrpc":"2.0","id":"q","method":"blade.execute","params":{}}')
    assert orjson.loads(reply)["error"]["code"] == -32601
    assert items[0].error.failure == "unknown_method"
