"""Soak: calls at a steady rate for a long while; is memory flat after warm-up, and CPU per call?

    python benchmarks/bench_soak.py [--minutes 30] [--rate 100] [--impls ours,ray1] [--sample 30]

Each client runs as in ``bench_clients.py`` (its own process tree, the same
``client_runner.py`` ``inbound`` flow: answer, play TTS, wait, hang up) against the
same emulator, one after the other. The emulator injects ``--rate`` calls/s for
``--minutes``; every ``--sample`` seconds the whole client tree is sampled: PSS
(MiB), CPU per call over the window (ms), offer→answer p50/p99 over the window
(ms, from the emulator's journal, cleared after each read), calls ended so far.

The table is the curve; under it, the growth per call after warm-up (``--warmup``,
a fraction of the run): the least-squares slope of PSS against calls ended, in
KiB per call, and the same over the last third alone (a growth that slows but does
not stop shows as a smaller, non-zero slope there).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

# A script beside this one (python puts the script's directory on the path).
from bench_clients import (
    EMULATOR_ARGS,
    cpu_delta,
    fmt,
    http,
    kill_tree,
    launch_runner,
    offer_to_answer,
    percentile,
)

from relay_actors.emulator import EmulatorProcess


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` against ``xs`` (nan with fewer than 2 distinct points)."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return float("nan")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def ended(emu: EmulatorProcess) -> int:
    return int(http("GET", f"{emu.control_url}/stats")["call_state_transitions"].get("ended", 0))


def soak(emu: EmulatorProcess, impl: str, minutes: float, rate: float, every: float) -> list[dict[str, Any]]:
    """One client's run: a sample (dict) per window."""
    total = int(minutes * 60 * rate)
    proc, tree, stderr_lines, protocols, context = launch_runner(emu, impl, "inbound", total)
    assert proc.stdin is not None and proc.stdout is not None
    samples: list[dict[str, Any]] = []
    try:
        base = ended(emu)
        http("DELETE", f"{emu.control_url}/journal")
        cpu_prev, calls_prev, t0 = tree.cpu(), 0, time.monotonic()
        samples.append({"t": 0.0, "calls": 0, "pss": tree.pss(), "cpu_ms": float("nan")})
        http("POST", f"{emu.control_url}/calls", {"context": context, "count": total, "rate": rate})
        deadline = t0 + minutes * 60 + 120
        while time.monotonic() < deadline:
            time.sleep(every)
            calls = ended(emu) - base
            cpu = tree.cpu()
            entries: list[dict[str, Any]] = []
            for protocol in protocols:
                journal = http("GET", f"{emu.control_url}/journal?session={protocol}")
                entries += journal["sessions"].get(protocol, [])
            http("DELETE", f"{emu.control_url}/journal")
            lat = offer_to_answer(entries)
            done = calls - calls_prev
            samples.append(
                {
                    "t": time.monotonic() - t0,
                    "calls": calls,
                    "pss": tree.pss(),
                    "cpu_ms": 1000 * sum(cpu_delta(cpu_prev, cpu).values()) / done if done else float("nan"),
                    "p50_ms": percentile(lat, 0.5) * 1000,
                    "p99_ms": percentile(lat, 0.99) * 1000,
                    "processes": len(tree.procs()),
                }
            )
            cpu_prev, calls_prev = cpu, calls
            if calls >= total:
                break
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line.startswith("DONE"):
            raise RuntimeError(f"{impl} soak failed: {line}{''.join(stderr_lines)[-3000:]}")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.wait(120)
    finally:
        kill_tree(proc, tree)
    return samples


def growth(samples: list[dict[str, Any]], warmup: float) -> tuple[float, float]:
    """KiB per call after warm-up (a fraction of the calls), and over the last third."""
    calls = samples[-1]["calls"] if samples else 0
    after = [s for s in samples if s["calls"] >= warmup * calls and s["calls"] > 0]
    last = [s for s in samples if s["calls"] >= calls * 2 / 3 and s["calls"] > 0]

    def kib(points: list[dict[str, Any]]) -> float:
        return slope([p["calls"] for p in points], [p["pss"] for p in points]) * 1024

    return kib(after), kib(last)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=100.0, help="calls/s")
    parser.add_argument("--impls", default="ours,ray1", help="comma-separated: sdk,ours,ray1,ray2")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=0.25, help="fraction of the calls that warm up")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {}
    total = int(args.minutes * 60 * args.rate)
    with EmulatorProcess(EMULATOR_ARGS, cpu=0) as emu:
        # The journal is read and cleared every sample: room for a window's frames.
        limit = max(10_000, int(40 * args.rate * args.sample))
        http("POST", f"{emu.control_url}/config", {"journal_limit": limit, "ring_timeout": 600})
        for impl in args.impls.split(","):
            runs[impl] = soak(emu, impl, args.minutes, args.rate, args.sample)
            print(f"{impl}: {len(runs[impl])} samples", file=sys.stderr, flush=True)
    print(
        f"\nsoak: {args.rate:g} calls/s for {args.minutes:g} min ({total} calls) per client, "
        f"sampled every {args.sample:g} s; PSS of the client's whole process tree"
    )
    for impl, samples in runs.items():
        print(f"\n{impl}")
        header = (
            f"{'t s':>7}{'calls':>9}{'PSS MiB':>10}{'CPU ms/call':>13}{'p50 ms':>8}{'p99 ms':>8}{'procs':>7}"
        )
        print(header)
        print("-" * len(header))
        for s in samples:
            print(
                f"{s['t']:>7.0f}{s['calls']:>9}{s['pss']:>10.1f}{fmt(s['cpu_ms'], 3):>13}"
                f"{fmt(s.get('p50_ms'), 1):>8}{fmt(s.get('p99_ms'), 1):>8}{s.get('processes', '-'):>7}"
            )
    print(
        f"\ngrowth per call after warm-up (the first {args.warmup:.0%} of the calls),"
        " and over the last third:"
    )
    for impl, samples in runs.items():
        after, last = growth(samples, args.warmup)
        print(f"  {impl:<6}{fmt(after, 3):>8} KiB/call   last third {fmt(last, 3):>8} KiB/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
