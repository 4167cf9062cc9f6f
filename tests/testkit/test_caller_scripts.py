"""Caller scripts (sans-IO): the steps become the emulator's caller inputs and per-number
outcomes; a step that makes no sense is refused with a message that says what to write."""

from __future__ import annotations

import pytest

from relay_actors.testkit import (
    CallerScriptError,
    busy,
    hang_up,
    human,
    machine,
    no_match,
    press,
    say,
    silence,
)
from relay_actors.testkit.script import callee_config, caller_options


def test_steps_become_the_emulators_inputs_and_outcomes() -> None:
    steps = [press("9"), silence(), say("sales", 0.8), no_match(), machine(), hang_up(after=2)]
    assert caller_options(steps) == {
        "inputs": [
            {"digits": "9"}, {"silence": True}, {"speech": "sales", "confidence": 0.8}, {"no_match": True},
        ],
        "collect": {"type": "no_input", "params": {}},
        "detect": ["MACHINE", "READY"],
        "hangup_after": 2.0,
    }  # fmt: skip
    assert callee_config("+15552220001", [human(), press("1")]) == {
        "caller_inputs": {"+15552220001": [{"digits": "1"}]},
        "detect_outcomes": {"+15552220001": ["HUMAN"]},
    }
    assert callee_config("+15552220004", [busy()])["dial_outcomes"] == {"+15552220004": "busy"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: press("12x"), r"press\('12x'\): keys are a non-empty string of 0-9 \* # A-D"),
        (lambda: press(""), r"press\(''\): keys are a non-empty string"),
        (lambda: say("  "), r"say\('  '\): say what, e.g. say\('sales'\); for nothing use silence\(\)"),
        (lambda: say("yes", confidence=2), r"confidence is between 0 and 1"),
        (lambda: hang_up(after=-1), r"hang_up\(after=-1\): after is seconds from the answer"),
        (lambda: caller_options(["1"]), r"step 1, '1', is not a caller step \(for keys write press\('1'\)\)"),
        (lambda: caller_options([hang_up(after=1), press("1")]),
         r"press\('1'\) comes after hang_up\(after=1\); hang_up\(...\) must be the last step"),
        (lambda: caller_options([human(), machine()]), r"machine\(\) — only one detect step per call"),
        (lambda: caller_options([busy()]), r"busy\(\) is how a number the app dials answers; give it to "
         r"relay_emulator.callee\(number, busy\(\)\)"),
        (lambda: callee_config("+1555", [hang_up(after=1)]), r"is for calls placed with relay_emulator.call"),
        (lambda: callee_config("", [busy()]), r"the number the app dials"),
    ],
)  # fmt: skip
def test_a_step_that_makes_no_sense_is_refused_clearly(make, message) -> None:
    with pytest.raises(CallerScriptError, match=message):
        make()
