"""An IVR handler reaches every branch when the emulator's callers are scripted (inputs per call)."""

from __future__ import annotations

import asyncio
from typing import Any

from relay_actors import Call

from .conftest import Harness

MENU = {"digits": {"max": 1, "digit_timeout": 5, "terminators": "#"}, "speech": {}}


async def test_each_scripted_caller_takes_its_branch(make_harness: Any) -> None:
    h: Harness = await make_harness()
    branches: dict[str, list[str]] = {}
    done: asyncio.Queue[str] = asyncio.Queue()

    @h.client.on_call
    async def ivr(call: Call) -> None:
        await call.answer()
        taken: list[str] = []
        for _ in range(2):  # the menu, then once more
            prompt = await call.prompt_tts("Press 1 for sales, or say a department.", MENU)
            result = (await prompt.wait(timeout=5)).params["result"]
            taken.append(result["params"].get("digits") or result["params"].get("text") or result["type"])
        branches[call.call_id] = taken
        await call.hangup()
        done.put_nowait(call.call_id)

    scripts = {
        "press 2 then 1": [{"digits": "2"}, {"digits": "1#"}],
        "say sales, then silence": [{"speech": "sales"}, {"silence": True}],
        "unscripted": None,
    }
    ids = {
        name: h.core.inject_calls("office", 1, **({"inputs": inputs} if inputs else {}))[0]
        for name, inputs in scripts.items()
    }
    for _ in scripts:
        await asyncio.wait_for(done.get(), 10)
    assert branches[ids["press 2 then 1"]] == ["2", "1"]
    assert branches[ids["say sales, then silence"]] == ["sales", "no_input"]
    assert branches[ids["unscripted"]] == ["1", "1"]  # the default caller presses 1234#: max 1 keeps "1"
