"""Where a held call's bytes go: tracemalloc sites of N calls held open in one process.

    python benchmarks/bench_call_memory.py [--n 3000] [--key lineno|traceback]

The in-process client (this process) against the emulator (its own process): warm-up,
then N inbound calls answered and held; the allocations still alive, grouped by
file:line (or by the innermost frames), divided by N. Also the traced peak of the burst
(short-lived objects set the allocator's high-water mark, which PSS shows) and what is
left once the calls have ended.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tracemalloc
from typing import Any

# A script beside this one (python puts the script's directory on the path).
from bench_clients import http

from relay_actors import Call, RelayClient
from relay_actors.emulator import EmulatorProcess
from relay_actors.eventloop import run


def site(trace: tracemalloc.Traceback, frames: int) -> str:
    return " <- ".join(
        f"{f.filename.split('site-packages/')[-1].split('/relay_actors/')[-1]}:{f.lineno}"
        for f in list(reversed(list(trace)))[:frames]
    )


async def measure(emu: EmulatorProcess, n: int, key: str, top: int) -> None:
    loop = asyncio.get_running_loop()
    waiting = 0

    async def on_call(call: Call) -> None:
        nonlocal waiting
        await call.answer()
        waiting += 1
        try:
            await call.wait_for_ended()
        finally:
            waiting -= 1

    client = RelayClient(
        project=emu.project,
        token=emu.token,
        host=emu.host,
        scheme="ws",
        contexts=["mem"],
        max_active_calls=n * 2,
    )
    client.on_call(on_call)
    await client.connect()

    def control(method: str, path: str, body: Any = None) -> Any:
        return loop.run_in_executor(None, http, method, f"{emu.control_url}{path}", body)

    async def hold(count: int) -> None:
        await control("POST", "/calls", {"context": "mem", "count": count, "hangup_after": 3600})
        while waiting < count:  # noqa: ASYNC110  (a benchmark polling its own counter)
            await asyncio.sleep(0.05)

    async def release() -> None:
        for call in (await control("GET", "/calls?state=answered"))["calls"]:
            await control("POST", f"/calls/{call['call_id']}/hangup", {})
        while waiting or client._host.calls:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    try:
        await hold(200)
        await release()
        gc.collect()
        tracemalloc.start(8)
        before = tracemalloc.take_snapshot()
        await hold(n)
        gc.collect()
        held = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        await release()
        gc.collect()
        ended = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        await client.disconnect()
    diff = held.compare_to(before, key)
    print(
        f"{n} held calls: {sum(d.size_diff for d in diff) / n:.0f} B/call alive "
        f"(traced now {current / n:.0f}, peak of the burst {peak / n:.0f} B/call)\n"
    )
    print(f"{'B/call':>8}{'objects/call':>14}  site")
    for d in diff[:top]:
        print(
            f"{d.size_diff / n:8.1f}{d.count_diff / n:14.2f}"
            f"  {site(d.traceback, 4 if key == 'traceback' else 1)}"
        )
    left = ended.compare_to(before, "lineno")
    print(f"\nonce they ended: {sum(d.size_diff for d in left) / n:.0f} B/call left (bounded tables fill)")
    for d in left[:5]:
        print(f"{d.size_diff / n:8.1f}{d.count_diff / n:14.2f}  {site(d.traceback, 1)}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=3000, help="calls held")
    parser.add_argument("--key", choices=["lineno", "traceback"], default="lineno")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    durations = "play=0.05,ring=0.01,answer=0.01,message=0.002,step=0.002"
    with EmulatorProcess(["--ping-interval", "0", "--durations", durations]) as emu:
        http("POST", f"{emu.control_url}/config", {"journal_limit": 1000, "ring_timeout": 600})
        run(measure(emu, args.n, args.key, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
