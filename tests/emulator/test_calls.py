"""Inbound offers (answer, pass, end, caller hang-up, ring timeout, round-robin), 404/410, dial."""

from __future__ import annotations

import pytest

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import RawClient, wait_until


def _phone(number: str) -> dict:
    return {"type": "phone", "params": {"from_number": "+15550000000", "to_number": number}}


async def test_offer_only_to_subscribers(emulator: Emulator, client_factory) -> None:
    office = await client_factory(contexts=["office"])
    other = await client_factory(contexts=["other"])
    [call_id] = emulator.core.inject_calls("office")
    offer = await office.wait_event("calling.call.receive", call_id=call_id)
    assert offer["context"] == "office"
    assert offer["direction"] == "inbound"
    assert offer["device"]["params"]["from_number"]
    assert other.events("calling.call.receive") == []


async def test_answer_then_end(emulator: Emulator, client: RawClient) -> None:
    [call_id] = emulator.core.inject_calls("office")
    await client.wait_event("calling.call.receive", call_id=call_id)
    assert (await client.request("calling.answer", {"call_id": call_id}))["code"] == "200"
    await client.wait_event("calling.call.state", call_id=call_id, call_state="answered")
    result = await client.request("calling.end", {"call_id": call_id, "reason": "busy"})
    assert result["code"] == "200"
    ended = await client.wait_event("calling.call.state", call_id=call_id, call_state="ended")
    assert ended["end_reason"] == "busy"
    states = [e["call_state"] for e in client.events("calling.call.state") if e["call_id"] == call_id]
    assert states == ["answered", "ending", "ended"]


async def test_caller_hangup_and_running_action_ends_first(emulator: Emulator, client: RawClient) -> None:
    emulator.core.set_config({"durations": {"play": 30}})
    [call_id] = emulator.core.inject_calls("office")
    await client.wait_event("calling.call.receive", call_id=call_id)
    await client.request("calling.answer", {"call_id": call_id})
    await client.request(
        "calling.play", {"call_id": call_id, "control_id": "p", "play": [{"type": "silence"}]}
    )
    assert emulator.core.hangup(call_id)
    ended = await client.wait_event("calling.call.state", call_id=call_id, call_state="ended")
    assert ended["end_reason"] == "hangup"
    kinds = [(e["event_type"], e.get("state") or e.get("call_state")) for e in client.events()]
    assert kinds.index(("calling.call.play", "finished")) < kinds.index(("calling.call.state", "ended"))


async def test_pass_goes_to_next_session_then_ends(emulator: Emulator, client_factory) -> None:
    first = await client_factory(contexts=["office"])
    second = await client_factory(contexts=["office"])
    [call_id] = emulator.core.inject_calls("office")
    holder = await wait_until(
        lambda: next((c for c in (first, second) if c.events("calling.call.receive")), None)
    )
    other = second if holder is first else first
    assert (await holder.request("calling.pass", {"call_id": call_id}))["code"] == "200"
    await other.wait_event("calling.call.receive", call_id=call_id)
    await other.request("calling.pass", {"call_id": call_id})
    ended = await other.wait_event("calling.call.state", call_id=call_id, call_state="ended")
    assert ended["end_reason"] == "abandoned"


async def test_round_robin_over_sessions(emulator: Emulator, client_factory) -> None:
    clients = [await client_factory(contexts=["rr"]) for _ in range(3)]
    emulator.core.inject_calls("rr", count=9)
    await wait_until(lambda: sum(len(c.events("calling.call.receive")) for c in clients) == 9)
    assert [len(c.events("calling.call.receive")) for c in clients] == [3, 3, 3]


async def test_ring_timeout_ends_unanswered_offer(emulator: Emulator, client: RawClient) -> None:
    [call_id] = emulator.core.inject_calls("office", ring_timeout=0.05)
    ended = await client.wait_event("calling.call.state", call_id=call_id, call_state="ended")
    assert ended["end_reason"] == "noAnswer"


async def test_hangup_after_answer_option(emulator: Emulator, client: RawClient) -> None:
    [call_id] = emulator.core.inject_calls("office", hangup_after=0.05)
    await client.wait_event("calling.call.receive", call_id=call_id)
    await client.request("calling.answer", {"call_id": call_id})
    ended = await client.wait_event("calling.call.state", call_id=call_id, call_state="ended")
    assert ended["end_reason"] == "hangup"


async def test_unknown_call_404_and_ended_call_410(emulator: Emulator, client: RawClient) -> None:
    result = await client.request("calling.play", {"call_id": "nope", "control_id": "c", "play": []})
    assert result["code"] == "404"
    [call_id] = emulator.core.inject_calls("office")
    await client.wait_event("calling.call.receive", call_id=call_id)
    emulator.core.hangup(call_id)
    result = await client.request("calling.end", {"call_id": call_id, "reason": "hangup"})
    assert result["code"] == "410"


async def test_dial_parallel_legs_winner_and_loser(emulator: Emulator, client: RawClient) -> None:
    emulator.core.set_config({"dial_outcomes": {"+2": "no-answer"}})
    result = await client.request("calling.dial", {"tag": "t1", "devices": [[_phone("+1"), _phone("+2")]]})
    assert result == {"code": "200", "message": "Dialing"}
    dial = await client.wait_event("calling.call.dial", tag="t1", dial_state="answered")
    assert "call_id" not in dial
    winner = dial["call"]
    assert winner["dial_winner"] is True
    assert winner["device"]["params"]["to_number"] == "+1"
    states = [
        (e["device"]["params"]["to_number"], e["call_state"]) for e in client.events("calling.call.state")
    ]
    assert states[:2] == [("+1", "created"), ("+2", "created")]
    assert ("+1", "answered") in states
    assert ("+2", "ended") in states
    assert all(e["tag"] == "t1" for e in client.events("calling.call.state"))
    assert client.events("calling.call.dial")[0]["dial_state"] == "dialing"


async def test_dial_serial_fallback(emulator: Emulator, client: RawClient) -> None:
    emulator.core.set_config({"dial_outcomes": {"+1": "busy"}})
    await client.request("calling.dial", {"tag": "t2", "devices": [[_phone("+1")], [_phone("+3")]]})
    dial = await client.wait_event("calling.call.dial", tag="t2", dial_state="answered")
    assert dial["call"]["device"]["params"]["to_number"] == "+3"
    ended = [e for e in client.events("calling.call.state") if e["call_state"] == "ended"]
    assert [e["end_reason"] for e in ended] == ["busy"]


async def test_dial_failures(emulator: Emulator, client: RawClient) -> None:
    emulator.core.set_config({"dial_outcomes": {"+1": "busy", "+2": "no-answer", "+3": "failure"}})
    await client.request(
        "calling.dial", {"tag": "t3", "devices": [[_phone("+1"), _phone("+2"), _phone("+3")]]}
    )
    dial = await client.wait_event("calling.call.dial", tag="t3", dial_state="failed")
    assert dial["call"] == {}
    reasons = {
        e["device"]["params"]["to_number"]: e["end_reason"]
        for e in client.events("calling.call.state")
        if e["call_state"] == "ended"
    }
    assert reasons == {"+1": "busy", "+2": "noAnswer", "+3": "error"}


async def test_begin_returns_call_id(emulator: Emulator, client: RawClient) -> None:
    result = await client.request("calling.begin", {"tag": "b", "device": _phone("+9")})
    assert result["message"] == "Call started"
    await client.wait_event("calling.call.state", call_id=result["call_id"], call_state="answered")


@pytest.mark.parametrize("strict", [False, True])
async def test_a_second_answer_is_refused_only_in_strict_mode(
    emulator: Emulator, client: RawClient, strict: bool
) -> None:
    emulator.core.set_config({"strict_commands": strict})
    [call_id] = emulator.core.inject_calls("office")
    await client.wait_event("calling.call.receive", call_id=call_id)
    assert (await client.request("calling.answer", {"call_id": call_id}))["code"] == "200"
    again = await client.request("calling.answer", {"call_id": call_id})
    assert again["code"] == ("409" if strict else "200")
    counters = emulator.core.stats()["counters"]
    assert counters.get("repeated_commands_refused", 0) == (1 if strict else 0)
    assert (await client.request("calling.end", {"call_id": call_id}))["code"] == "200"
    # A second end finds the call ended, in either mode.
    assert (await client.request("calling.end", {"call_id": call_id}))["code"] == "410"
