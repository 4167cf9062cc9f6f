"""A stall of our own loop is not a failure: a handler that blocks the loop for longer
than the request timeout costs no reconnect and fails no request that the server answers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from relay_actors import Call
from relay_actors.backoff import Backoff
from relay_actors.config import resolve_settings
from relay_actors.connection import Connection
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import wait_until

from .conftest import Harness

TIMEOUT = 0.3
STALL = 2.5 * TIMEOUT


async def test_a_request_written_after_a_stall_is_not_timed_out(emulator: Emulator) -> None:
    settings = resolve_settings(
        emulator.project, emulator.token, None, emulator.host, ["office"], scheme="ws", env={}
    )
    conn = Connection(
        settings, on_event=lambda event, ack: None, request_timeout=TIMEOUT, backoff=Backoff(initial=0.02)
    )
    await conn.start()
    try:
        reply = conn.request("signalwire.ping", {})
        # Blocking code before the loop gets back: the request's frame leaves only after
        # this, and its timer is overdue by then.
        time.sleep(STALL)  # noqa: ASYNC251 - the stall under test
        assert "timestamp" in await asyncio.wait_for(reply, 5)
        stats = conn.stats()
        assert stats["reconnects"] == 0 and conn.connected
        assert stats["loop_stalls"] >= 1 and stats["loop_stalled_s"] >= TIMEOUT
    finally:
        await conn.close()


async def test_a_handler_that_blocks_the_loop_costs_no_call_and_no_reconnect(make_harness: Any) -> None:
    h: Harness = await make_harness(connect=False, request_timeout=TIMEOUT)
    answered: list[str] = []
    failed: list[BaseException] = []
    seen = 0

    @h.client.on_call
    async def handler(call: Call) -> None:
        nonlocal seen
        seen += 1
        if seen % 3 == 2:
            time.sleep(STALL)  # noqa: ASYNC251 - blocking code in a handler, under test
        try:
            await call.answer()
            answered.append(call.call_id)
        except Exception as exc:  # what must not happen
            failed.append(exc)

    await h.client.connect()
    protocol = h.protocol
    # Offers in one read: the handlers run in one loop iteration, the answers of the
    # first wait behind the stall of the second.
    ids = h.core.inject_calls("office", 6)
    await wait_until(lambda: len(answered) + len(failed) == len(ids), timeout=15)
    assert failed == []
    assert sorted(answered) == sorted(ids)
    assert h.client.stats()["reconnects"] == 0 and h.client.relay_protocol == protocol
    assert h.client.stats()["loop_stalls"] >= 1
