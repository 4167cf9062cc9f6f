"""Commands in doubt after a shard restart, resolved from the resumed session (sans-IO)."""

from __future__ import annotations

from relay_actors.ray_runtime.actor_messages import RequestItem
from relay_actors.ray_runtime.commands_in_doubt import CommandsInDoubt


def test_only_answer_and_end_wait_for_the_session_others_fail_at_once() -> None:
    doubt = CommandsInDoubt()
    doubt.sent("r1", 0, "calling.answer", {"call_id": "c1"})
    doubt.sent("r2", 0, "calling.play", {"call_id": "c1"})
    doubt.sent("r3", 1, "calling.end", {"call_id": "c2"})
    assert doubt.shard_restarted(0, ["r1", "r2"]) == ["r2"]
    assert doubt.parked == {0: ["r1"]}


def test_an_answer_the_session_shows_done_is_not_sent_again() -> None:
    doubt = CommandsInDoubt()
    doubt.sent("r1", 0, "calling.answer", {"call_id": "c1"})
    doubt.shard_restarted(0, ["r1"])
    assert doubt.resumed(0, {"c1": "answered"}.get) == (["r1"], [])
    assert doubt.parked == {}


def test_an_answer_not_shown_done_is_sent_again_with_its_id() -> None:
    doubt = CommandsInDoubt()
    doubt.sent("r1", 0, "calling.answer", {"call_id": "c1"})
    doubt.shard_restarted(0, ["r1"])
    assert doubt.resumed(0, {"c1": "ringing"}.get) == (
        [],
        [RequestItem("r1", "calling.answer", {"call_id": "c1"})],
    )


def test_an_end_is_shown_done_by_ending_or_a_call_gone() -> None:
    doubt = CommandsInDoubt()
    for req_id, call_id in (("r1", "c1"), ("r2", "c2"), ("r3", "c3")):
        doubt.sent(req_id, 0, "calling.end", {"call_id": call_id})
    doubt.shard_restarted(0, ["r1", "r2", "r3"])
    done, resend = doubt.resumed(0, {"c1": "ending", "c3": "answered"}.get)
    assert done == ["r1", "r2"] and [r.req_id for r in resend] == ["r3"]


def test_a_command_finished_meanwhile_and_another_shard_are_left_alone() -> None:
    doubt = CommandsInDoubt()
    doubt.sent("r1", 0, "calling.answer", {"call_id": "c1"})
    doubt.sent("r2", 1, "calling.answer", {"call_id": "c2"})
    doubt.shard_restarted(0, ["r1"])
    doubt.finished("r1")
    assert doubt.resumed(0, {}.get) == ([], [])
    assert doubt.resumed(1, {}.get) == ([], [])  # r2 was never in doubt
    assert "r2" in doubt.in_flight


def test_an_answer_cut_off_by_a_dropped_socket_waits_for_the_resumed_session() -> None:
    """The shard lived on, its WebSocket was cut while the answer was out: resolved from
    the resumed session, not sent again blindly (the server may have answered already)."""
    doubt = CommandsInDoubt()
    doubt.sent("r1", 0, "calling.answer", {"call_id": "c1"})
    doubt.sent("r2", 0, "calling.answer", {"call_id": "c2"})
    doubt.sent("r3", 0, "calling.play", {"call_id": "c1"})
    assert doubt.cut_off("r1") and doubt.cut_off("r2") and doubt.cut_off("r1")
    assert not doubt.cut_off("r3")  # whether a play ran cannot be read: it fails
    assert doubt.parked == {0: ["r1", "r2"]}
    done, resend = doubt.resumed(0, {"c1": "answered", "c2": "ringing"}.get)
    assert done == ["r1"] and resend == [RequestItem("r2", "calling.answer", {"call_id": "c2"})]
