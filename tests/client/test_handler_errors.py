"""A handler that raises ends its call (``on_handler_error``), and handler log records carry the call id."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from relay_actors import Call, RelayClient
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import wait_until
from relay_actors.errors import ArgumentError
from relay_actors.logcontext import LOG_FORMAT
from relay_actors.ray_runtime import default_app_name

from .conftest import Harness, client_kwargs


async def test_a_raising_handler_hangs_its_call_up(make_harness: Any) -> None:
    h: Harness = await make_harness()
    client = h.client

    @client.on_call
    async def handler(call: Call) -> None:
        await call.answer()
        raise RuntimeError("handler bug")

    (call_id,) = h.core.inject_calls("office", 1)
    # The emulator's own view: the call ended, hung up by the client with reason "error".
    await wait_until(lambda: h.core.calls.calls[call_id].state == "ended")
    assert h.core.calls.calls[call_id].end_reason == "error"
    assert h.request("calling.end", call_id=call_id)["reason"] == "error"
    await wait_until(lambda: client.stats().get("calls_hung_up_handler_error") == 1)
    assert client.stats()["handler_errors"] == 1 and client.connected
    await wait_until(lambda: client.stats()["active_calls"] == 0)


async def test_a_handler_that_raised_after_the_call_ended_sends_nothing(make_harness: Any) -> None:
    h: Harness = await make_harness()
    ended = asyncio.Event()

    @h.client.on_call
    async def handler(call: Call) -> None:
        await call.answer()
        await call.hangup()
        await call.wait_for_ended(timeout=5)
        ended.set()
        raise RuntimeError("bug after the hang-up")

    (call_id,) = h.core.inject_calls("office", 1)
    await asyncio.wait_for(ended.wait(), 5)
    await wait_until(lambda: h.client.stats().get("handler_errors") == 1)
    assert [r["reason"] for r in h.requests("calling.end", call_id=call_id)] == ["hangup"]
    assert "calls_hung_up_handler_error" not in h.client.stats()


def test_unknown_policy_is_refused(emulator: Emulator) -> None:
    with pytest.raises(ArgumentError, match="on_handler_error must be one of"):
        RelayClient(**client_kwargs(emulator, on_handler_error="ignore"))


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_handler_log_records_carry_the_call_id(make_harness: Any) -> None:
    h: Harness = await make_harness()
    app_log = logging.getLogger("tests.my_app")
    capture = _Capture()
    app_log.addHandler(capture)
    app_log.setLevel(logging.INFO)
    done = asyncio.Event()

    async def in_a_child_task() -> None:
        app_log.info("from a task the handler started")

    @h.client.on_call
    async def handler(call: Call) -> None:
        app_log.info("pressed %s", "1")
        await asyncio.create_task(in_a_child_task())
        await call.hangup()
        done.set()

    try:
        (call_id,) = h.core.inject_calls("office", 1)
        await asyncio.wait_for(done.wait(), 5)
        app_log.info("outside any handler")
    finally:
        app_log.removeHandler(capture)
    inside, child, outside = capture.records
    assert inside.call_id == child.call_id == call_id  # type: ignore[attr-defined]
    app = default_app_name()  # the program's name, as for a Ray app
    assert inside.app == app  # type: ignore[attr-defined]
    assert outside.call_id == "-"  # type: ignore[attr-defined]
    line = capture.format(inside)
    assert f"{app} {call_id} tests.my_app: pressed 1" in line


def test_unknown_runtime_is_refused_before_anything_starts(emulator: Emulator) -> None:
    with pytest.raises(ArgumentError, match="runtime must be 'local' or 'ray', not 'thread'"):
        RelayClient(**client_kwargs(emulator, runtime="thread"))
