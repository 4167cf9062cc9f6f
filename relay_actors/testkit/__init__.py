"""A test kit for apps built on relay-actors: a pytest plugin (fixtures ``relay_emulator``
and ``relay_app``), scripted callers and a typed view of what happened on each call and
message. Guide: ``docs/how-to/testing-your-app.md``.

    from relay_actors.testkit import press

    def test_sales(relay_emulator, relay_app):
        relay_app("myapp:client")
        call = relay_emulator.call("office", press("1"))
        call.expect.next_event().is_answered()
        call.expect.next_event().is_prompt(contains="Press 1")
        call.expect.next_event().is_collected(digits="1")
        call.expect.next_event().is_connect(to="+15550100099")
"""

from .events import Answered, Collected, Connected, Delivery, Detected, HungUp, Prompt, Recording, Reply
from .expect import EventAssert, EventSequence
from .running import AppError, AppProcess, CallHandle, MessageHandle, ScriptedEmulator, UnknownContextError
from .script import (
    CallerScriptError,
    busy,
    hang_up,
    human,
    machine,
    no_answer,
    no_match,
    press,
    say,
    silence,
    unreachable,
)

__all__ = [
    "Answered",
    "AppError",
    "AppProcess",
    "CallHandle",
    "CallerScriptError",
    "Collected",
    "Connected",
    "Delivery",
    "Detected",
    "EventAssert",
    "EventSequence",
    "HungUp",
    "MessageHandle",
    "Prompt",
    "Recording",
    "Reply",
    "ScriptedEmulator",
    "UnknownContextError",
    "busy",
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
