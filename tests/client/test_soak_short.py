"""A short soak of the in-process client: calls at a steady rate, and memory that stays
flat after warm-up (``benchmarks/bench_soak.py`` is the long one, on Ray too).

The emulator runs in its own process, so what this process allocates is the client's.
Growth is the difference in what ``tracemalloc`` holds (garbage collected) between two
points after warm-up: robust on a loaded machine, where RSS is not.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import aiohttp
import pytest

from relay_actors import Call, RelayClient
from relay_actors.emulator import EmulatorProcess
from relay_actors.emulator.testing import wait_until

#: Calls/s; calls to warm up; calls traced before the first snapshot (a bounded table such
#: as the session's window of event ids turns over in them: its entries are then all traced,
#: and its churn no longer reads as growth); calls measured between the two snapshots.
RATE = 200.0
WARMUP = 300
SETTLE = 250
MEASURED = 500
#: The session's window of event ids (4,096), small here so that it turns over in SETTLE
#: calls; its bound is the session's own test.
DEDUPE_WINDOW = 256
#: Generous: a leaked call (its Call, core, strings, handler task) is ~4 KB; bounded
#: tables and allocator slack after warm-up are well under this.
MAX_GROWTH_PER_CALL = 512


@pytest.fixture
def emulator_process() -> Any:
    durations = "play=0.05,ring=0.01,answer=0.01,message=0.002,step=0.002"
    with EmulatorProcess(["--ping-interval", "0", "--durations", durations]) as emu:
        yield emu


async def test_memory_is_flat_after_warm_up(emulator_process: Any) -> None:
    emu = emulator_process
    completed = 0

    async def on_call(call: Call) -> None:
        nonlocal completed
        await call.answer()
        await (await call.play_tts("soak")).wait(timeout=30)
        await call.hangup()
        completed += 1

    client = RelayClient(
        project=emu.project,
        token=emu.token,
        host=emu.host,
        scheme="ws",
        contexts=["soak"],
        max_active_calls=10_000,
    )
    client.on_call(on_call)
    await client.connect()
    client._connection().session.recent_events.size = DEDUPE_WINDOW
    try:
        async with aiohttp.ClientSession() as http:

            async def inject(count: int) -> None:
                body = {"context": "soak", "count": count, "rate": RATE}
                async with http.post(f"{emu.control_url}/calls", json=body) as resp:
                    assert resp.status == 200, await resp.text()

            async def all_done(total: int) -> None:
                await wait_until(
                    lambda: completed >= total and not client._host.calls, timeout=60 + total / RATE * 4
                )

            await inject(WARMUP)
            await all_done(WARMUP)
            tracemalloc.start(1)
            try:
                await inject(SETTLE)
                await all_done(WARMUP + SETTLE)
                gc.collect()
                before = tracemalloc.take_snapshot()
                await inject(MEASURED)
                await all_done(WARMUP + SETTLE + MEASURED)
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
    finally:
        await client.disconnect()
    assert completed == WARMUP + SETTLE + MEASURED
    diff = after.compare_to(before, "lineno")
    per_call = sum(d.size_diff for d in diff) / MEASURED
    sites = "\n".join(f"  {d.size_diff / MEASURED:8.1f} B/call  {d.traceback}" for d in diff[:10])
    assert per_call <= MAX_GROWTH_PER_CALL, f"{per_call:.0f} B/call still held after warm-up:\n{sites}"
