"""The four example apps, tested the way an app author tests theirs: the ``relay_emulator``
and ``relay_app`` fixtures of the test kit (``docs/how-to/testing-your-app.md``). Each app
runs with ``relay-actors run`` against the emulator (in-process; the IVR once on a local
Ray), each caller is scripted, and every test walks what the caller heard, in order.
Each example's README shows its test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay_actors.testkit import busy, human, machine, no_answer, no_match, press, silence

# --- IVR (examples/ivr) ------------------------------------------------------------------

MENU = "Press 1 for sales, 2 for support, 3 to leave a message."
GOODBYE = "Thank you for calling. Goodbye."


def test_ivr_transfers_sales(relay_emulator, relay_app):
    relay_app("examples.ivr.app:client")
    call = relay_emulator.call("office", press("1"))
    call.expect.next_event().is_answered()
    call.expect.next_event().is_prompt(MENU)
    call.expect.next_event().is_collected(digits="1")
    call.expect.next_event().is_connect(to="+15550100099")  # sales
    call.hang_up()  # the bridge lasts until a side hangs up
    call.expect.next_event().is_hangup(by="caller")
    call.expect.no_more_events()


def test_ivr_asks_again_then_takes_a_message(relay_emulator, relay_app):
    relay_app("examples.ivr.app:client")
    call = relay_emulator.call("office", press("9"), silence(), press("3"))
    call.expect.next_event().is_answered()
    call.expect.next_event().is_prompt(MENU)
    call.expect.next_event().is_collected(digits="9")
    call.expect.next_event().is_prompt(f"Sorry. {MENU}")
    call.expect.next_event().is_collected(kind="no_input")
    call.expect.next_event().is_prompt(f"Sorry. {MENU}")
    call.expect.next_event().is_collected(digits="3")
    call.expect.next_event().is_prompt("Leave a message after the beep.")
    call.expect.next_event().is_recording()
    call.expect.next_event().is_prompt(GOODBYE)
    call.expect.next_event().is_hangup(by="app")
    call.expect.no_more_events()


def test_ivr_says_goodbye_after_three_tries(relay_emulator, relay_app):
    relay_app("examples.ivr.app:client")
    call = relay_emulator.call("office", silence(), no_match(), press("7"))
    call.expect.next_event().is_answered()
    for collected in ("no_input", "no_match", "digit"):
        call.expect.next_event().is_prompt(contains=MENU)
        call.expect.next_event().is_collected(kind=collected)
    call.expect.next_event().is_prompt(GOODBYE)
    call.expect.next_event().is_hangup(by="app")
    call.expect.no_more_events()


@pytest.mark.relay_ray
def test_ivr_on_ray(relay_emulator, relay_app):
    relay_app("examples.ivr.app:client")  # the marker: on a local Ray, the calls in CallActors
    support = relay_emulator.call("office", press("2#"))
    support.expect.next_event().is_answered()
    support.expect.next_event().is_prompt(MENU)
    support.expect.next_event().is_collected(digits="2")
    support.expect.next_event().is_connect(to="+15550100098")  # support
    support.hang_up()
    support.expect.next_event().is_hangup(by="caller")
    support.expect.no_more_events()


# --- voicemail (examples/voicemail) ---------------------------------------------------------


def test_voicemail_records_and_stores_the_message(relay_emulator, relay_app, tmp_path):
    relay_app("examples.voicemail.app:client", env={"VOICEMAIL_DIR": str(tmp_path)})
    call = relay_emulator.call("voicemail", from_number="+15551110001")
    call.expect.next_event().is_answered()
    call.expect.next_event().is_prompt(contains="Please leave a message after the beep.")
    recording = call.expect.next_event().is_recording()
    call.expect.next_event().is_prompt("Thank you. Goodbye.")
    call.expect.next_event().is_hangup(by="app")
    call.expect.no_more_events()
    [stored] = [json.loads(line) for line in (tmp_path / "voicemails.jsonl").read_text().splitlines()]
    assert stored["from"] == "+15551110001" and stored["url"] == recording.url


# --- outbound campaign (examples/dialer) ----------------------------------------------------


def test_dialer_screens_every_number(relay_emulator, relay_app, tmp_path: Path):
    relay_emulator.callee("+15552220001", human())
    relay_emulator.callee("+15552220002", machine())
    relay_emulator.callee("+15552220003", no_answer())
    relay_emulator.callee("+15552220004", busy())
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("+15552220001\n+15552220002\n+15552220003\n+15552220004\n")
    results = tmp_path / "results.jsonl"
    env = {"DIALER_NUMBERS": str(numbers), "DIALER_RESULTS": str(results), "DIALER_CONCURRENCY": "2"}
    app = relay_app("examples.dialer.app:client", "--task", "campaign", env=env)
    assert app.wait_exit() == 0  # the campaign's task ends the app

    person = relay_emulator.dialed("+15552220001").expect
    person.next_event().is_answered()
    person.next_event().is_detect("HUMAN")
    person.next_event().is_prompt(contains="Hello! This is a reminder")
    person.next_event().is_hangup(by="app")
    person.no_more_events()
    machine_ = relay_emulator.dialed("+15552220002").expect
    machine_.next_event().is_answered()
    machine_.next_event().is_detect("MACHINE")
    machine_.next_event().is_prompt(contains="No need to call back.")
    machine_.next_event().is_hangup(by="app")
    relay_emulator.dialed("+15552220003").expect.next_event().is_hangup(by="callee", reason="noAnswer")
    relay_emulator.dialed("+15552220004").expect.next_event().is_hangup(by="callee", reason="busy")
    outcomes = {r["number"]: r["outcome"] for r in map(json.loads, results.read_text().splitlines())}
    assert outcomes == {
        "+15552220001": "human", "+15552220002": "machine",
        "+15552220003": "no-answer", "+15552220004": "no-answer",
    }  # fmt: skip


# --- SMS auto-responder (examples/sms_responder) --------------------------------------------


def test_sms_responder_replies_by_keyword(relay_emulator, relay_app, tmp_path):
    relay_emulator.delivery("+15553330002", "undelivered")
    relay_app("examples.sms_responder.app:client", env={"RESPONDER_DIR": str(tmp_path)})
    hours = relay_emulator.sms("sms", "hours please", from_number="+15553330001")
    hours.expect.next_event().is_reply("We are open 9am-5pm, Monday to Friday.")
    hours.expect.next_event().is_delivery("delivered")
    hours.expect.no_more_events()
    other = relay_emulator.sms("sms", "hello?", from_number="+15553330002")
    other.expect.next_event().is_reply(contains="Reply HOURS for our opening hours.")
    other.expect.next_event().is_delivery("undelivered")
    other.expect.no_more_events()
