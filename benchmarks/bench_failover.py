"""Failover: fault → next call answered, in-process and on Ray.

    python benchmarks/bench_failover.py [--rounds 10] [--faults drop,disconnect] [--runtimes inproc,ray]

In-process (``inproc``):
One emulator and one RelayClient (default reconnect settings) in this process.
Each round: the client has been up a while; the emulator drops the WebSocket
(``drop``: no close handshake) or asks the client to go (``disconnect``:
``signalwire.disconnect``, then close); from that moment a call is offered
every 10 ms until one is answered. The figure is the time from the fault to
the first answer on the new socket (calls answered on the old one while a
``disconnect`` is under way do not count). Run it with ``PYTHONPATH`` pointing at another
checkout to compare (``before``/``after``).

On Ray (``ray``: a local Ray of this process's own, 1 connection actor, 2 CallActors;
the emulator still in this process): the faults are ``drop``, ``disconnect`` and
``kill`` (``kill -9`` of the connection actor's process). Calls are offered every
10 ms from the fault on; the figure is the time to the first call answered on a
socket attached after the fault. For ``kill`` also: the time until the shard is
whole again (serving, every CallActor linked, the session resumed on the new socket).

``ray-standby``: the same with ``RayOptions(standby_connections=True)``: the kill's
process is the one serving the shard at the time, and its warm standby takes over.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

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


async def ray_handler(call: Call) -> None:
    """Runs in the CallActors (pickled by value with this module)."""
    await call.answer()
    await call.hangup()


async def shard_whole(client: RelayClient, emu: Emulator, protocol: str, old_peer: Any) -> bool:
    """Serving, every CallActor linked, the session attached on a socket newer than the fault's."""
    session = emu.core.session(protocol)
    if session.peer is None or session.peer is old_peer:
        return False
    try:
        stats = await asyncio.wait_for(client.ray_stats(), 2.0)
    except Exception:  # the shard restarting
        return False
    shard = stats["connections"][0]
    links = {k: v for k, v in (shard.get("links") or {}).items() if k != "_process"}
    return (
        shard.get("start_step") == "serving"
        and len(links) == len(stats["call_actors"])
        and all(link.get("connected") for link in links.values())
    )


async def one_ray_round(
    emu: Emulator, client: RelayClient, fault: str, pid: int, protocol: str
) -> tuple[float, float | None]:
    """Fault → first call answered on a new socket (and → shard whole, for ``kill``)."""
    session = emu.core.session(protocol)
    old_peer = session.peer
    t0 = time.monotonic()
    if fault == "drop":
        emu.core.drop(protocol)
    elif fault == "disconnect":
        emu.core.spawn(emu.core.disconnect(protocol))
    else:
        os.kill(pid, signal.SIGKILL)
    offered: list[str] = []
    on_old: set[str] = set()
    flowed: float | None = None
    whole: float | None = None
    next_offer = t0
    deadline = t0 + 30

    async def watch_whole() -> None:
        # Apart from the offers: a Ray call to a restarting actor waits for its restart.
        nonlocal whole
        while whole is None and time.monotonic() < deadline:
            if await shard_whole(client, emu, protocol, old_peer):
                whole = time.monotonic() - t0
            else:
                await asyncio.sleep(0.005)

    watcher = asyncio.ensure_future(watch_whole()) if fault == "kill" else None
    while time.monotonic() < deadline and flowed is None:
        now = time.monotonic()
        if now >= next_offer:
            offered += emu.core.inject_calls("office", 1)
            next_offer = now + 0.01
        calls = emu.core.calls.calls
        answered = {cid for cid in offered if cid in calls and calls[cid].answer_commands}
        if session.peer is None or session.peer is old_peer:
            on_old |= answered  # (a disconnect: the old socket still carries calls a while)
        elif answered - on_old:
            flowed = time.monotonic() - t0
        await asyncio.sleep(0.002)
    if watcher is not None:
        await watcher
    if flowed is None:
        raise RuntimeError(f"no call answered within 30 s of a {fault}")
    return flowed, whole


async def spare_cost(app: str, seconds: float = 5.0) -> None:
    """What the standby's spare process costs while it waits: its memory (PSS) and CPU."""
    import psutil
    import ray

    from relay_actors.ray_runtime.actor_messages import NAMESPACE, actor_name

    infos = [
        await ray.get_actor(actor_name(app, role, 0), namespace=NAMESPACE).seat_info.remote()
        for role in ("connection", "standby")
    ]
    spare = next(i for i in infos if not i["serving"])
    proc = psutil.Process(spare["pid"])
    before = proc.cpu_times()
    await asyncio.sleep(seconds)
    after = proc.cpu_times()
    cpu = (after.user + after.system - before.user - before.system) / seconds
    pss = proc.memory_full_info().pss / 2**20
    who = f"{spare['seat']} seat, pid {spare['pid']}"
    print(f"  the spare ({who}): PSS {pss:.1f} MiB, {100 * cpu:.2f}% of a core over {seconds:g} s")


async def ray_async(args: argparse.Namespace) -> dict[str, list[float]]:
    from bench_start import one_shard_app  # a script beside this one

    faults = args.faults.split(",")
    results: dict[str, list[float]] = {f: [] for f in faults}
    results.update({"kill: whole": []} if "kill" in faults else {})
    app = f"failover{os.getpid()}"
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS) as emu:
        client = RelayClient(
            project=emu.project,
            token=emu.token,
            host=emu.host,
            scheme="ws",
            contexts=["office"],
            runtime="ray",
            ray_options=replace(one_shard_app(app), standby_connections=args.standby),
        )
        client.on_call(ray_handler)
        await client.connect()
        try:
            if args.standby:
                await spare_cost(app)
            for _ in range(args.rounds):
                for fault in faults:
                    await asyncio.sleep(1.5)  # a long-lived connection (past the backoff's reset)
                    stats = await client.ray_stats()
                    shard = stats["connections"][0]
                    fault_at = time.monotonic()
                    flowed, whole = await one_ray_round(emu, client, fault, shard["pid"], shard["protocol"])
                    results[fault].append(flowed)
                    line = f"  {fault}: flowed {flowed:.3f}"
                    if whole is not None:
                        results["kill: whole"].append(whole)
                        # Where a restart's time goes: Ray's restart, then the shard's start-up steps.
                        new = (await client.ray_stats())["connections"][0]
                        began = float(new.get("start_began") or fault_at) - fault_at
                        steps = ", ".join(
                            f"{k} {began + t:.3f}" for k, t in (new.get("start_took") or {}).items()
                        )
                        line += f", whole {whole:.3f} (new process began start-up at {began:.3f}: {steps})"
                    print(line, flush=True)
        finally:
            await client.disconnect()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--faults", default=None, help="default: drop,disconnect (and kill on Ray)")
    parser.add_argument("--runtimes", default="inproc", help="inproc, ray, ray-standby, or a list")
    args = parser.parse_args()
    asked = args.faults
    for runtime in args.runtimes.split(","):
        if runtime in ("ray", "ray-standby"):
            args.standby = runtime == "ray-standby"
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            args.faults = asked or "drop,disconnect,kill"
            results = asyncio.run(ray_async(args))
            import ray

            ray.shutdown()
        else:
            args.faults = asked or "drop,disconnect"
            results = asyncio.run(main_async(args))
        print(f"\nfault → next call answered, {runtime}, {args.rounds} rounds (seconds)")
        for fault, times in results.items():
            if times:
                print(
                    f"  {fault:<11} median {statistics.median(times):.3f}  max {max(times):.3f}  "
                    f"min {min(times):.3f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
