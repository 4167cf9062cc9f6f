"""Each example app run in-process with ``relay-actors run`` against the emulator, every
branch driven by what the emulated callers press and say, its outcome asserted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from example_apps import call_state, commands, read_lines, served, until

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS

SALES, SUPPORT = "+15550100099", "+15550100098"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS, journal_limit=100_000) as emulator:
        yield emulator


def ended(emu: Emulator, call_ids: list[str]) -> bool:
    return all(call_state(emu, c)["state"] == "ended" for c in call_ids)


def methods(emu: Emulator, call_id: str) -> list[str]:
    return [method for method, _ in commands(emu, call_id)]


def transferred_to(emu: Emulator, call_id: str) -> list[str]:
    return [
        device["params"]["to_number"]
        for method, params in commands(emu, call_id)
        if method == "calling.connect"
        for group in params["devices"]
        for device in group
    ]


#: What each caller does, and how the IVR must route them.
IVR_CASES = {
    "sales": [{"digits": "1"}],
    "support": [{"digits": "2#"}],
    "voicemail": [{"digits": "3"}],
    "retry-then-voicemail": [{"digits": "9"}, {"silence": True}, {"digits": "3"}],
    "nothing": [{"silence": True}, {"no_match": True}, {"digits": "7"}],
}


async def test_ivr_routes_every_digit(emu: Emulator) -> None:
    async with served("examples.ivr.app:client", emu):
        calls = {
            name: emu.core.inject_calls("office", 1, inputs=inputs)[0] for name, inputs in IVR_CASES.items()
        }
        # The transfers last until a side hangs up: the caller does, once bridged.
        for name in ("sales", "support"):
            await until(lambda n=name: transferred_to(emu, calls[n]), what=f"the {name} transfer")
            await until(lambda n=name: call_state(emu, calls[n])["state"] == "answered")
            emu.core.hangup(calls[name])
        await until(lambda: ended(emu, list(calls.values())), what="every call ended")

    assert transferred_to(emu, calls["sales"]) == [SALES]
    assert transferred_to(emu, calls["support"]) == [SUPPORT]
    for name in ("voicemail", "retry-then-voicemail", "nothing"):
        assert transferred_to(emu, calls[name]) == [], name
    prompts = {name: methods(emu, c).count("calling.play_and_collect") for name, c in calls.items()}
    assert prompts == {"sales": 1, "support": 1, "voicemail": 1, "retry-then-voicemail": 3, "nothing": 3}
    recorded = {name: "calling.record" in methods(emu, c) for name, c in calls.items()}
    assert recorded == {
        "sales": False, "support": False, "voicemail": True, "retry-then-voicemail": True, "nothing": False,
    }  # fmt: skip
    for name in ("voicemail", "retry-then-voicemail", "nothing"):
        # The app said goodbye and hung up (not the caller, not an error).
        assert methods(emu, calls[name])[-1] == "calling.end", name
        assert call_state(emu, calls[name])["end_reason"] == "hangup", name


async def test_voicemail_stores_recordings(emu: Emulator, tmp_path: Path) -> None:
    store = tmp_path / "voicemail"
    async with served("examples.voicemail.app:client", emu, VOICEMAIL_DIR=str(store)):
        callers = ["+15551110001", "+15551110002", "+15551110003"]
        calls = [emu.core.inject_calls("voicemail", 1, from_number=n)[0] for n in callers]
        await until(lambda: ended(emu, calls), what="every call ended")
        await until(lambda: len(read_lines(store / "voicemails.jsonl")) == 3, what="three voicemails")
    stored = {entry["call_id"]: entry for entry in read_lines(store / "voicemails.jsonl")}
    assert sorted(stored) == sorted(calls)
    for call_id, caller in zip(calls, callers, strict=True):
        entry = stored[call_id]
        assert entry["from"] == caller and entry["url"].startswith(
            "https://files.emulator.invalid/recordings/"
        )
        assert entry["url"].endswith(".mp3") and entry["duration"] > 0 and entry["size"] > 0
        assert methods(emu, call_id)[:3] == ["calling.answer", "calling.play", "calling.record"]
        assert call_state(emu, call_id)["end_reason"] == "hangup"


#: The campaign's numbers and what each callee does.
DIALER_CASES = {
    "+15552220001": ("human", {"detect": ["HUMAN"]}),
    "+15552220002": ("machine", {"detect": ["MACHINE", "READY"]}),
    "+15552220003": ("no-answer", {"dial": "no-answer"}),
    "+15552220004": ("no-answer", {"dial": "busy"}),
    "+15552220005": ("unknown", {"detect": ["UNKNOWN"]}),
    "+15552220006": ("human", {"detect": ["HUMAN"]}),
    "+15552220007": ("machine", {"detect": ["MACHINE", "READY"]}),
}


def configure_dialer(emu: Emulator) -> None:
    emu.core.set_config(
        {
            "dial_outcomes": {n: case["dial"] for n, (_, case) in DIALER_CASES.items() if "dial" in case},
            "detect_outcomes": {
                n: case["detect"] for n, (_, case) in DIALER_CASES.items() if "detect" in case
            },
        }
    )


def write_numbers(path: Path) -> None:
    path.write_text(
        "# campaign of the test\n" + "".join(f"{n}  # {o}\n" for n, (o, _) in DIALER_CASES.items())
    )


def check_dialer_results(results: list[dict[str, object]]) -> None:
    assert sorted(r["number"] for r in results) == sorted(DIALER_CASES), results
    assert {r["number"]: r["outcome"] for r in results} == {n: o for n, (o, _) in DIALER_CASES.items()}
    assert all(r["call_id"] for r in results if r["outcome"] != "no-answer"), results


async def test_dialer_writes_a_result_per_number(emu: Emulator, tmp_path: Path) -> None:
    configure_dialer(emu)
    write_numbers(tmp_path / "numbers.txt")
    results = tmp_path / "results.jsonl"
    env = {"DIALER_NUMBERS": str(tmp_path / "numbers.txt"), "DIALER_RESULTS": str(results)}
    async with served(
        "examples.dialer.app:client", emu, "--task", "campaign", DIALER_CONCURRENCY="3", **env
    ) as app:
        assert await app.exit_code(60) == 0, app.output[-3000:]  # it stops by itself once done
        assert "task campaign done" in app.output and "relay-actors: stopped" in app.output
    check_dialer_results(read_lines(results))
    # The concurrency limit held: never more than 3 calls at once.
    spans = [(r["started"], r["ended"]) for r in read_lines(results)]
    assert max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans) <= 3
    for r in read_lines(results):
        if r["outcome"] in ("human", "machine", "unknown"):
            assert methods(emu, r["call_id"]) == ["calling.detect", "calling.play", "calling.end"]


async def test_sms_responder_answers_every_message(emu: Emulator, tmp_path: Path) -> None:
    store = tmp_path / "responder"
    emu.core.set_config({"message_outcomes": {"+15553330003": "undelivered"}})
    inbound = {"+15553330001": "hours please", "+15553330002": "STOP", "+15553330003": "hello?"}
    async with served("examples.sms_responder.app:client", emu, RESPONDER_DIR=str(store)):
        ids = {n: emu.core.messaging.inject("sms", from_number=n, body=b) for n, b in inbound.items()}
        await until(lambda: len(read_lines(store / "replies.jsonl")) == 3, what="three replies")
    replies = {r["from"]: r for r in read_lines(store / "replies.jsonl")}
    assert {n: r["message_id"] for n, r in replies.items()} == ids
    assert {n: r["keyword"] for n, r in replies.items()} == {
        "+15553330001": "HOURS", "+15553330002": "STOP", "+15553330003": "",
    }  # fmt: skip
    # Delivery followed to the end: the carrier's verdict for each reply.
    assert {n: r["state"] for n, r in replies.items()} == {
        "+15553330001": "delivered", "+15553330002": "delivered", "+15553330003": "undelivered",
    }  # fmt: skip
    assert all(r["reply_id"] for r in replies.values())
