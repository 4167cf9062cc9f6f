"""The chaos suite's plain logic: schedules replay from the seed, and each invariant
check catches what it is meant to catch (fed journal entries and handler records)."""

from __future__ import annotations

from typing import Any

import pytest

from relay_actors import chaos

ANSWERED = ("calling.call.state", "answered")
PLAYING = ("calling.call.play", "playing")
FINISHED = ("calling.call.play", "finished")
ENDED = ("calling.call.state", "ended")


def test_schedule_replays_from_the_seed_and_covers_every_kind() -> None:
    first = chaos.make_schedule(42, 30)
    assert first == chaos.make_schedule(42, 30)
    assert first != chaos.make_schedule(43, 30)
    assert len(first) == 30
    assert {f.kind for f in first[: len(chaos.DEFAULT_KINDS)]} == set(chaos.DEFAULT_KINDS)
    # Every kind is drawn by default: the process pauses and the double kill too.
    assert set(chaos.DEFAULT_KINDS) == set(chaos.FAULT_KINDS)
    assert {"pause_router", "kill_connection_then_router"} <= set(chaos.DEFAULT_KINDS)
    asked = chaos.make_schedule(5, 8, ["pause_call_actor", "kill_connection_then_router"])
    assert {f.kind for f in asked} == {"pause_call_actor", "kill_connection_then_router"}
    assert all(0.3 <= f.pause <= 1.5 for f in first)
    short = chaos.make_schedule(1, 3, ["burst", "ws_drop"])
    assert {f.kind for f in short} == {"burst", "ws_drop"}
    with pytest.raises(ValueError, match="unknown fault kinds"):
        chaos.make_schedule(1, 3, ["meteor"])


def test_limit_monitor_counts_moments_over_the_limit() -> None:
    monitor = chaos.LimitMonitor(3)
    for n in (0, 3, 4, 2, 5):
        monitor.sample(n)
    assert (monitor.samples, monitor.over, monitor.peak) == (5, 2, 5)


def _event(fid: str, call_id: str, event_type: str, state: str, key: str = "call_state") -> dict[str, Any]:
    return {
        "t": 0.0,
        "dir": "out",
        "frame": {
            "id": fid,
            "method": "signalwire.event",
            "params": {"event_type": event_type, "params": {"call_id": call_id, key: state}},
        },
    }


def test_sent_events_dedupes_redeliveries_and_skips_the_offer_state() -> None:
    journal = {
        "s1": [
            _event("e0", "c1", "calling.call.receive", "created"),
            _event("e1", "c1", "calling.call.state", "created"),
            _event("e2", "c1", "calling.call.state", "answered"),
            _event("e3", "c1", "calling.call.play", "playing", key="state"),
        ],
        # A resume redelivers e3 on the same session: the same event, not a second one.
        "s2": [_event("e3", "c1", "calling.call.play", "playing", key="state")],
    }
    assert chaos.sent_events(journal) == {"c1": [ANSWERED, PLAYING]}


def test_check_events_lost_twice_reordered_and_disturbed_prefixes() -> None:
    sent = {c: [ANSWERED, PLAYING, FINISHED, ENDED] for c in ("ok", "lost", "twice", "swap", "dead", "bad")}
    seen = {
        "ok": [ANSWERED, PLAYING, FINISHED, ENDED],
        "lost": [ANSWERED, PLAYING, FINISHED],
        "twice": [ANSWERED, PLAYING, PLAYING, FINISHED, ENDED],
        "swap": [ANSWERED, FINISHED, PLAYING, ENDED],
        "dead": [ANSWERED, PLAYING],  # its CallActor died: a prefix is all it can see
        "bad": [ANSWERED, PLAYING, PLAYING],  # disturbed, but a duplicate is still a duplicate
    }
    result = chaos.check_events(sent, seen, disturbed={"dead", "bad"})
    assert (result["lost"], result["twice"], result["out_of_order"]) == (1, 2, 1)
    assert {e["call_id"] for e in result["examples"]} == {"lost", "twice", "swap", "bad"}


def test_check_events_a_handler_that_started_after_its_call_ended() -> None:
    sent = {"late": [ENDED], "early": [ANSWERED, ENDED]}
    seen: dict[str, list[tuple[str, str]]] = {"late": [], "early": []}
    result = chaos.check_events(sent, seen, calls=["late", "early"], state_at_start={"late": "ended"})
    assert (result["lost"], result["twice"]) == (2, 0)  # "early" lost both; "late" could see none
    assert [e["call_id"] for e in result["examples"]] == ["early"]


def test_check_starts_allows_only_recovered_restarts() -> None:
    started = {
        "once": [{"recovered": False}],
        "rehomed": [{"recovered": False}, {"recovered": True}],
        "twice": [{"recovered": False}, {"recovered": False}],
    }
    assert chaos.check_starts(started) == ["twice"]


def _request(t: float, method: str, call_id: str, **params: Any) -> dict[str, Any]:
    return {
        "t": t,
        "dir": "in",
        "frame": {"id": f"r{t}", "method": method, "params": {"call_id": call_id, **params}},
    }


def test_commands_after_the_runtime_ended_a_call() -> None:
    journal = {
        "s1": [
            _request(1.0, "calling.answer", "a"),
            _request(2.0, "calling.end", "a", reason="error"),  # the runtime ends it
            _request(1.5, "calling.end", "b", reason="hangup"),  # a handler's own hang-up
            _request(2.5, "calling.play", "b"),
        ],
        "s2": [_request(3.0, "calling.play", "a"), _request(3.5, "calling.end", "a", reason="error")],
    }
    found = chaos.commands_after_end(journal)
    assert found == [
        {"call_id": "a", "method": "calling.play", "after": 1.0},
        {"call_id": "a", "method": "calling.end", "after": 1.5},
    ]


def test_report_and_table() -> None:
    report = chaos.Report(seed=5)
    report.recovered("kill_router", 0.5)
    report.recovered("kill_router", 1.5)
    report.recovered("burst", None)
    report.restored["kill_router"] += [1.0, 2.0]
    report.invariants = {"events lost": 0, "moments over the limit": 0}
    assert report.faults == 3 and not report.ok
    table = chaos.render_table(report)
    assert "seed 5: 3 faults over 2 kinds" in table
    assert "kill_router" in table and "1.00s" in table and "1.50s" in table and "2.00s" in table
    assert "RESULT: FAILED" in table
    report.failed_recoveries.clear()
    assert report.ok
    report.invariants["events lost"] = 2
    assert not report.ok and "<-- FAILED" in chaos.render_table(report)


def test_call_trace_follows_requests_and_their_responses() -> None:
    journal = {
        "sess01": [
            _request(1.0, "calling.answer", "c1"),
            {"t": 1.1, "dir": "out", "frame": {"id": "r1.0", "result": {"code": "410"}}},
            {"t": 1.2, "dir": "out", "frame": {"id": "other", "result": {"code": "200"}}},
            _event("e1", "c1", "calling.call.state", "ended"),
        ]
    }
    lines = chaos.call_trace(journal, "c1")
    assert len(lines) == 3
    assert any("calling.answer" in line for line in lines)
    assert any("response 410" in line for line in lines)
    assert any("calling.call.state ended" in line for line in lines)


def test_runtime_ended_is_the_calls_it_ended_with_reason_error() -> None:
    def response(t: float, code: str) -> dict[str, Any]:
        return {"t": t + 0.1, "dir": "out", "frame": {"id": f"r{t}", "result": {"code": code}}}

    journal = {
        "s1": [
            _request(1.0, "calling.end", "lost", reason="error"),
            response(1.0, "200"),
            _request(2.0, "calling.end", "gone", reason="error"),  # it had ended already
            response(2.0, "410"),
            _request(3.0, "calling.end", "mine", reason="hangup"),
            response(3.0, "200"),
            _request(4.0, "calling.play", "other"),
            response(4.0, "200"),
        ]
    }
    assert chaos.runtime_ended(journal) == {"lost"}


def _command(call_id: str, method: str, control_id: str = "", fid: str = "r") -> dict[str, Any]:
    params = {"call_id": call_id, **({"control_id": control_id} if control_id else {})}
    return {"t": 0.0, "dir": "in", "frame": {"jsonrpc": "2.0", "id": fid, "method": method, "params": params}}


def test_commands_twice_finds_a_resent_answer_across_sessions() -> None:
    journal = {
        "s1": [
            _command("c1", "calling.answer"),
            _command("c2", "calling.answer"),
            _command("c1", "calling.play", "p1"),
        ],
        # After a reconnect (another session): c1's answer again, c2's play with a new control id.
        "s2": [_command("c1", "calling.answer", fid="r2"), _command("c2", "calling.play", "p2")],
    }
    found = chaos.commands_twice(journal, {"c1": {"calling.answer": 1}})
    assert found == [
        {"call_id": "c1", "method": "calling.answer", "control_id": "", "server": 2, "handler": 1}
    ]


def test_commands_the_handler_sent_twice_are_not_counted() -> None:
    journal = {"s1": [_command("c1", "calling.answer"), _command("c1", "calling.answer", fid="r2")]}
    assert chaos.commands_twice(journal, {"c1": {"calling.answer": 2}}) == []
    # The same play (one control id) twice is a resend; two plays are two commands.
    replay = {"s1": [_command("c3", "calling.play", "p"), _command("c3", "calling.play", "p", "r3")]}
    assert len(chaos.commands_twice(replay, {"c3": {"calling.play": 1}})) == 1
    two = {"s1": [_command("c3", "calling.play", "p"), _command("c3", "calling.play", "q", "r3")]}
    assert chaos.commands_twice(two, {"c3": {"calling.play": 2}}) == []
    # An end the runtime sent once (no handler record) is fine; twice is not.
    ends = {"s1": [_command("c4", "calling.end"), _command("c4", "calling.end", fid="r4")]}
    assert [f["method"] for f in chaos.commands_twice(ends, {})] == ["calling.end"]


def test_the_recorder_counts_what_handlers_sent() -> None:
    rec = chaos.Recorder()
    rec.command("c1", "calling.answer")
    rec.command("c1", "calling.answer")
    assert rec.dump()["commands"] == {"c1": {"calling.answer": 2}}
