"""Call state machine, action terminal tests (with the SDK gotchas), dials and messages."""

from __future__ import annotations

from relay_actors.protocol import constants as c
from relay_actors.protocol.calls import CallCore, next_state
from relay_actors.protocol.dials import DialTracker
from relay_actors.protocol.events import parse_event
from relay_actors.protocol.messages import MessageTracker
from relay_actors.protocol.routing import EventRouter, Route


def ev(event_type: str, **params: object):
    return parse_event(event_type, {"call_id": "c1", **params})


def state(s: str, **kw: object):
    return ev(c.EVENT_CALL_STATE, call_state=s, **kw)


def test_states_move_forward_only() -> None:
    assert next_state("created", "answered") == "answered"
    assert next_state("answered", "ringing") is None
    assert next_state("ended", "answered") is None
    assert next_state("created", "bogus") is None
    call = CallCore("c1")
    assert call.apply(state("ringing")).state_changed
    assert call.apply(state("answered")).state_changed
    assert not call.apply(state("ringing")).state_changed  # stale redelivery
    assert call.state == "answered" and call.at_least("ringing") and not call.at_least("ending")


def test_ended_resolves_pending_actions_and_drops_later_events() -> None:
    call = CallCore("c1", state="answered")
    call.actions.start("play", "p1")
    call.actions.start("record", "r1")
    update = call.apply(state("ended", end_reason="hangup"))
    assert {r.control_id for r in update.finished} == {"p1", "r1"}
    assert all(r.done and r.result.params["call_state"] == "ended" for r in update.finished)
    assert call.end_reason == "hangup"
    assert not call.apply(ev(c.EVENT_CALL_PLAY, control_id="p1", state="finished")).accepted


def test_play_and_collect_resolves_on_collect_not_play() -> None:
    call = CallCore("c1")
    call.actions.start("play_and_collect", "x")
    assert not call.apply(ev(c.EVENT_CALL_PLAY, control_id="x", state="finished")).finished
    done = call.apply(
        ev(c.EVENT_CALL_COLLECT, control_id="x", result={"type": "digit", "params": {"digits": "1"}})
    ).finished
    assert done and done[0].result.event_type == c.EVENT_CALL_COLLECT


def test_partial_collect_waits_for_final() -> None:
    call = CallCore("c1")
    call.actions.start("collect", "x")
    partial = {"type": "speech", "params": {"text": "hel"}}
    assert not call.apply(ev(c.EVENT_CALL_COLLECT, control_id="x", result=partial, final=False)).finished
    assert call.apply(ev(c.EVENT_CALL_COLLECT, control_id="x", result=partial, final=True)).finished
    call.actions.start("collect", "y")
    assert call.apply(ev(c.EVENT_CALL_COLLECT, control_id="y", state="no_input")).finished


def test_detect_fax_and_other_kinds() -> None:
    call = CallCore("c1")
    call.actions.start("detect", "d")
    done = call.apply(
        ev(c.EVENT_CALL_DETECT, control_id="d", detect={"type": "machine", "params": {"event": "HUMAN"}})
    )
    assert done.finished[0].result.detect_event == "HUMAN"
    call.actions.start("send_fax", "f")
    assert not call.apply(
        ev(c.EVENT_CALL_FAX, control_id="f", fax={"type": "page", "params": {"number": 1}})
    ).finished
    assert call.apply(ev(c.EVENT_CALL_FAX, control_id="f", fax={"type": "finished", "params": {}})).finished
    call.actions.start("tap", "t")
    assert not call.apply(ev(c.EVENT_CALL_TAP, control_id="t", state="tapping")).finished
    assert call.actions.running["t"].state == "tapping"
    assert not call.apply(
        ev(c.EVENT_CALL_PLAY, control_id="t", state="finished")
    ).finished  # wrong event type
    assert call.actions.finish("t").result.event_type == ""


def test_dial_tracker_legs_and_outcomes() -> None:
    dials = DialTracker()
    dials.start("tag1")
    assert dials.is_new_leg({"tag": "tag1", "call_id": "a"})
    assert not dials.is_new_leg({"tag": "tag1", "call_id": "a"})
    assert dials.is_new_leg({"tag": "tag1", "call_id": "b"})
    assert not dials.is_new_leg({"tag": "other", "call_id": "z"})
    assert dials.on_dial_event({"tag": "tag1", "dial_state": "dialing"}) is None
    out = dials.on_dial_event(
        {"tag": "tag1", "dial_state": "answered", "call": {"call_id": "a", "dial_winner": True}}
    )
    assert out is not None and out.answered and out.losers == ("b",)
    assert dials.on_dial_event({"tag": "tag1", "dial_state": "answered", "call": {"call_id": "a"}}) is None
    dials.start("t2")
    out = dials.on_dial_event({"tag": "t2", "dial_state": "failed"})
    assert out is not None and not out.answered


def msg_state(mid: str, st: str, **kw: object):
    return parse_event(c.EVENT_MESSAGING_STATE, {"message_id": mid, "message_state": st, **kw})


def test_message_states_before_send_result_are_kept() -> None:
    """The official SDK drops these and its wait() hangs; here they are applied."""
    tracker = MessageTracker()
    for st in ("queued", "initiated", "sent", "delivered"):
        assert tracker.feed(msg_state("m1", st)) == (None, False)
    record, applied = tracker.sent("m1")
    assert record.done and record.state == "delivered" and len(applied) == 4
    assert "m1" not in tracker.tracked and not tracker.early


def test_message_failure_keeps_reason_and_bounds_early_buffer() -> None:
    tracker = MessageTracker(max_early=2)
    record, _ = tracker.sent("m1")
    tracker.feed(msg_state("m1", "initiated"))
    rec, done = tracker.feed(msg_state("m1", "undelivered", reason="carrier"))
    assert done and rec is record and record.reason == "carrier"
    for i in range(5):
        tracker.feed(msg_state(f"x{i}", "queued"))
    assert len(tracker.early) == 2 and tracker.dropped_early == 3


def test_router_routes_every_kind() -> None:
    router: EventRouter[str] = EventRouter()
    assert router.route(parse_event(c.EVENT_CALL_RECEIVE, {"call_id": "in"})).route is Route.OFFER
    router.add_call("in", "owner")
    r = router.route(parse_event(c.EVENT_CALL_PLAY, {"call_id": "in", "control_id": "x"}))
    assert r.route is Route.CALL and r.target == "owner"
    r = router.route(parse_event(c.EVENT_CALL_STATE, {"call_id": "in", "call_state": "ended"}))
    assert r.call_ended and "in" not in router.calls
    assert router.route(parse_event(c.EVENT_CALL_PLAY, {"call_id": "in"})).route is Route.UNROUTABLE
    assert router.route(parse_event(c.EVENT_CONFERENCE, {"conference_id": "k"})).route is Route.CONFERENCE
    assert router.route(parse_event(c.EVENT_MESSAGING_RECEIVE, {"message_id": "m"})).route is Route.MESSAGE_IN
    assert router.route(msg_state("m9", "queued")).route is Route.MESSAGE_EARLY
    assert router.route(parse_event(c.EVENT_AUTHORIZATION_STATE, {})).route is Route.AUTH_STATE
    router.dials.start("t")
    leg = parse_event(c.EVENT_CALL_STATE, {"call_id": "leg", "tag": "t", "call_state": "created"})
    assert router.route(leg).route is Route.DIAL_LEG
    router.add_call("leg", "legowner")
    assert router.route(leg).target == "legowner"
    r = router.route(
        parse_event(c.EVENT_CALL_DIAL, {"tag": "t", "dial_state": "answered", "call": {"call_id": "leg"}})
    )
    assert r.route is Route.DIAL_DONE and r.dial.answered
    r = router.route(
        parse_event(c.EVENT_CALL_DIAL, {"tag": "t", "dial_state": "answered", "call": {"call_id": "leg"}})
    )
    assert r.route is Route.CALL and r.target == "legowner"
    assert list(router.calls) == ["leg"]
