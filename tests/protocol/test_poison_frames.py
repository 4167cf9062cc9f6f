"""Poison frames: every server request with an id is answered, and wrongly typed
event fields are dropped and counted instead of raising further down."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from relay_actors.protocol import codec
from relay_actors.protocol import constants as c
from relay_actors.protocol.calls import CallCore
from relay_actors.protocol.routing import EventRouter, Route
from relay_actors.protocol.session import (
    ClientSession,
    Credentials,
    DisconnectRequested,
    EventReceived,
    Item,
    PingReceived,
    ProtocolViolation,
)


def session(defer_acks: bool = False) -> ClientSession:
    s = ClientSession(Credentials("p", "t"), defer_acks=defer_acks)
    rid, _ = s.start_connect()
    s.receive(codec.encode_result(rid, {"protocol": "signalwire_p"}))
    return s


def request(fid: Any, method: Any, params: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": fid, "method": method, "params": params})


def event(event_type: str, inner: Any, fid: Any = "e1", timestamp: Any = 1.5) -> bytes:
    outer = {"event_type": event_type, "timestamp": timestamp, "params": inner}
    return request(fid, c.METHOD_EVENT, outer)


def violations(items: list[Item]) -> list[str]:
    return [i.error.failure or "" for i in items if isinstance(i, ProtocolViolation)]


def delivered(items: list[Item]) -> EventReceived:
    (received,) = [i for i in items if isinstance(i, EventReceived)]
    return received


@pytest.mark.parametrize("defer_acks", [False, True])
@pytest.mark.parametrize("outer", [None, [], ["x"], "str", 7, True])
def test_event_with_unreadable_params_is_acked(defer_acks: bool, outer: Any) -> None:
    """Old code: the decoder raised before the ack was built; the server redelivered for ever."""
    s = session(defer_acks)
    reply, items = s.receive(request("ev-1", c.METHOD_EVENT, outer))
    assert reply is not None and orjson.loads(reply) == {"jsonrpc": "2.0", "id": "ev-1", "result": {}}
    assert violations(items) == ["invalid_params"] and s.stats["violation.invalid_params"] == 1
    # The session goes on: a good event right after is delivered.
    _, items = s.receive(event(c.EVENT_CALL_PLAY, {"call_id": "c", "state": "playing"}, "ev-2"))
    assert delivered(items).event.call_id == "c"


def test_ping_and_disconnect_with_unreadable_params_are_answered() -> None:
    s = session()
    s.restore({"protocol": "signalwire_p", "authorization_state": "a:b"})
    reply, items = s.receive(request("p1", c.METHOD_PING, None))
    assert orjson.loads(reply) == {"jsonrpc": "2.0", "id": "p1", "result": {}}
    assert violations(items) == ["invalid_params"] and any(isinstance(i, PingReceived) for i in items)
    reply, items = s.receive(request("d1", c.METHOD_DISCONNECT, "restart"))
    assert orjson.loads(reply) == {"jsonrpc": "2.0", "id": "d1", "result": {}}
    # Unreadable restart flag: treated as restart false, the resume state is kept.
    assert DisconnectRequested(False) in items and s.authorization_state == "a:b"


def test_bad_or_unknown_method_with_an_id_gets_a_json_rpc_error() -> None:
    s = session()
    bad_method = ["invalid_frame"]
    unknown = ["invalid_params", "unknown_method"]
    cases = ((5, -32600, bad_method), ("", -32600, bad_method), (["x"], -32600, bad_method))
    for method, code, counted in (*cases, ("blade.execute", -32601, unknown)):
        reply, items = s.receive(request("q", method, None))
        answer = orjson.loads(reply)
        assert answer["id"] == "q" and answer["error"]["code"] == code, method
        assert violations(items) == counted


def test_notifications_get_no_answer() -> None:
    s = session()
    for params in (None, [], {}):
        reply, items = s.receive(orjson.dumps({"jsonrpc": "2.0", "method": c.METHOD_EVENT, "params": params}))
        assert reply is None and len(items) == 1


@pytest.mark.parametrize("defer_acks", [False, True])
def test_numeric_ids_are_echoed_as_numbers(defer_acks: bool) -> None:
    """Old code answered id 7 with id "7": the server could not match the ack."""
    s = session(defer_acks)
    reply, items = s.receive(event(c.EVENT_CALL_PLAY, {"call_id": "c"}, fid=7))
    if defer_acks:
        assert reply is None
        reply = s.ack(delivered(items).ack_id or "")
    assert orjson.loads(reply)["id"] == 7
    reply, _ = s.receive(request(8.5, c.METHOD_PING, {}))
    assert orjson.loads(reply)["id"] == 8.5
    reply, _ = s.receive(request(9, c.METHOD_EVENT, None))
    assert orjson.loads(reply)["id"] == 9


def route_into(router: EventRouter[CallCore], items: list[Item]) -> None:
    """What a client does with the items: register offers and legs, apply the rest."""
    for item in items:
        if isinstance(item, EventReceived):
            routed = router.route(item.event)
            if routed.route in (Route.OFFER, Route.DIAL_LEG):
                router.add_call(item.event.call_id, CallCore.from_params(item.event.params))
            elif routed.route is Route.CALL and routed.target is not None:
                routed.target.apply(item.event)


def test_list_valued_call_state_is_dropped_not_raised() -> None:
    """Old code: TypeError (unhashable list) in CallCore.apply and CallCore.from_params."""
    s = session()
    router: EventRouter[CallCore] = EventRouter()
    _, items = s.receive(event(c.EVENT_CALL_RECEIVE, {"call_id": "c1", "call_state": ["ringing"]}, "o1"))
    route_into(router, items)
    assert violations(items) == ["invalid_field"] and router.calls["c1"].state == c.CALL_STATE_CREATED
    _, items = s.receive(event(c.EVENT_CALL_STATE, {"call_id": "c1", "call_state": ["ended"]}, "s1"))
    route_into(router, items)
    assert violations(items) == ["invalid_field"] and "call_state" not in delivered(items).event.params
    # The call goes on: a well-formed end still ends it.
    _, items = s.receive(event(c.EVENT_CALL_STATE, {"call_id": "c1", "call_state": "ended"}, "s2"))
    core = router.calls["c1"]
    route_into(router, items)
    assert core.ended and "c1" not in router.calls
    assert s.stats["violation.invalid_field"] == 2


@pytest.mark.parametrize(
    ("inner", "field"),
    [
        ({"call_id": "c1", "node_id": 7, "call_state": "answered"}, "node_id"),
        ({"call_id": "c1", "tag": ["t"], "call_state": "answered"}, "tag"),
        ({"call_id": "c1", "control_id": {"a": 1}, "state": "playing"}, "control_id"),
        ({"call_id": "c1", "device": "phone", "call_state": "answered"}, "device"),
        ({"call_id": 5, "call_state": "answered"}, "call_id"),
        ({"call_id": "c1", "end_reason": 3, "call_state": "ended"}, "end_reason"),
    ],
)
def test_wrongly_typed_fields_are_dropped_and_counted(inner: dict[str, Any], field: str) -> None:
    """Old code delivered them as they came: a number as ``node_id`` ended up in commands."""
    s = session()
    _, items = s.receive(event(c.EVENT_CALL_STATE, inner, "f1"))
    received = delivered(items)
    assert violations(items) == ["invalid_field"] and field not in received.event.params
    assert isinstance(received.event.node_id, str) and isinstance(received.event.tag, str)
    core = CallCore.from_params(received.event.params)
    assert all(isinstance(v, str) for v in (core.call_id, core.node_id, core.tag, core.end_reason))


def test_nested_dial_winner_with_a_numeric_call_id_is_not_a_winner() -> None:
    s = session()
    router: EventRouter[CallCore] = EventRouter()
    router.dials.start("t")
    inner = {"tag": "t", "dial_state": "answered", "call": {"call_id": 42, "node_id": "n"}}
    _, items = s.receive(event(c.EVENT_CALL_DIAL, inner, "d1"))
    assert violations(items) == ["invalid_field"]
    assert s.stats["violation.invalid_field"] == 1
    routed = router.route(delivered(items).event)
    # The dial stays pending (no call_id to take): old code took 42 as the winner's id.
    assert routed.route is not Route.DIAL_DONE and "t" in router.dials.pending


def test_collect_result_must_be_an_object_and_timestamp_a_number() -> None:
    s = session()
    router: EventRouter[CallCore] = EventRouter()
    router.add_call("c1", CallCore("c1"))
    router.calls["c1"].actions.start("collect", "k")
    _, items = s.receive(
        event(c.EVENT_CALL_COLLECT, {"call_id": "c1", "control_id": "k", "result": "1"}, "k1", "noon")
    )
    assert violations(items) == ["invalid_field", "invalid_field"]
    assert delivered(items).event.timestamp == 0.0
    route_into(router, items)
    assert "k" in router.calls["c1"].actions.running  # not resolved by a junk result


def test_event_with_an_empty_id_is_acked_at_once_when_acks_are_deferred() -> None:
    """Found by the fuzz invariant: ``ack_id=""`` reads as "already acked" to a driver."""
    s = session(defer_acks=True)
    reply, items = s.receive(event(c.EVENT_CALL_PLAY, {"call_id": "c"}, fid=""))
    assert reply is not None and orjson.loads(reply)["id"] == ""
    assert delivered(items).ack_id is None
