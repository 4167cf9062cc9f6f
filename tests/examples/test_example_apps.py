"""Each example app run in-process with ``relay-actors run`` against the emulator, every
branch driven by what the emulated callers press and say, its outcome asserted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from example_apps import (
    IVR_CASES,
    RESPONDER_CONFIG,
    RESPONDER_INBOUND,
    call_state,
    check_dialer_results,
    check_ivr_routes,
    check_responder_replies,
    dialer_config,
    ended,
    ivr_bridged,
    methods,
    read_lines,
    served,
    until,
    write_numbers,
)

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS, journal_limit=100_000) as emulator:
        yield emulator


async def test_ivr_routes_every_digit(emu: Emulator) -> None:
    async with served("examples.ivr.app:client", emu):
        calls = {
            name: emu.core.inject_calls("office", 1, inputs=inputs)[0] for name, inputs in IVR_CASES.items()
        }
        # The transfers last until a side hangs up: the caller does, once bridged.
        for name in ("sales", "support"):
            await until(lambda n=name: ivr_bridged(emu, calls[n]), what=f"the {name} transfer")
            emu.core.hangup(calls[name])
        await until(lambda: ended(emu, list(calls.values())), what="every call ended")
    check_ivr_routes(emu, calls)


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


async def test_dialer_writes_a_result_per_number(emu: Emulator, tmp_path: Path) -> None:
    emu.core.set_config(dialer_config())
    write_numbers(tmp_path / "numbers.txt")
    results = tmp_path / "results.jsonl"
    env = {"DIALER_NUMBERS": str(tmp_path / "numbers.txt"), "DIALER_RESULTS": str(results)}
    async with served(
        "examples.dialer.app:client", emu, "--task", "campaign", DIALER_CONCURRENCY="3", **env
    ) as app:
        assert await app.exit_code(60) == 0, app.output[-3000:]  # it stops by itself once done
        assert "task campaign done" in app.output and "relay-actors: stopped" in app.output
    check_dialer_results(emu, read_lines(results), concurrency=3)


async def test_sms_responder_answers_every_message(emu: Emulator, tmp_path: Path) -> None:
    store = tmp_path / "responder"
    emu.core.set_config(RESPONDER_CONFIG)
    async with served("examples.sms_responder.app:client", emu, RESPONDER_DIR=str(store)):
        ids = {
            n: emu.core.messaging.inject("sms", from_number=n, body=b) for n, b in RESPONDER_INBOUND.items()
        }
        await until(lambda: len(read_lines(store / "replies.jsonl")) == 3, what="three replies")
    check_responder_replies(read_lines(store / "replies.jsonl"), ids)


def test_sms_readme_curl_gets_the_keyword_its_json_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's own curl body is answered with the keyword the README's JSON line shows."""
    import json
    import re

    monkeypatch.setenv("SIGNALWIRE_PROJECT_ID", "p")  # the module makes its client on import
    monkeypatch.setenv("SIGNALWIRE_API_TOKEN", "t")
    from examples.sms_responder.app import REPLIES, reply_for

    readme = (Path(__file__).parents[2] / "examples" / "sms_responder" / "README.md").read_text()
    body = json.loads(re.search(r"-d '(\{[^']*\"body\"[^']*\})'", readme).group(1))["body"]  # type: ignore[union-attr]
    documented = re.search(r'"keyword": "(\w+)"', readme).group(1)  # type: ignore[union-attr]
    assert reply_for(body) == (documented, REPLIES[documented]), body
    assert reply_for("  Stop!") == ("STOP", REPLIES["STOP"]) and reply_for("hello?")[0] == ""


def test_documented_job_commands_work_as_written() -> None:
    """A service's ``ray job submit`` returns (``--no-wait``; only a ``--task`` batch job ends by
    itself), and both recipes for a cluster set ``RAY_JOB_STOP_WAIT_TIME_S`` for the drain."""
    import re

    root = Path(__file__).parents[2]
    readmes = [*sorted((root / "examples").glob("*/README.md")), root / "examples" / "README.md"]
    readmes.append(root / "cluster" / "README.md")
    for readme in readmes:
        text = readme.read_text().replace("\\\n", " ")
        for command in re.findall(r"ray job submit[^\n]*", text):
            if "relay-actors run" in command and "--task" not in command:
                assert "--no-wait" in command, f"{readme}: {command}"
    for readme in (root / "examples" / "README.md", root / "cluster" / "README.md"):
        assert "RAY_JOB_STOP_WAIT_TIME_S" in readme.read_text(), readme
