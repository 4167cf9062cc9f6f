"""Handlers that block their loop: the official SDK, our in-process RelayClient and our
Ray runtime, same emulator, same run.

    python benchmarks/bench_stall.py [--rate 10] [--duration 15] [--stall-every 30]
                                     [--stall-seconds 6] [--impls sdk,ours,ray1] [--repeat 1]
                                     [--max-call-actors 8] [--baseline]

Calls arrive at ``--rate`` per second for ``--duration`` seconds; the handler of one
call in ``--stall-every`` (chosen by its call id, the same calls for every client)
calls blocking code for ``--stall-seconds`` before it answers; every handler answers
and hangs up. The emulator (wss, its own process on CPU 0, callers give up after
``--ring-timeout``) and the client trees (CPU 1) run as in ``bench_clients.py``,
whose helpers this reuses.

Reported per client, from the server's side: calls answered (of those offered),
reconnects (``signalwire.connect`` requests beyond the first of each session),
p50/p99 offer→answer of the calls whose handler did not stall, the same for the
*clear* calls among them (their process had no handler blocked between their offer
and their answer: on Ray, the calls not on a stalled CallActor; each process notes its
calls and stalls in a file), and offers the runtime dropped (Ray: ``offers_dropped`` +
``offers_no_capacity`` of its shards). ``--baseline`` runs every client again with no
handler blocking and prints the clear calls' p99 against that run's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench_clients import RUNNER, http, median, percentile, read_done, runner_env, start_runner, wait_ready
from client_runner import STALL_NUMBER, stalls

from relay_actors.emulator import EmulatorProcess


def run_stall(emu: EmulatorProcess, impl: str, args: argparse.Namespace, stall_every: int) -> dict[str, Any]:
    """One client through the stall scenario; the figures from the emulator's journal and
    from what each of the client's processes noted (its calls, its stalls)."""
    n = max(1, round(args.rate * args.duration))
    context = f"stall-{impl}-{time.monotonic_ns()}"
    kind = "ray" if impl.startswith("ray") else impl
    shards = int(impl[3:] or 1) if kind == "ray" else 1
    log_dir = tempfile.mkdtemp(prefix="bench-stall-")
    cmd = [sys.executable, str(RUNNER), "--impl", kind, "--scenario", "stall", "--n", str(n)]
    cmd += ["--context", context, "--shards", str(shards), "--stall-log", log_dir]
    cmd += ["--stall-seconds", str(args.stall_seconds), "--max-call-actors", str(args.max_call_actors)]
    proc, stderr = start_runner(cmd, runner_env(emu))
    assert proc.stdout is not None and proc.stdin is not None
    try:
        protocols = wait_ready(proc, stderr, impl)
        before = http("GET", f"{emu.control_url}/stats")["call_state_transitions"]
        stalled = n // stall_every if stall_every > 0 else 0
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
    where = read_notes(log_dir)
    shutil.rmtree(log_dir, ignore_errors=True)
    return {"impl": impl, "offered": n, "up": n - ended, **result, **figures(entries, len(protocols), where)}


def read_notes(log_dir: str) -> tuple[dict[str, int], dict[int, list[tuple[float, float]]]]:
    """Which process answered each call, and each process's stalls (start, end)."""
    process_of: dict[str, int] = {}
    stalls_of: dict[int, list[tuple[float, float]]] = {}
    for path in Path(log_dir).glob("*.log"):
        pid = int(path.stem)
        for line in path.read_text().splitlines():
            kind, *rest = line.split()
            if kind == "call":
                process_of[rest[0]] = pid
            elif kind == "stall":
                stalls_of.setdefault(pid, []).append((float(rest[0]), float(rest[1])))
    return process_of, stalls_of


def figures(
    entries: list[dict[str, Any]],
    sessions: int,
    where: tuple[dict[str, int], dict[int, list[tuple[float, float]]]],
) -> dict[str, Any]:
    """Answered calls, reconnects and offer→answer of the calls that did not stall: of
    all of them, and of those whose process (a CallActor; the whole client in one
    process) had no stall between their offer and their answer ("clear")."""
    process_of, stalls_of = where
    order: dict[str, int] = {}
    seen: Counter[int] = Counter()
    for cid, pid in process_of.items():  # (in the order each process noted them)
        order[cid] = seen[pid]
        seen[pid] += 1
    offered: dict[str, float] = {}
    stalled: set[str] = set()
    answered: set[str] = set()
    latencies: list[float] = []
    clear: list[float] = []
    slowest: list[tuple[float, str, float | None]] = []
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
                spells = stalls_of.get(process_of.get(call_id, -1), [])
                if not any(start < entry["t"] and end > t0 for start, end in spells):
                    clear.append(entry["t"] - t0)
                    ended = [end for _start, end in spells if end <= t0]
                    slowest.append((entry["t"] - t0, call_id, t0 - max(ended) if ended else None))
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
        "clear": len(clear),
        "clear_p50_ms": percentile(clear, 0.5) * 1000,
        "clear_p99_ms": percentile(clear, 0.99) * 1000,
        # The slowest clear calls: offer→answer (ms), the process that took them, how many calls
        # that process had answered before (0: its first), and how long after a stall of that
        # process ended they were offered (ms; None: none before).
        "clear_slowest": [
            (round(x * 1000, 1), process_of.get(cid), order.get(cid), _ms(gap))
            for x, cid, gap in sorted(slowest)[-5:]
        ],
        "processes": len(set(process_of.values())),
    }


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


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
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run each client with no handler blocking (same emulator, interleaved): the "
        "p99 the clear calls are compared with",
    )
    parser.add_argument("--json", help="also write every run's figures to this file")
    args = parser.parse_args()
    impls = args.impls.split(",")
    kinds = [(impl, args.stall_every) for impl in impls]
    if args.baseline:
        kinds += [(f"{impl}/0", 0) for impl in impls]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in kinds}
    n = max(1, round(args.rate * args.duration))
    durations = "play=0.05,ring=0.01,answer=0.01,message=0.002,step=0.002"
    with EmulatorProcess(["--tls", "--ping-interval", "0", "--durations", durations], cpu=0) as emu:
        http(
            "POST", f"{emu.control_url}/config", {"journal_limit": 50 * n, "ring_timeout": args.ring_timeout}
        )
        for _ in range(args.repeat):
            for name, every in kinds:
                runs[name].append(run_stall(emu, name.split("/")[0], args, every))
                http("DELETE", f"{emu.control_url}/journal")
    print(
        f"\n{n} calls at {args.rate:g}/s, one handler in {args.stall_every} blocks its loop "
        f"{args.stall_seconds:g} s (<impl>/0: none blocks); callers give up after "
        f"{args.ring_timeout:g} s; {args.repeat} round(s)\n"
    )
    print(
        "p50/p99: offer→answer of the calls whose handler did not block; clear: of those, the calls "
        "whose process\n(a CallActor; the whole client in one process) had no blocked handler "
        "between their offer and answer;\nup: calls not ended at the end; procs: processes that "
        "answered calls\n"
    )
    header = (
        f"{'impl':<8}{'answered':>10}{'stalled':>8}{'reconn':>7}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'clear':>6}{'clear p50':>10}{'clear p99':>10}{'dropped':>8}{'up':>4}{'procs':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, rs in runs.items():
        for r in rs:
            dropped = r.get("offers_dropped")
            print(
                f"{name:<8}{r['answered']:>5}/{r['offered']:<4}{r['stalled']:>8}{r['reconnects']:>7}"
                f"{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['clear']:>6}{r['clear_p50_ms']:>10.1f}"
                f"{r['clear_p99_ms']:>10.1f}{'-' if dropped is None else dropped:>8}{r['up']:>4}"
                f"{r['processes']:>6}"
            )
        if len(rs) > 1:
            print(f"{name:<8} median answered {median([r['answered'] for r in rs]):.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    if args.baseline:
        print()
        for impl in impls:
            stalled_p99 = median([r["clear_p99_ms"] for r in runs[impl]])
            calm_p99 = median([r["p99_ms"] for r in runs[f"{impl}/0"]])
            print(
                f"{impl:<8} clear calls' p99 {stalled_p99:.1f} ms against {calm_p99:.1f} ms with no "
                f"handler blocking: {stalled_p99 / calm_p99:.2f} times"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
