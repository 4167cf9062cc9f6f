"""What the far side of a call does, as a list of steps (sans-IO).

``press("1")``, ``say("sales")``, ``silence()`` and ``no_match()`` answer the app's
prompts one by one (one step per collect, in order); ``hang_up(after=5)`` hangs up
that many seconds after the app answers; ``machine()`` and ``human()`` decide what
answering-machine detection finds; ``busy()``, ``no_answer()`` and ``unreachable()``
say how a number the app dials answers. The steps become the emulator's caller inputs
(``CONTROL_API.md``, *Caller input*) and its per-number outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..emulator.caller import DTMF_KEYS

__all__ = [
    "CallerScriptError",
    "Step",
    "busy",
    "callee_config",
    "caller_options",
    "hang_up",
    "human",
    "machine",
    "no_answer",
    "no_match",
    "press",
    "say",
    "silence",
    "unreachable",
]

_STEPS = "press('1'), say('sales'), silence(), no_match(), hang_up(after=5), machine(), human()"
_DIAL_STEPS = "busy(), no_answer(), unreachable()"


class CallerScriptError(ValueError):
    """A caller script that makes no sense; the message says which step and what to write."""


@dataclass(frozen=True)
class Step:
    """One step of a caller script (made by :func:`press`, :func:`say`, ...)."""

    kind: str  # input, hang_up, detect, dial
    value: Any
    label: str

    def __repr__(self) -> str:
        return self.label


def press(keys: str) -> Step:
    """The caller presses ``keys`` (``0-9 * # A-D``) at the next collect."""
    if not isinstance(keys, str) or not keys or any(k not in DTMF_KEYS for k in keys):
        raise CallerScriptError(
            f"press({keys!r}): keys are a non-empty string of 0-9 * # A-D, e.g. press('1#')"
        )
    return Step("input", {"digits": keys}, f"press({keys!r})")


def say(text: str, confidence: float = 0.93) -> Step:
    """The caller says ``text`` at the next collect (recognised with ``confidence``)."""
    if not isinstance(text, str) or not text.strip():
        raise CallerScriptError(f"say({text!r}): say what, e.g. say('sales'); for nothing use silence()")
    if not 0 <= confidence <= 1:
        raise CallerScriptError(f"say({text!r}, confidence={confidence!r}): confidence is between 0 and 1")
    return Step("input", {"speech": text, "confidence": confidence}, f"say({text!r})")


def silence() -> Step:
    """The caller does nothing at the next collect (``no_input``)."""
    return Step("input", {"silence": True}, "silence()")


def no_match() -> Step:
    """The caller says something the recogniser cannot match at the next collect (``no_match``)."""
    return Step("input", {"no_match": True}, "no_match()")


def hang_up(after: float) -> Step:
    """The caller hangs up ``after`` seconds once the app answered (the last step)."""
    if isinstance(after, bool) or not isinstance(after, (int, float)) or after < 0:
        raise CallerScriptError(
            f"hang_up(after={after!r}): after is seconds from the answer, e.g. hang_up(after=5)"
        )
    return Step("hang_up", float(after), f"hang_up(after={after!r})")


def machine() -> Step:
    """An answering machine picks up: detection finds ``MACHINE`` (then the beep, ``READY``)."""
    return Step("detect", ["MACHINE", "READY"], "machine()")


def human() -> Step:
    """A person picks up: detection finds ``HUMAN``."""
    return Step("detect", ["HUMAN"], "human()")


def busy() -> Step:
    """The dialled number is busy (it rings, then ends ``busy``)."""
    return Step("dial", "busy", "busy()")


def no_answer() -> Step:
    """The dialled number rings and nobody answers (``noAnswer``)."""
    return Step("dial", "no-answer", "no_answer()")


def unreachable() -> Step:
    """The dialled number cannot be reached (ends ``error`` without ringing)."""
    return Step("dial", "failure", "unreachable()")


def _checked(steps: Sequence[Any], where: str) -> list[Step]:
    out: list[Step] = []
    for index, step in enumerate(steps):
        if not isinstance(step, Step):
            hint = f" (for keys write press({step!r}))" if isinstance(step, str) else ""
            raise CallerScriptError(
                f"{where}: step {index + 1}, {step!r}, is not a caller step{hint}; use {_STEPS}"
            )
        if out and out[-1].kind == "hang_up":
            raise CallerScriptError(
                f"{where}: {step!r} comes after {out[-1]!r}; hang_up(...) must be the last step"
            )
        if step.kind in ("detect", "dial", "hang_up") and any(s.kind == step.kind for s in out):
            raise CallerScriptError(f"{where}: {step!r} — only one {step.kind} step per call")
        out.append(step)
    return out


def caller_options(steps: Sequence[Any]) -> dict[str, Any]:
    """Options of ``inject_calls`` for a call into the app that does ``steps``.

    Raises:
        CallerScriptError: a step that is not one, out of place, or only for dialled numbers.
    """
    checked = _checked(steps, "relay_emulator.call")
    options: dict[str, Any] = {
        "inputs": [s.value for s in checked if s.kind == "input"],
        # Once the steps are spent the caller does nothing (not the emulator's default caller).
        "collect": {"type": "no_input", "params": {}},
    }
    for step in checked:
        if step.kind == "dial":
            raise CallerScriptError(
                f"relay_emulator.call: {step!r} is how a number the app dials answers; "
                f"give it to relay_emulator.callee(number, {step!r})"
            )
        if step.kind == "hang_up":
            options["hangup_after"] = step.value
        elif step.kind == "detect":
            options["detect"] = step.value
    return options


def callee_config(number: str, steps: Sequence[Any]) -> dict[str, Any]:
    """The emulator configuration (merged maps) for a number the app dials that does ``steps``.

    Raises:
        CallerScriptError: a bad number, a step that is not one, or ``hang_up`` (not available
            for dialled numbers).
    """
    if not isinstance(number, str) or not number.strip():
        raise CallerScriptError(
            f"relay_emulator.callee({number!r}): the number the app dials, e.g. '+15552220001'"
        )
    checked = _checked(steps, f"relay_emulator.callee({number!r})")
    config: dict[str, Any] = {"caller_inputs": {number: [s.value for s in checked if s.kind == "input"]}}
    for step in checked:
        if step.kind == "hang_up":
            raise CallerScriptError(
                f"relay_emulator.callee({number!r}): {step!r} is for calls placed with relay_emulator.call; "
                "a dialled number stays on until the app hangs up"
            )
        if step.kind == "dial":
            config["dial_outcomes"] = {number: step.value}
        elif step.kind == "detect":
            config["detect_outcomes"] = {number: step.value}
    return config
