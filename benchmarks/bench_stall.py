"""Handlers that block their loop: the official SDK, our in-process RelayClient and our
Ray runtime, same emulator, same run.

    python benchmarks/bench_stall.py [--rate 10] [--duration 15] [--stall-every 30]
                                     [--stall-seconds 6] [--impls sdk,ours,ray1] [--repeat 1]
                                     [--max-call-actors 8]

Calls arrive at ``--rate`` per second for ``--duration`` seconds; the handler of one
call in ``--stall-every`` (chosen by its call id, the same calls for every client)
calls blocking code for ``--stall-seconds`` before it answers; every handler answers
and hangs up. The emulator (wss, its own process on CPU 0, callers give up after
``--ring-timeout``) and the client trees (CPU 1) run as in ``bench_clients.py``,
whose helpers this reuses.

Reported per client, from the server's side: calls answered (of those offered),
reconnects (``signalwire.connect`` requests beyond the first of each session),
p50/p99 offer→answer of the calls whose handler did not stall, and offers the
runtime dropped (Ray: ``offers_dropped`` + ``offers_no_capacity`` of its shards).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench_clients import RUNNER, http, median, percentile, read_done, runner_env, start_runner, wait_ready
from client_runner import STALL_NUMBER, stalls

from relay_actors.emulator import EmulatorProcess


def run_stall(emu: EmulatorProcess, impl: str, args: argparse.Namespace) -> dict[str, Any]:
    """One client through the stall scenario; the figures from the emulator's journal."""
    n = max(1, round(args.rate * args.duration))
    context = f"stall-{impl}-{time.monotonic_ns()}"
    kind = "ray" if impl.startswith("ray") else impl
    shards = int(impl[3:] or 1) if kind == "ray" else 1
    cmd = [sys.executable, str(RUNNER), "--impl", kind, "--scenario", "stall", "--n", str(n)]
    cmd += ["--context", context, "--shards", str(shards)]
    cmd += ["--stall-seconds", str(args.stall_seconds), "--max-call-actors", str(args.max_call_actors)]
    proc, stderr = start_runner(cmd, runner_env(emu))
    assert proc.stdout is not None and proc.stdin is not None
    try:
        protocols = wait_ready(proc, stderr, impl)
        before = http("GET", f"{emu.control_url}/stats")["call_state_transitions"]
        stalled = n // args.stall_every if args.stall_every > 0 else 0
        if stalled:
            stall_calls = {"count": stalled, "rate": args.rate * stalled / n, "to": STALL_NUMBER}
            http("POST", f"{emu.control_url}/calls", {"context": context, **stall_calls})
        plain = {"count": n - stalled, "rate": args.rate * (n - stalled) / n}
        http("POST", f"{emu.control_url}/calls", {"context": context, **plain})
        # Every call ends: answered and hung up, or given up by its caller. Bounded: a call
        # answered at the server whose handler saw a failure may stay up (counted "up").
        stall_time = stalled * args.stall_seconds
        deadline = time.monotonic() + args.duration + args.ring_timeout + stall_time + 30
        after = before
        while time.monotonic() < deadline:
            after = http("GET", f"{emu.control_url}/stats")["call_state_transitions"]
            if after.get("ended", 0) - before.get("ended", 0) >= n:
                break
            time.sleep(0.2)
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        ended = after.get("ended", 0) - before.get("ended", 0)
        result = read_done(proc, stderr, impl)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    entries: list[dict[str, Any]] = []
    for protocol in protocols:
        journal = http("GET", f"{emu.control_url}/journal?session={protocol}")
        entries += journal["sessions"].get(protocol, [])
    return {"impl": impl, "offered": n, "up": n - ended, **result, **figures(entries, len(protocols))}


def figures(entries: list[dict[str, Any]], sessions: int) -> dict[str, Any]:
    """Answered calls, reconnects and offer→answer of the calls that did not stall."""
    offered: dict[str, float] = {}
    stalled: set[str] = set()
    answered: set[str] = set()
    latencies: list[float] = []
    connects = 0
    replies: dict[Any, str] = {}  # request id -> call id of calling.answer requests
    for entry in sorted(entries, key=lambda e: e["t"]):
        frame = entry["frame"]
        method = frame.get("method")
        params = frame.get("params") or {}
        if entry["dir"] == "in" and method == "signalwire.connect":
            connects += 1
        elif entry["dir"] == "out" and method == "signalwire.event":
            if params.get("event_type") == "calling.call.receive":
                call = params["params"]
                offered[call["call_id"]] = entry["t"]
                if stalls(call.get("device") or {}):
                    stalled.add(call["call_id"])
        elif entry["dir"] == "in" and method == "calling.answer":
            call_id = str(params.get("call_id"))
            replies[frame.get("id")] = call_id
            t0 = offered.get(call_id)
            if t0 is not None and call_id not in answered and call_id not in stalled:
                latencies.append(entry["t"] - t0)
        elif entry["dir"] == "out" and "result" in frame and frame.get("id") in replies:
            code = str((frame.get("result") or {}).get("code", ""))
            if code.startswith("2"):
                answered.add(replies[frame["id"]])
    return {
        "answered": len(answered),
        "reconnects": max(0, connects - sessions),
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "stalled": len(stalled),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=10.0, help="calls per second")
    parser.add_argument(
        "--duration", type=float, default=15.0, help="seconds of arrivals (the issue's run: 45)"
    )
    parser.add_argument("--stall-every", type=int, default=30, help="one handler in this many blocks")
    parser.add_argument("--stall-seconds", type=float, default=6.0, help="how long a stalling handler blocks")
    parser.add_argument(
        "--ring-timeout", type=float, default=30.0, help="seconds a caller waits for an answer"
    )
    parser.add_argument("--impls", default="sdk,ours,ray1", help="comma-separated: sdk,ours,ray1,ray2")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds")
    parser.add_argument(
        "--max-call-actors",
        type=int,
        default=8,
        help="Ray: the pool's bound (it starts with 2 and adds CallActors when all lag; 8 is "
        "RayOptions' default, 2 keeps the pool fixed)",
    )
    args = parser.parse_args()
    impls = args.impls.split(",")
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
    n = max(1, round(args.rate * args.duration))
    durations = "play=0.05,ring=0.01,answer=0.01,message=0.002,step=0.002"
    with EmulatorProcess(["--tls", "--ping-interval", "0", "--durations", durations], cpu=0) as emu:
        http(
            "POST", f"{emu.control_url}/config", {"journal_limit": 50 * n, "ring_timeout": args.ring_timeout}
        )
        for _ in range(args.repeat):
            for impl in impls:
                runs[impl].append(run_stall(emu, impl, args))
                http("DELETE", f"{emu.control_url}/journal")
    print(
        f"\n{n} calls at {args.rate:g}/s, one handler in {args.stall_every} blocks its loop "
        f"{args.stall_seconds:g} s; callers give up after {args.ring_timeout:g} s; {args.repeat} round(s)\n"
    )
    header = (
        f"{'impl':<6}{'answered':>10}{'stalled':>8}{'reconnects':>11}{'p50 ms':>9}{'p99 ms':>9}{'dropped':>8}"
    )
    print(header + "   (p50/p99: offer→answer of the calls not stalled; up: calls not ended at the end)")
    print("-" * len(header))
    for impl, rs in runs.items():
        for r in rs:
            dropped = r.get("offers_dropped")
            print(
                f"{impl:<6}{r['answered']:>5}/{r['offered']:<4}{r['stalled']:>8}{r['reconnects']:>11}"
                f"{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{'-' if dropped is None else dropped:>8}{r['up']:>5}"
            )
        if len(rs) > 1:
            print(f"{impl:<6} median answered {median([r['answered'] for r in rs]):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
