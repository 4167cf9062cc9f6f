"""The test kit against a small app of its own (``apps/kit_desk.py``, served from that
directory with ``cwd=``): speech, a caller who gives up, a busy transfer target, audio
prompts, and the whole event list compared at once."""

from __future__ import annotations

from pathlib import Path

from relay_actors.testkit import Answered, Collected, HungUp, Prompt, busy, hang_up, press, say

APPS = Path(__file__).parent / "apps"
ASK = "Say a department, or press 0."
GOODBYE = "https://example.invalid/goodbye.mp3"


def test_speech_a_busy_transfer_and_a_caller_who_gives_up(relay_emulator, relay_app) -> None:
    relay_emulator.callee("+15550100098", busy())
    relay_app("kit_desk:client", cwd=APPS)
    call = relay_emulator.call("desk", say("support", confidence=0.8), hang_up(after=2))
    call.expect.next_event().is_answered()
    call.expect.next_event().is_prompt(ASK)
    assert call.expect.next_event().is_collected(speech="support").confidence == 0.8
    call.expect.next_event().is_connect(to="+15550100098", state="failed")
    call.expect.next_event().is_hangup(by="caller", reason="hangup")  # 2 s after the answer
    call.expect.no_more_events()

    keys = relay_emulator.call("desk", press("0"))
    assert keys.events() == [
        Answered(),
        Prompt(ASK, collects=True),
        Collected("digit", digits="0"),
        Prompt(urls=(GOODBYE,)),
        HungUp("app", "hangup"),
    ]
    # Steps spent: the caller does nothing.
    silent = relay_emulator.call("desk")
    silent.expect.skip_next(2)
    silent.expect.next_event().is_collected(kind="no_input")
    silent.expect.next_event().is_prompt(url=GOODBYE)
