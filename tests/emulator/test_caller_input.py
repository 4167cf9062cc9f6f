"""Scripted caller input: ``digits.max`` and terminators honoured, a queue of inputs per call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from relay_actors.emulator import Emulator
from relay_actors.emulator.caller import collect_result, parse_inputs
from relay_actors.emulator.testing import RawClient

DIGITS_1 = {"digits": {"max": 1, "terminators": "#"}}
PIN = {"digits": {"max": 4, "terminators": "#"}}


def digit(digits: str, terminator: str = "") -> dict[str, Any]:
    return {"type": "digit", "params": {"digits": digits, "terminator": terminator}}


# --- the sans-IO rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("collect", "pressed", "expected"),
    [
        (DIGITS_1, "1", digit("1")),
        (DIGITS_1, "12#", digit("1")),  # max reached; the next key is no terminator
        (PIN, "4821#", digit("4821", "#")),  # a terminator typed right after max is reported
        (PIN, "12#34", digit("12", "#")),  # a terminator ends it early
        (PIN, "12", digit("12")),  # keys ran out: the digit timeout ends it
        (PIN, "#", {"type": "no_input", "params": {}}),  # nothing but the terminator
        ({"digits": {"max": 3, "terminators": "*#"}}, "9*", digit("9", "*")),
        ({"digits": {"max": 4}}, "12#4", digit("12#4")),  # without terminators '#' is a digit
        ({"speech": {}}, "1", {"type": "no_input", "params": {}}),  # keys on a speech-only collect
    ],
)
def test_digits_rules(collect: dict[str, Any], pressed: str, expected: dict[str, Any]) -> None:
    assert collect_result(collect, {"digits": pressed}) == expected


def test_speech_silence_no_match() -> None:
    both = {**PIN, "speech": {}}
    [speech, silence, no_match] = parse_inputs([{"speech": "sales"}, {"silence": True}, {"no_match": True}])
    assert collect_result(both, speech) == {"type": "speech", "params": {"text": "sales", "confidence": 0.93}}
    assert collect_result(PIN, speech) == {"type": "no_input", "params": {}}
    assert collect_result(both, silence) == {"type": "no_input", "params": {}}
    assert collect_result(both, no_match) == {"type": "no_match", "params": {}}


@pytest.mark.parametrize(
    "bad", ["1", [{"digits": "1x"}], [{"digits": 1}], [{}], [{"digits": "1", "speech": "a"}], [{"speech": 3}]]
)
def test_bad_inputs_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_inputs(bad)


# --- over the wire -----------------------------------------------------------------------


@pytest.fixture
async def http(emulator: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=emulator.control_url) as session:
        yield session


async def _answer(client: RawClient, call_id: str) -> None:
    await client.wait_event("calling.call.receive", call_id=call_id)
    await client.request("calling.answer", {"call_id": call_id})


async def _prompt(client: RawClient, call_id: str, control_id: str, collect: dict[str, Any]) -> Any:
    params = {"call_id": call_id, "control_id": control_id, "play": [{"type": "tts"}], "collect": collect}
    await client.request("calling.play_and_collect", params)
    event = await client.wait_event("calling.call.collect", control_id=control_id)
    return event["result"]


async def test_default_caller_honours_digits_max(emulator: Emulator, client: RawClient) -> None:
    [call_id] = emulator.core.inject_calls("office")
    await _answer(client, call_id)
    assert await _prompt(client, call_id, "menu", DIGITS_1) == digit("1")
    assert await _prompt(client, call_id, "pin", PIN) == digit("1234", "#")


async def test_inputs_queue_through_the_control_api(emulator: Emulator, client: RawClient, http) -> None:
    inputs = [{"digits": "2"}, {"speech": "sales", "confidence": 0.8}, {"silence": True}, {"digits": "99#"}]
    async with http.post("/calls", json={"context": "office", "inputs": inputs}) as response:
        assert response.status == 200
        [call_id] = (await response.json())["call_ids"]
    await _answer(client, call_id)
    assert await _prompt(client, call_id, "a", DIGITS_1) == digit("2")
    assert await _prompt(client, call_id, "b", {"speech": {}}) == {
        "type": "speech",
        "params": {"text": "sales", "confidence": 0.8},
    }
    # Standalone collect: the terminal state follows the result type.
    await client.request("calling.collect", {"call_id": call_id, "control_id": "c", **PIN})
    silent = await client.wait_event("calling.call.collect", control_id="c")
    assert silent["state"] == "no_input" and silent["result"]["type"] == "no_input"
    await client.request("calling.collect", {"call_id": call_id, "control_id": "d", **PIN})
    pressed = await client.wait_event("calling.call.collect", control_id="d")
    assert pressed["state"] == "finished" and pressed["result"] == digit("99", "#")
    # The script is spent: the caller does nothing more (not the default caller's 1234#).
    assert await _prompt(client, call_id, "e", DIGITS_1) == {"type": "no_input", "params": {}}


async def test_a_silent_script_stays_silent_unless_told_otherwise(
    emulator: Emulator, client: RawClient, http
) -> None:
    """A caller scripted to press nothing is not put through by the default caller's keys on
    the menu's second attempt; ``collect`` says what it does once the script runs out."""
    async with http.post("/calls", json={"context": "office", "inputs": [{"silence": True}]}) as response:
        [silent] = (await response.json())["call_ids"]
    told = {"context": "office", "inputs": [{"silence": True}], "collect": digit("2")}
    async with http.post("/calls", json=told) as response:
        [then_two] = (await response.json())["call_ids"]
    for call_id in (silent, then_two):
        await _answer(client, call_id)
        assert await _prompt(client, call_id, f"{call_id}-1", DIGITS_1) == {"type": "no_input", "params": {}}
    assert await _prompt(client, silent, "s2", DIGITS_1) == {"type": "no_input", "params": {}}
    assert await _prompt(client, then_two, "t2", DIGITS_1) == digit("2")


async def test_inputs_added_to_a_live_call_and_errors(emulator: Emulator, client: RawClient, http) -> None:
    [call_id] = emulator.core.inject_calls("office")
    await _answer(client, call_id)
    async with http.post(f"/calls/{call_id}/inputs", json={"inputs": [{"digits": "7"}]}) as response:
        assert response.status == 200
        assert (await response.json())["inputs"] == [{"digits": "7"}]
    assert await _prompt(client, call_id, "a", DIGITS_1) == digit("7")
    assert await _prompt(client, call_id, "a2", DIGITS_1) == {"type": "no_input", "params": {}}  # spent
    async with http.post(f"/calls/{call_id}/inputs", json={"inputs": [{"digits": "x"}]}) as response:
        assert response.status == 400
        assert "0-9" in (await response.json())["error"]
    async with http.post("/calls/unknown/inputs", json={"inputs": []}) as response:
        assert response.status == 404
    bad = {"context": "office", "rate": 5, "inputs": [{"beep": 1}]}
    async with http.post("/calls", json=bad) as response:
        assert response.status == 400  # refused at once, not in the background


async def test_dialled_number_answers_with_its_inputs(emulator: Emulator, client: RawClient) -> None:
    emulator.core.set_config({"caller_inputs": {"+15550001111": [{"digits": "3"}, {"speech": "no"}]}})
    device = {"type": "phone", "params": {"to_number": "+15550001111", "from_number": "+15550000000"}}
    await client.request("calling.dial", {"tag": "t1", "devices": [[device]]})
    dialled = await client.wait_event("calling.call.dial", dial_state="answered")
    call_id = dialled["call"]["call_id"]
    assert emulator.core.calls.calls[call_id].describe()["inputs"] == [
        {"digits": "3"},
        {"speech": "no", "confidence": 0.93},
    ]
    assert await _prompt(client, call_id, "a", DIGITS_1) == digit("3")
    assert (await _prompt(client, call_id, "b", {"speech": {}}))["params"]["text"] == "no"
    with pytest.raises(ValueError):
        emulator.core.set_config({"caller_inputs": {"+1": [{"digits": "?"}]}})
