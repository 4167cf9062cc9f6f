"""Failover of the in-process client's socket: fault → next call answered.

    python benchmarks/bench_failover.py [--rounds 10] [--faults drop,disconnect]

One emulator and one RelayClient (default reconnect settings) in this process.
Each round: the client has been up a while; the emulator drops the WebSocket
(``drop``: no close handshake) or asks the client to go (``disconnect``:
``signalwire.disconnect``, then close); from that moment a call is offered
every 10 ms until one is answered. The figure is the time from the fault to
the first answer on the new socket (calls answered on the old one while a
``disconnect`` is under way do not count). Run it with ``PYTHONPATH`` pointing at another
checkout to compare (``before``/``after``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys

from relay_actors import Call, RelayClient
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS


async def one_round(
    emu: Emulator, client: RelayClient, answered: list[tuple[float, int]], fault: str
) -> float:
    loop = asyncio.get_running_loop()
    protocol = client.relay_protocol
    lost_before = client.stats()["reconnects"]
    t0 = loop.time()
    if fault == "drop":
        emu.core.drop(protocol)
    else:
        emu.core.spawn(emu.core.disconnect(protocol))
    deadline = t0 + 30
    while loop.time() < deadline:
        emu.core.inject_calls("office", 1)
        await asyncio.sleep(0.01)
        after = [t for t, lost in answered if lost > lost_before]
        if after:
            return min(after) - t0
    raise RuntimeError(f"no call answered within 30 s of a {fault}")


async def main_async(args: argparse.Namespace) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {fault: [] for fault in args.faults.split(",")}
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS) as emu:
        client = RelayClient(
            project=emu.project, token=emu.token, host=emu.host, scheme="ws", contexts=["office"]
        )
        answered: list[tuple[float, int]] = []  # (when, reconnects so far)
        loop = asyncio.get_running_loop()

        @client.on_call
        async def handler(call: Call) -> None:
            await call.answer()
            answered.append((loop.time(), client.stats()["reconnects"]))
            await call.hangup()

        await client.connect()
        for _ in range(args.rounds):
            for fault in results:
                # Up for longer than the backoff's initial delay: a long-lived connection.
                await asyncio.sleep(1.5)
                results[fault].append(await one_round(emu, client, answered, fault))
        await client.disconnect()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--faults", default="drop,disconnect")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print(f"\nfault → next call answered, in-process, {args.rounds} rounds (seconds)")
    for fault, times in results.items():
        print(
            f"  {fault:<11} median {statistics.median(times):.3f}  max {max(times):.3f}  min {min(times):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
