"""One benchmark client process: ``ours`` (relay_actors) or ``sdk`` (the official signalwire-sdk).

Started by ``bench_clients.py`` with the emulator's coordinates in the environment
(``SIGNALWIRE_PROJECT_ID``, ``SIGNALWIRE_API_TOKEN``, ``SIGNALWIRE_SPACE``,
``SIGNALWIRE_RELAY_CA_FILE``). It connects, prints ``READY <protocol>``, runs one
scenario, and prints one JSON line: work done, wall and CPU seconds of this
process from READY to the end (imports and connect excluded).

Scenarios: ``inbound`` (answer → play TTS → wait finished → hang up, for calls the
parent injects), ``dial`` (N dials at once, each hung up) and ``message``
(N messages at once, each to delivered).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from typing import Any

PHONE = {"type": "phone", "params": {"from_number": "+15550100001", "to_number": "+15550100002"}}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_client(impl: str, context: str) -> Any:
    if impl == "sdk":
        from signalwire.relay import RelayClient as SdkClient

        return SdkClient(contexts=[context], max_active_calls=100_000)
    from relay_actors import RelayClient

    return RelayClient(contexts=[context], max_active_calls=100_000)


async def handle_call(call: Any) -> None:
    await call.answer()
    play = await call.play_tts("Hello from the benchmark.")
    await play.wait(timeout=60)
    await call.hangup()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    client = make_client(args.impl, args.context)
    done = 0
    failures = 0
    all_done = asyncio.Event()

    async def on_call(call: Any) -> None:
        nonlocal done, failures
        try:
            await handle_call(call)
        except Exception:
            failures += 1
        done += 1
        if done >= args.n:
            all_done.set()

    client.on_call(on_call)
    await client.connect()
    print(f"READY {client.relay_protocol}", flush=True)
    cpu0, t0 = cpu_seconds(), time.perf_counter()

    if args.scenario == "inbound":
        # The parent injects the calls now.
        await asyncio.wait_for(all_done.wait(), args.timeout)
    elif args.scenario == "dial":

        async def one() -> None:
            nonlocal done, failures
            try:
                call = await client.dial([[PHONE]], dial_timeout=args.timeout)
                await call.hangup()
            except Exception:
                failures += 1
            done += 1

        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(args.n))), args.timeout)
    elif args.scenario == "message":

        async def send(i: int) -> None:
            nonlocal done, failures
            try:
                message = await client.send_message(
                    to_number="+15550100002", from_number="+15550100001", body=f"bench {i}"
                )
                await message.wait(timeout=args.timeout)
            except Exception:
                failures += 1
            done += 1

        await asyncio.wait_for(asyncio.gather(*(send(i) for i in range(args.n))), args.timeout)

    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    await client.disconnect()
    return {
        "impl": args.impl,
        "scenario": args.scenario,
        "done": done,
        "failures": failures,
        "wall": wall,
        "cpu": cpu,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=["ours", "sdk"], required=True)
    parser.add_argument("--scenario", choices=["inbound", "dial", "message"], required=True)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--context", default="bench")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    os.environ.setdefault("SIGNALWIRE_LOG_MODE", "off")
    if args.impl == "ours":
        # As RelayClient.run() does: our own loop runner (uvloop when installed).
        from relay_actors.eventloop import run

        result = run(main_async(args))
    else:
        result = asyncio.run(main_async(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
