"""One benchmark client: ``sdk`` (the official signalwire-sdk), ``ours`` (in-process
RelayClient) or ``ray`` (RelayClient on a local Ray it starts, ``--shards`` connection actors).

Started by ``bench_clients.py`` with the emulator's coordinates in the environment
(``SIGNALWIRE_PROJECT_ID``, ``SIGNALWIRE_API_TOKEN``, ``SIGNALWIRE_SPACE``,
``SIGNALWIRE_RELAY_CA_FILE``). Protocol on stdout/stdin, so the parent can measure
this process tree (CPU, memory) from outside at the right moments:

    READY <protocol> [<protocol> ...]   connected (Ray: every actor up)
    DONE {json}                         the scenario is over; then it waits for a line on stdin
    BYE                                 disconnected and stopped

Scenarios: ``inbound`` (answer → play TTS → wait finished → hang up, for calls the
parent injects), ``hold`` (answer, then wait for the far end to hang up),
``dial`` (N dials at once, each hung up), ``message`` (N messages at once to delivered),
``stall`` (answer → hang up, but the handler of a call to ``STALL_NUMBER`` first blocks
its loop for ``--stall-seconds`` with blocking code: ``bench_stall.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

PHONE = {"type": "phone", "params": {"from_number": "+15550100001", "to_number": "+15550100002"}}


async def inbound_flow(call: Any) -> None:
    await call.answer()
    play = await call.play_tts("Hello from the benchmark.")
    await play.wait(timeout=60)
    await call.hangup()


#: The number dialled by the calls whose handler blocks its loop (``stall`` scenario).
STALL_NUMBER = "+15550199999"


def stalls(device: dict[str, Any]) -> bool:
    """Whether the handler of a call to ``device`` blocks its loop (set by whoever made the call)."""
    return bool((device.get("params") or {}).get("to_number") == STALL_NUMBER)


def stall_flow(seconds: float, log_dir: str | None = None) -> Any:
    """The stall scenario's handler. With ``log_dir``, each process notes in
    ``<log_dir>/<pid>.log`` which calls it answered (``call <call_id>``) and when its loop
    was blocked (``stall <start> <end>``, wall clock as the emulator's journal), so the
    parent can tell the calls that shared a loop with a stall from those that did not."""

    def note(line: str) -> None:
        if log_dir is not None:
            with open(os.path.join(log_dir, f"{os.getpid()}.log"), "a") as f:
                f.write(line + "\n")

    async def flow(call: Any) -> None:
        if stalls(call.device):
            started = time.time()
            time.sleep(seconds)  # noqa: ASYNC251 - the blocking code under test
            note(f"stall {started} {time.time()}")
        await call.answer()
        note(f"call {call.call_id}")
        await call.hangup()

    return flow


async def hold_flow(call: Any) -> None:
    await call.answer()
    await call.wait_for_ended()


def actor_pids(stats: dict[str, Any]) -> dict[str, list[int]]:
    """``{"router": [pid], "connection": [pid, ...], "call_actor": [pid, ...]}`` from ``ray_stats()``."""
    return {
        "router": [stats["router"]["pid"]] if stats.get("router") else [],
        "connection": [s["pid"] for s in stats["connections"]],
        "call_actor": [a["pid"] for a in stats["call_actors"]],
    }


def link_totals(stats: dict[str, Any]) -> dict[str, int]:
    """Frames and bytes both ways on the connection actors' links (each link counted once:
    the connection actor's end sees what it sent and what it received)."""
    totals: dict[str, int] = {}
    for shard in stats["connections"]:
        for peer, figures in (shard.get("links") or {}).items():
            if peer == "_process":
                continue
            for key in ("frames_out", "frames_in", "bytes_out", "bytes_in", "acks_out"):
                totals[key] = totals.get(key, 0) + int(figures.get(key, 0))
    return totals


def make_client(args: argparse.Namespace) -> Any:
    if args.impl == "sdk":
        from signalwire.relay import RelayClient as SdkClient

        return SdkClient(contexts=[args.context], max_active_calls=100_000)
    from relay_actors import RelayClient

    if args.impl == "ray":
        from relay_actors.ray_runtime import RayOptions

        options = RayOptions(
            app=f"bench{os.getpid()}",
            connections=args.shards,
            min_call_actors=2,
            max_call_actors=max(2, args.max_call_actors),
            calls_per_actor=20_000,
            call_actor_cpus=0.01,
            **({} if args.link_linger is None else {"link_linger": args.link_linger}),
        )
        return RelayClient(
            contexts=[args.context], max_active_calls=100_000, runtime="ray", ray_options=options
        )
    return RelayClient(contexts=[args.context], max_active_calls=100_000)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    client = make_client(args)
    done = 0
    failures = 0
    all_done = asyncio.Event()
    flow = hold_flow if args.scenario == "hold" else inbound_flow
    if args.scenario == "stall":
        flow = stall_flow(args.stall_seconds, args.stall_log)

    async def on_call(call: Any) -> None:
        nonlocal done, failures
        try:
            await flow(call)
        except Exception:
            failures += 1
        done += 1
        if done >= args.n:
            all_done.set()

    if args.impl == "ray":
        # Runs inside the CallActors: completion is read from their stats.
        async def on_call_remote(call: Any) -> None:
            await flow(call)

        client.on_call(on_call_remote)
    else:
        client.on_call(on_call)
    await client.connect()
    protocols = [client.relay_protocol]
    link0: dict[str, int] = {}
    if args.impl == "ray":
        stats = await client.ray_stats()
        protocols = [s["protocol"] for s in stats["connections"]]
        # Which process is which actor (``profile_actors.py`` samples them by pid).
        print("PIDS " + json.dumps(actor_pids(stats)), flush=True)
        link0 = link_totals(stats)
    print("READY " + " ".join(protocols), flush=True)
    t0 = time.perf_counter()

    loop = asyncio.get_running_loop()
    extra: dict[str, Any] = {}
    if args.scenario in ("inbound", "hold", "stall"):
        # The parent watches the emulator and says "stop" when every call is through:
        # polling our own actors from here would be charged to the run.
        await loop.run_in_executor(None, sys.stdin.readline)
        # The CPU sample is taken: let the last handlers return before counting them.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if args.impl == "ray":
                stats = await client.ray_stats()
                actors = stats["call_actors"]
                done = sum(a.get("handlers_completed", 0) for a in actors)
                failures = sum(a.get("handler_errors", 0) for a in actors) + sum(
                    s.get("offers_dropped", 0) + s.get("offers_no_capacity", 0) for s in stats["connections"]
                )
            if done + failures >= args.n:
                break
            await asyncio.sleep(0.1)
        if args.impl == "ray":
            extra["offers_dropped"] = sum(
                s.get("offers_dropped", 0) + s.get("offers_no_capacity", 0) for s in stats["connections"]
            )
            link1 = link_totals(stats)
            extra["link"] = {k: v - link0.get(k, 0) for k, v in link1.items()}
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
                # Bounded: the official SDK drops state events that beat the send
                # result (its known race), and its wait() then never returns.
                await message.wait(timeout=10)
            except Exception:
                failures += 1
            done += 1

        await asyncio.wait_for(asyncio.gather(*(send(i) for i in range(args.n))), args.timeout)

    wall = time.perf_counter() - t0
    print("DONE " + json.dumps({"done": done, "failures": failures, "wall": wall, **extra}), flush=True)
    # The parent samples CPU and memory now, then lets us go.
    await loop.run_in_executor(None, sys.stdin.readline)
    await client.disconnect()
    if args.impl == "ray":
        import ray

        ray.shutdown()
    print("BYE", flush=True)
    return {"done": done}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=["ours", "sdk", "ray"], required=True)
    parser.add_argument("--scenario", choices=["inbound", "hold", "dial", "message", "stall"], required=True)
    parser.add_argument("--stall-seconds", type=float, default=6.0, help="stall: how long it blocks")
    parser.add_argument(
        "--stall-log", default=None, help="stall: a directory where each process notes its calls and stalls"
    )
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument(
        "--max-call-actors", type=int, default=2, help="ray: the pool's bound (2 CallActors to start with)"
    )
    parser.add_argument(
        "--link-linger", type=float, default=None, help="RayOptions.link_linger (default: its own)"
    )
    parser.add_argument("--context", default="bench")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    os.environ.setdefault("SIGNALWIRE_LOG_MODE", "off")
    if args.impl == "sdk":
        asyncio.run(main_async(args))
    else:
        # As RelayClient.run() does: our own loop runner (uvloop when installed).
        from relay_actors.eventloop import run

        run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
