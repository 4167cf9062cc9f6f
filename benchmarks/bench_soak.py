"""Soak: calls at a steady rate for a long while; is memory flat after warm-up, and CPU per call?

    python benchmarks/bench_soak.py [--minutes 30] [--rate 100] [--impls ours,ray1] [--sample 60]
                                    [--csv soak.csv] [--svg soak.svg]
    python benchmarks/bench_soak.py --report soak-ours.csv soak-ray1.csv [--svg soak.svg]

Each client runs as in ``bench_clients.py`` (its own process tree, the same
``client_runner.py`` ``inbound`` flow: answer, play TTS, wait, hang up) against the
same emulator, one after the other. First the tree idles for ``--idle`` seconds (its
fixed cost); then the emulator injects ``--rate`` calls/s for ``--minutes``, and every
``--sample`` seconds the whole client tree is sampled: PSS and RSS (MiB, and PSS per
kind of process), CPU per call over the window (ms, in all and per kind of process:
driver, ConnectionActor, Router, CallActor, raylet, gcs_server, ...), offer→answer
p50/p99 over the window (ms, from the emulator's journal, read and cleared every ``POLL``
s), the
RELAY frames per call each way, calls ended so far.

Every sample is appended to the CSV as it is taken (a run cut short keeps what it had);
``--report`` re-reads CSVs and prints the table, the verdict and, with ``--svg``, a chart.

The verdict: the least-squares slope of PSS against calls ended after warm-up
(``--warmup``, a fraction of the calls) and over the last third, in KiB per call ("flat"
below ``FLAT_KIB_PER_CALL``); CPU per call and p99 in the first ``--compare`` minutes
after warm-up against the last ``--compare`` minutes ("the same" within
``SAME_CPU`` / ``SAME_P99``).
"""

from __future__ import annotations

import argparse
import csv
import math
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

# A script beside this one (python puts the script's directory on the path).
from bench_clients import (
    EMULATOR_ARGS,
    Tree,
    fmt,
    http,
    kill_tree,
    launch_runner,
    offer_to_answer,
    percentile,
)

from relay_actors.emulator import EmulatorProcess

#: The kinds of process a client tree is split into (``Tree._label``'s names); the rest is "other".
KINDS = ("driver", "ConnectionActor", "Router", "CallActor", "raylet", "gcs_server", "dashboard", "agent")
#: Memory growth per call below which the curve counts as flat (KiB): 0.05 KiB is 5 MiB per 100,000 calls.
FLAT_KIB_PER_CALL = 0.05
#: CPU per call counts as "the same" when the last minutes are within this fraction of the first.
SAME_CPU = 0.15
#: p99 counts as "the same" within this fraction, or within SAME_P99_MS, whichever is larger.
SAME_P99 = 0.25
SAME_P99_MS = 1.0

FIELDS = [
    "impl",
    "phase",
    "t",
    "calls",
    "window_calls",
    "pss_mib",
    "rss_mib",
    "cpu_ms_per_call",
    "cpu_s",
    "p50_ms",
    "p99_ms",
    "frames_in_per_call",
    "frames_out_per_call",
    "processes",
    *(f"cpu_s_{k}" for k in (*KINDS, "other")),
    *(f"pss_mib_{k}" for k in (*KINDS, "other")),
    *(f"procs_{k}" for k in (*KINDS, "other")),
]


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` against ``xs`` (nan with fewer than 2 distinct points)."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return float("nan")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def ended(emu: EmulatorProcess) -> int:
    return int(http("GET", f"{emu.control_url}/stats")["call_state_transitions"].get("ended", 0))


def kind(p: psutil.Process) -> str:
    label = Tree._label(p)
    return label if label in KINDS else "other"


def measure(tree: Tree) -> dict[str, Any]:
    """CPU seconds (per pid, with its kind), PSS/RSS in all and PSS per kind, process counts."""
    cpu: dict[int, tuple[str, float]] = {}
    pss: Counter[str] = Counter()
    procs: Counter[str] = Counter()
    total_pss = total_rss = 0
    for p in tree.procs():
        try:
            k = kind(p)
            t = p.cpu_times()
            mem = p.memory_full_info()
        except psutil.Error:
            continue
        cpu[p.pid] = (k, t.user + t.system)
        pss[k] += mem.pss
        procs[k] += 1
        total_pss += mem.pss
        total_rss += mem.rss
    return {
        "cpu": cpu,
        "pss": pss,
        "procs": procs,
        "pss_mib": total_pss / 2**20,
        "rss_mib": total_rss / 2**20,
    }


def cpu_by_kind(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for pid, (k, t) in after.items():
        out[k] += t - before.get(pid, (k, 0.0))[1]
    return out


def journal_window(emu: EmulatorProcess, protocols: list[str]) -> list[dict[str, Any]]:
    """The journal's frames since the last call (then cleared)."""
    entries: list[dict[str, Any]] = []
    for protocol in protocols:
        journal = http("GET", f"{emu.control_url}/journal?session={protocol}")
        entries += journal["sessions"].get(protocol, [])
    http("DELETE", f"{emu.control_url}/journal")
    return entries


def is_offer_or_answer(entry: dict[str, Any]) -> bool:
    frame = entry["frame"]
    if entry["dir"] == "in":
        return bool(frame.get("method") == "calling.answer")
    return (frame.get("params") or {}).get("event_type") == "calling.call.receive"


class Window:
    """What the journal says about one window, read in small pieces (``POLL`` s apart: a
    whole minute's journal in one read would stall the emulator and show in the p99)."""

    def __init__(self) -> None:
        self.frames_in = self.frames_out = 0
        self.entries: list[dict[str, Any]] = []  # offers and answers only

    def read(self, emu: EmulatorProcess, protocols: list[str]) -> None:
        try:
            entries = journal_window(emu, protocols)
        except OSError as exc:  # a starved emulator: this read's frames are lost, the run goes on
            print(f"journal read failed: {exc!r}", file=sys.stderr, flush=True)
            return
        n_in = sum(1 for e in entries if e["dir"] == "in")
        self.frames_in += n_in
        self.frames_out += len(entries) - n_in
        self.entries += [e for e in entries if is_offer_or_answer(e)]

    def close(self) -> tuple[list[float], Window]:
        """Offer→answer latencies of the window, and the next window (holding the offers
        not answered yet)."""
        lat = offer_to_answer(self.entries)
        answered = {(e["frame"].get("params") or {}).get("call_id") for e in self.entries if e["dir"] == "in"}
        following = Window()
        following.entries = [
            e
            for e in self.entries
            if e["dir"] == "out" and e["frame"]["params"]["params"]["call_id"] not in answered
        ]
        return lat, following


#: Seconds between reads of the journal.
POLL = 2.0


def row(
    impl: str, phase: str, t: float, calls: int, done: int, before: dict[str, Any], after: dict[str, Any]
) -> dict[str, Any]:
    spent = cpu_by_kind(before["cpu"], after["cpu"])
    per = (lambda x: x / done) if done else (lambda x: float("nan"))
    r: dict[str, Any] = {
        "impl": impl,
        "phase": phase,
        "t": round(t, 1),
        "calls": calls,
        "window_calls": done,
        "pss_mib": round(after["pss_mib"], 2),
        "rss_mib": round(after["rss_mib"], 2),
        "cpu_s": round(sum(spent.values()), 3),
        "cpu_ms_per_call": per(1000 * sum(spent.values())),
        "processes": sum(after["procs"].values()),
    }
    for k in (*KINDS, "other"):
        r[f"cpu_s_{k}"] = round(spent[k], 3)
        r[f"pss_mib_{k}"] = round(after["pss"][k] / 2**20, 2)
        r[f"procs_{k}"] = after["procs"][k]
    return r


def soak(
    emu: EmulatorProcess,
    impl: str,
    minutes: float,
    rate: float,
    every: float,
    idle: float,
    out: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    """One client's run: a row per window (the first is the idle window), each appended to ``out``."""
    total = int(minutes * 60 * rate)
    proc, tree, stderr_lines, protocols, context = launch_runner(emu, impl, "inbound", total)
    assert proc.stdin is not None and proc.stdout is not None
    rows: list[dict[str, Any]] = []

    def emit(r: dict[str, Any]) -> None:
        rows.append(r)
        if out is not None:
            out(r)

    try:
        base = ended(emu)
        journal_window(emu, protocols)
        # The fixed cost: the tree doing nothing (Ray: GCS, raylet, agents, the actors' timers).
        idle0, t_idle = measure(tree), time.monotonic()
        time.sleep(idle)
        prev = measure(tree)
        emit(row(impl, "idle", time.monotonic() - t_idle, 0, 0, idle0, prev))
        rows[-1]["cpu_ms_per_call"] = float("nan")
        calls_prev, t0 = 0, time.monotonic()
        window = Window()
        http("POST", f"{emu.control_url}/calls", {"context": context, "count": total, "rate": rate})
        deadline = t0 + minutes * 60 + 120
        next_sample = t0 + every
        while time.monotonic() < deadline:
            time.sleep(max(0.0, min(POLL, next_sample - time.monotonic())))
            window.read(emu, protocols)
            if time.monotonic() < next_sample:
                continue
            # Late (a starved machine): the next window is a whole one, not a catch-up.
            next_sample = max(next_sample + every, time.monotonic() + every / 2)
            try:
                calls = ended(emu) - base
            except OSError as exc:  # a starved emulator: sample at the next read that works
                print(f"stats read failed: {exc!r}", file=sys.stderr, flush=True)
                next_sample = time.monotonic()
                continue
            now = measure(tree)
            lat, following = window.close()
            done = calls - calls_prev
            r = row(impl, "load", time.monotonic() - t0, calls, done, prev, now)
            r["p50_ms"] = percentile(lat, 0.5) * 1000
            r["p99_ms"] = percentile(lat, 0.99) * 1000
            r["frames_in_per_call"] = window.frames_in / done if done else float("nan")
            r["frames_out_per_call"] = window.frames_out / done if done else float("nan")
            emit(r)
            window = following
            prev, calls_prev = now, calls
            if calls >= total:
                break
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line.startswith("DONE"):
            raise RuntimeError(f"{impl} soak failed: {line}{''.join(stderr_lines)[-3000:]}")
        print(f"{impl}: {line.strip()}", file=sys.stderr, flush=True)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.wait(120)
    finally:
        kill_tree(proc, tree)
    return rows


# --- the report (from rows, as run or as read back from CSVs) ---------------------------------


def num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def load_rows(paths: list[str]) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                parsed = {k: (v if k in ("impl", "phase") else num(v)) for k, v in r.items()}
                runs.setdefault(str(r["impl"]), []).append(parsed)
    return runs


def growth(rows: list[dict[str, Any]], warmup: float) -> tuple[float, float]:
    """KiB per call after warm-up (a fraction of the calls), and over the last third."""
    load = [r for r in rows if r["phase"] == "load"]
    calls = load[-1]["calls"] if load else 0
    after = [r for r in load if r["calls"] >= warmup * calls and r["calls"] > 0]
    last = [r for r in load if r["calls"] >= calls * 2 / 3 and r["calls"] > 0]

    def kib(points: list[dict[str, Any]]) -> float:
        return slope([p["calls"] for p in points], [p["pss_mib"] for p in points]) * 1024

    return kib(after), kib(last)


def full_windows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The load windows but the last (it holds the tail: calls ending, no new ones)."""
    return [r for r in rows if r["phase"] == "load"][:-1]


def first_last(rows: list[dict[str, Any]], warmup: float, minutes: float, key: str) -> tuple[float, float]:
    """The median of ``key`` over the first ``minutes`` after warm-up, and over the last ``minutes``."""
    load = full_windows(rows)
    if not load:
        return float("nan"), float("nan")
    total = load[-1]["calls"]
    warm = [r for r in load if r["calls"] >= warmup * total]
    if not warm:
        return float("nan"), float("nan")
    t_first, t_last = warm[0]["t"], load[-1]["t"]
    first = [r[key] for r in warm if r["t"] <= t_first + minutes * 60 and not math.isnan(r[key])]
    last = [r[key] for r in warm if r["t"] > t_last - minutes * 60 and not math.isnan(r[key])]
    med = statistics.median
    return (med(first) if first else float("nan")), (med(last) if last else float("nan"))


def verdict(rows: list[dict[str, Any]], warmup: float, compare: float) -> list[str]:
    after, last = growth(rows, warmup)
    c0, c1 = first_last(rows, warmup, compare, "cpu_ms_per_call")
    p0, p1 = first_last(rows, warmup, compare, "p99_ms")
    flat = last <= FLAT_KIB_PER_CALL
    cpu_same = abs(c1 - c0) <= SAME_CPU * c0
    p99_same = abs(p1 - p0) <= max(SAME_P99 * p0, SAME_P99_MS)
    return [
        f"memory after warm-up: {fmt(after, 3)} KiB/call, last third {fmt(last, 3)} KiB/call"
        f" -> {'FLAT' if flat else 'GROWING'} (flat: <= {FLAT_KIB_PER_CALL} KiB/call)",
        f"CPU per call, first {compare:g} min after warm-up vs last {compare:g} min: {fmt(c0, 3)} -> "
        f"{fmt(c1, 3)} ms -> {'SAME' if cpu_same else 'DIFFERENT'} (within {SAME_CPU:.0%})",
        f"p99 offer->answer, same windows: {fmt(p0, 1)} -> {fmt(p1, 1)} ms -> "
        f"{'SAME' if p99_same else 'DIFFERENT'} (within {SAME_P99:.0%} or {SAME_P99_MS:g} ms)",
    ]


def table(impl: str, rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'t s':>7}{'calls':>9}{'PSS MiB':>10}{'RSS MiB':>10}{'CPU ms/call':>13}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'fr in/out':>11}{'procs':>7}"
    )
    lines = [impl, header, "-" * len(header)]
    for r in rows:
        frames = f"{fmt(r.get('frames_in_per_call'), 1)}/{fmt(r.get('frames_out_per_call'), 1)}"
        if r["phase"] == "idle":
            frames = f"idle {fmt(1000 * r['cpu_s'] / max(r['t'], 1e-9), 1)} ms/s"
        lines.append(
            f"{r['t']:>7.0f}{int(r['calls']):>9}{r['pss_mib']:>10.1f}{r['rss_mib']:>10.1f}"
            f"{fmt(r['cpu_ms_per_call'], 3):>13}{fmt(r.get('p50_ms'), 1):>8}{fmt(r.get('p99_ms'), 1):>8}"
            f"{frames:>11}{int(r['processes']):>7}"
        )
    load = full_windows(rows)
    if load:
        spent: Counter[str] = Counter()
        for r in load:
            for k in (*KINDS, "other"):
                spent[k] += r[f"cpu_s_{k}"]
        calls = sum(r["window_calls"] for r in load)
        seconds = load[-1]["t"]  # the full windows follow each other from t=0
        idle = next((r for r in rows if r["phase"] == "idle"), None)
        last = load[-1]

        def above_idle(k: str) -> str:
            if idle is None or not idle["t"]:
                return ""
            extra = spent[k] - idle[f"cpu_s_{k}"] / idle["t"] * seconds
            return f" ({1000 * extra / calls:.3f} above idle)"

        parts = [
            f"{k} {1000 * spent[k] / calls:.3f}{above_idle(k)} ms/call, {last[f'pss_mib_{k}']:.0f} MiB"
            f" in {int(last[f'procs_{k}'])}"
            for k in (*KINDS, "other")
            if last[f"procs_{k}"]
        ]
        lines.append("per kind of process (CPU over the full windows; PSS at the last): " + "; ".join(parts))
    return "\n".join(lines)


def svg(runs: dict[str, list[dict[str, Any]]], path: str) -> None:
    """Three small panels (PSS MiB, CPU ms/call, p99 ms against minutes), one line per client."""
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    panels = [
        ("pss_mib", "PSS of the tree (MiB)"),
        ("cpu_ms_per_call", "CPU per call (ms)"),
        ("p99_ms", "p99 offer→answer (ms)"),
    ]
    w, h, pad = 420, 240, 40
    head = f'width="{w * 3}" height="{h + 30}" font-family="sans-serif" font-size="11"'
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" {head}>']
    for i, (key, title) in enumerate(panels):
        x0 = i * w
        series = {
            impl: [(r["t"] / 60, r[key]) for r in full_windows(rows) if not math.isnan(num(r.get(key)))]
            for impl, rows in runs.items()
        }
        points = [p for s in series.values() for p in s]
        if not points:
            continue
        tmax = max(p[0] for p in points) or 1.0
        ymax = max(p[1] for p in points) * 1.1 or 1.0
        parts.append(f'<text x="{x0 + pad}" y="14">{title}</text>')
        parts.append(
            f'<rect x="{x0 + pad}" y="20" width="{w - 2 * pad}" height="{h - 40}" fill="none" stroke="#999"/>'
        )
        parts.append(f'<text x="{x0 + 2}" y="28">{ymax:.3g}</text><text x="{x0 + 2}" y="{h - 20}">0</text>')
        parts.append(f'<text x="{x0 + w - pad - 40}" y="{h - 6}">{tmax:.0f} min</text>')
        for j, (impl, s) in enumerate(series.items()):
            xy = " ".join(
                f"{x0 + pad + (w - 2 * pad) * t / tmax:.1f},{20 + (h - 40) * (1 - y / ymax):.1f}"
                for t, y in s
            )
            colour = colours[j % len(colours)]
            parts.append(f'<polyline points="{xy}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
            if i == 0:
                parts.append(f'<text x="{pad + 10 + 80 * j}" y="{h + 20}" fill="{colour}">{impl}</text>')
    parts.append("</svg>")
    Path(path).write_text("\n".join(parts) + "\n")


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    for impl, rows in runs.items():
        print()
        print(table(impl, rows))
    print(f"\nverdict (warm-up: the first {args.warmup:.0%} of the calls):")
    for impl, rows in runs.items():
        for line in verdict(rows, args.warmup, args.compare):
            print(f"  {impl:<6}{line}")
    if args.svg:
        svg(runs, args.svg)
        print(f"\nchart: {args.svg}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=100.0, help="calls/s")
    parser.add_argument("--impls", default="ours,ray1", help="comma-separated: sdk,ours,ray1,ray2")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle measured first")
    parser.add_argument("--warmup", type=float, default=0.25, help="fraction of the calls that warm up")
    parser.add_argument("--compare", type=float, default=3.0, help="minutes compared, first vs last")
    parser.add_argument("--csv", help="append every sample to this CSV")
    parser.add_argument("--svg", help="draw the curves to this SVG")
    parser.add_argument("--report", nargs="+", metavar="CSV", help="only report these CSVs")
    args = parser.parse_args()
    # A SIGTERM (a run stopped early) unwinds as an exception, so the client's tree is killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.report:
        report(load_rows(args.report), args)
        return 0
    runs: dict[str, list[dict[str, Any]]] = {}
    total = int(args.minutes * 60 * args.rate)
    out_file = open(args.csv, "w", newline="") if args.csv else None  # closed below
    out = None
    if out_file is not None:
        writer = csv.DictWriter(out_file, FIELDS)
        writer.writeheader()
        out_file.flush()

        def out(r: dict[str, Any]) -> None:
            writer.writerow(r)
            out_file.flush()

    try:
        with EmulatorProcess(EMULATOR_ARGS, cpu=0, ready_timeout=120) as emu:
            # The journal is read and cleared every POLL s: room for that many frames.
            limit = max(10_000, int(40 * args.rate * POLL * 3))  # a read a little late loses nothing
            http("POST", f"{emu.control_url}/config", {"journal_limit": limit, "ring_timeout": 600})
            for impl in args.impls.split(","):
                runs[impl] = soak(emu, impl, args.minutes, args.rate, args.sample, args.idle, out)
    finally:
        if out_file is not None:
            out_file.close()
    print(
        f"\nsoak: {args.rate:g} calls/s for {args.minutes:g} min ({total} calls) per client, "
        f"sampled every {args.sample:g} s; memory and CPU of the client's whole process tree"
    )
    report(runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
