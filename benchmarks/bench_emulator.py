"""Throughput of the RELAY emulator: acked events per second to one client, emulator on one core.

Starts ``python -m relay_actors.emulator --no-journal`` pinned to CPU 0 (``taskset``),
connects one lean websockets client that acks every event, asks the emulator to
flood N events (``POST /sessions/{protocol}/flood``) and times until the last
event is received and acked. Bounded in time. Run: ``python benchmarks/bench_emulator.py [N]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time

import aiohttp
import orjson
import psutil
from websockets.asyncio.client import connect

from relay_actors.emulator import EmulatorProcess
from relay_actors.protocol.constants import AGENT, PROTOCOL_VERSION

TIME_LIMIT = 60.0


async def run(count: int) -> dict[str, float]:
    with EmulatorProcess(["--no-journal", "--ping-interval", "0"], cpu=0) as emu:
        proc = psutil.Process(emu.pid)
        async with connect(emu.url, ping_interval=None, max_size=None, compression=None) as ws:
            await ws.send(
                orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": "c1",
                        "method": "signalwire.connect",
                        "params": {
                            "version": PROTOCOL_VERSION,
                            "agent": AGENT,
                            "event_acks": True,
                            "authentication": {"project": emu.project, "token": emu.token},
                        },
                    }
                ),
                text=True,
            )
            protocol = None
            while protocol is None:
                frame = orjson.loads(await ws.recv())
                if frame.get("id") == "c1":
                    protocol = frame["result"]["protocol"]
            cpu_before = sum(proc.cpu_times()[:2])
            started = time.perf_counter()
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{emu.control_url}/sessions/{protocol}/flood", json={"count": count}
                ) as r:
                    r.raise_for_status()
            received = 0
            deadline = time.monotonic() + TIME_LIMIT
            loads, send = orjson.loads, ws.send
            async for raw in ws:
                frame = loads(raw)
                if frame.get("method") == "signalwire.event":
                    await send(
                        b'{"jsonrpc":"2.0","id":"' + frame["id"].encode() + b'","result":{}}', text=True
                    )
                    if frame["params"]["params"].get("call_id") == "flood":
                        received += 1
                        if received >= count:
                            break
                if time.monotonic() > deadline:
                    break
            # Wait until the emulator has seen every ack (no unacked events left).
            async with aiohttp.ClientSession() as http:
                while time.monotonic() < deadline:
                    async with http.get(f"{emu.control_url}/sessions/{protocol}") as r:
                        if (await r.json())["unacked"] == 0:
                            break
                    await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
            cpu = sum(proc.cpu_times()[:2]) - cpu_before
    return {"events": received, "seconds": elapsed, "events_per_s": received / elapsed, "emulator_cpu_s": cpu}


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with contextlib.suppress(AttributeError, OSError):
        # Keep the client off the emulator's core when there is another one.
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > 1:
            os.sched_setaffinity(0, [c for c in cpus if c != 0])
    result = asyncio.run(run(count))
    print(f"{'events':>10} {'seconds':>9} {'events/s':>10} {'emulator CPU s':>15}")
    print(
        f"{result['events']:>10} {result['seconds']:>9.2f} {result['events_per_s']:>10.0f}"
        f" {result['emulator_cpu_s']:>15.2f}"
    )
    return 0 if result["events"] >= count else 1


if __name__ == "__main__":
    sys.exit(main())
