"""Where the Ray runtime's CPU goes, per process: a table and flame graphs.

    python benchmarks/profile_actors.py [OUT_DIR] [--n 1000] [--rate 200] [--idle 5] [--no-flame]

Runs the steady scenario of ``bench_clients.py`` on Ray (1 shard, 2 CallActors:
its ``ray1``) against the emulator, three phases on one Ray:

1. **idle** (``--idle`` s after the runner's READY): each process's CPU, as a
   share of a core — what the tree costs with no call at all;
2. **measured**: ``--n`` calls at ``--rate`` calls/s, nothing attached: per
   process µs of CPU per call (``/proc/<pid>/stat`` utime+stime deltas) and
   wake-ups per call (voluntary + involuntary context switches of every thread,
   ``/proc/<pid>/task/*/status`` deltas); the link's frames and bytes per call
   (from the connection actor's own counters);
3. **flame** (unless ``--no-flame``): the same load again with ``py-spy record``
   attached to the driver and to one process of each actor kind (connection
   actor, router, CallActor) — the pids the actors report about themselves
   (``stats()["pid"]``) — writing ``<kind>.svg`` flame graphs of the thread
   holding the GIL (``--spy-all``: every running thread). Sampling pauses its
   target, so no figure of the table comes from this phase.

The table (markdown) is printed and written to ``OUT_DIR/last_table.md``
(default ``benchmarks/profiles/``, git-ignored but for its README and that table).
The Ray system processes (GCS, raylet, agents, log monitor, idle workers) are
rows too: at a few hundred calls per second their idle cost is a real share of
the cost per call.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_clients import (
    EMULATOR_ARGS,
    TIME_LIMIT,
    http,
    kill_tree,
    launch_runner,
    offer_to_answer,
    percentile,
    read_done,
)

from relay_actors.emulator import EmulatorProcess

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "profiles"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: The actor kinds (and the driver) that get a flame graph, in table order.
PROFILED = ("driver", "connection", "router", "call_actor")


@dataclass
class Sample:
    """One process's counters at one moment."""

    label: str
    cpu: float  # seconds, user + system, all threads
    switches: int  # voluntary + involuntary context switches, all threads
    threads: int


def read_sample(pid: int, label: str) -> Sample | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            # Fields after the command name (which may hold spaces), from field 3 on.
            fields = fh.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        switches = 0
        tasks = glob.glob(f"/proc/{pid}/task/*/status")
        for path in tasks:
            try:
                with open(path) as fh:
                    for line in fh:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            switches += int(line.split()[1])
            except OSError:
                continue  # a thread that ended meanwhile
    except (OSError, IndexError, ValueError):
        return None
    return Sample(label, cpu, switches, len(tasks))


def system_label(proc: psutil.Process) -> str:
    """What a process of the runner's tree is, from its command line (Ray sets the
    titles of its workers: ``ray::IDLE``, ``ray::CallActor`` ...)."""
    try:
        text = " ".join(proc.cmdline())
    except psutil.Error:
        return "?"
    for key, label in (
        ("gcs_server", "gcs_server"),
        ("raylet", "raylet"),
        ("log_monitor", "log_monitor"),
        ("RuntimeEnvAgent", "runtime_env agent"),
        ("runtime_env/agent", "runtime_env agent"),
        ("DashboardAgent", "dashboard agent"),
        ("dashboard/agent", "dashboard agent"),
        ("dashboard/dashboard", "dashboard"),
        ("monitor.py", "autoscaler monitor"),
        ("ray::IDLE", "idle worker"),
        ("ray::", "other worker"),
    ):
        if key in text:
            return label
    return proc.name()


def snapshot(root: psutil.Process, kinds: dict[int, str]) -> dict[int, Sample]:
    """Counters of every process in the runner's tree, labelled."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out: dict[int, Sample] = {}
    for proc in procs:
        label = kinds.get(proc.pid) or system_label(proc)
        sample = read_sample(proc.pid, label)
        if sample is not None:
            out[proc.pid] = sample
    return out


@dataclass
class Row:
    label: str
    processes: int = 0
    threads: int = 0
    cpu: float = 0.0
    switches: int = 0


def delta(before: dict[int, Sample], after: dict[int, Sample]) -> dict[str, Row]:
    """Per label: CPU seconds and context switches between two snapshots."""
    rows: dict[str, Row] = {}
    for pid, s1 in after.items():
        s0 = before.get(pid) or Sample(s1.label, 0.0, 0, 0)
        row = rows.setdefault(s1.label, Row(s1.label))
        row.processes += 1
        row.threads += s1.threads
        row.cpu += s1.cpu - s0.cpu
        row.switches += s1.switches - s0.switches
    return rows


def ended(emu: EmulatorProcess) -> int:
    return int(http("GET", f"{emu.control_url}/stats")["call_state_transitions"].get("ended", 0))


def steady_load(emu: EmulatorProcess, context: str, n: int, rate: float) -> float:
    """Offer ``n`` calls at ``rate``/s and wait for them all to end; returns the seconds it took."""
    start = ended(emu)
    t0 = time.monotonic()
    http("POST", f"{emu.control_url}/calls", {"context": context, "count": n, "rate": rate})
    deadline = t0 + TIME_LIMIT
    while time.monotonic() < deadline and ended(emu) - start < n:
        time.sleep(0.05)
    return time.monotonic() - t0


def start_spies(
    pids: dict[str, int], out: Path, seconds: float, rate: int, gil: bool = True, stacks: bool = False
) -> dict[str, subprocess.Popen[bytes]]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    spies = {}
    for kind, pid in pids.items():
        output = out / (f"{kind}.stacks.txt" if stacks else f"{kind}.svg")
        cmd = [spy, "record", "--pid", str(pid), "--output", str(output), "--duration", str(int(seconds) + 1)]
        cmd += ["--rate", str(rate), "--format", "raw" if stacks else "flamegraph"]
        if gil:
            # Only the thread holding the GIL: the Python work. Otherwise the event loop's
            # native code (uvloop) and Ray's C++ threads show as time in their callers.
            cmd.append("--gil")
        spies[kind] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return spies


def top_functions(kind: str, collapsed: str, count: int = 25) -> str:
    """The functions of ``collapsed`` (py-spy's raw format: ``frame;frame;... samples``
    per line) with the most samples, on top of the stack (self) and anywhere in it."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            anywhere[frame] += n
    lines = [f"\n{kind}: {total} samples", "| self % | with callees % | function |", "| ---: | ---: | --- |"]
    for frame, n in own.most_common(count):
        lines.append(
            f"| {100 * n / max(total, 1):.1f} | {100 * anywhere[frame] / max(total, 1):.1f} | {frame} |"
        )
    lines += ["", "| with callees % | function |", "| ---: | --- |"]
    for frame, n in anywhere.most_common(count * 2):
        lines.append(f"| {100 * n / max(total, 1):.1f} | {frame} |")
    return "\n".join(lines)


def stop_spies(spies: dict[str, subprocess.Popen[bytes]]) -> dict[str, str]:
    """Wait for each py-spy (SIGINT after a grace: it then writes what it has); their errors."""
    errors = {}
    for kind, spy in spies.items():
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(15)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(5)
        if spy.returncode:
            assert spy.stderr is not None
            error = spy.stderr.read().decode(errors="replace")
            if "No stack counts found" in error:
                # (the driver, say, does next to nothing under the steady load)
                error = "no sample: the process never held the GIL while sampled (idle)"
            errors[kind] = error.strip()[-500:]
    return errors


def table(
    idle: dict[str, Row],
    busy: dict[str, Row],
    idle_seconds: float,
    calls: int,
    link: dict[str, int],
    latency: tuple[float, float],
    meta: str,
) -> str:
    order = ["driver", "connection", "router", "call_actor"]
    labels = order + sorted(set(busy) - set(order), key=lambda k: -busy[k].cpu)
    lines = [
        meta,
        "",
        "| process | n | threads | idle: % of a core | µs CPU per call | wake-ups per call |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    total = Row("total")
    idle_total = 0.0
    for label in labels:
        row = busy.get(label)
        if row is None:
            continue
        idle_row = idle.get(label, Row(label))
        idle_total += idle_row.cpu
        total.processes += row.processes
        total.threads += row.threads
        total.cpu += row.cpu
        total.switches += row.switches
        lines.append(
            f"| {label} | {row.processes} | {row.threads} | {100 * idle_row.cpu / idle_seconds:.1f} "
            f"| {1e6 * row.cpu / calls:.0f} | {row.switches / calls:.1f} |"
        )
    lines.append(
        f"| **total** | {total.processes} | {total.threads} | {100 * idle_total / idle_seconds:.1f} "
        f"| **{1e6 * total.cpu / calls:.0f}** | **{total.switches / calls:.1f}** |"
    )
    lines.append("")
    lines.append(f"offer→answer p50 {latency[0]:.2f} ms, p99 {latency[1]:.2f} ms ({calls} calls)")
    if link:
        frames = link.get("frames_out", 0) + link.get("frames_in", 0)
        size = link.get("bytes_out", 0) + link.get("bytes_in", 0)
        lines.append(
            f"link (connection actor ↔ CallActors, both ways): {frames / calls:.1f} frames per call "
            f"({link.get('acks_out', 0) / calls:.1f} bare ACKs sent by the connection actor), "
            f"{size / calls:.0f} bytes per call"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "out", nargs="?", default=str(DEFAULT_OUT), help="directory for the SVGs and the table"
    )
    parser.add_argument("--n", type=int, default=1000, help="calls per phase")
    parser.add_argument("--rate", type=float, default=200.0, help="calls/s")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of the idle phase")
    parser.add_argument("--no-flame", action="store_true", help="skip the py-spy phase")
    parser.add_argument(
        "--stacks",
        action="store_true",
        help="write collapsed stacks (<kind>.stacks.txt) instead of flame graphs, and print "
        "each kind's functions with the largest share of samples (self and with callees)",
    )
    parser.add_argument("--spy-rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument(
        "--spy-all", action="store_true", help="sample every running thread, not only the GIL holder"
    )
    parser.add_argument("--json", help="also write the raw figures to this file")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_TMPDIR", "/tmp/relay-profile-ray")
    with EmulatorProcess(EMULATOR_ARGS, cpu=0) as emu:
        http("POST", f"{emu.control_url}/config", {"journal_limit": 50 * args.n, "ring_timeout": 600})
        pids: dict[str, list[int]] = {}
        proc, tree, stderr_lines, protocols, context = launch_runner(
            emu, "ray1", "inbound", args.n, pids=pids
        )
        assert proc.stdin is not None
        try:
            kinds = {proc.pid: "driver"}
            for kind, found in pids.items():
                kinds.update({pid: kind for pid in found})
            # Idle: what the tree costs with nothing to do.
            s0 = snapshot(tree.root, kinds)
            time.sleep(args.idle)
            s1 = snapshot(tree.root, kinds)
            idle = delta(s0, s1)
            # Measured: the steady load, nothing attached.
            http("DELETE", f"{emu.control_url}/journal")
            s2 = snapshot(tree.root, kinds)
            took = steady_load(emu, context, args.n, args.rate)
            s3 = snapshot(tree.root, kinds)
            busy = delta(s2, s3)
            entries: list[dict[str, Any]] = []
            for protocol in protocols:
                journal = http("GET", f"{emu.control_url}/journal?session={protocol}")
                entries += journal["sessions"].get(protocol, [])
            lat = offer_to_answer(entries)
            latency = (percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000)
            errors: dict[str, str] = {}
            if not args.no_flame:
                chosen = {"driver": proc.pid}
                for kind in PROFILED[1:]:
                    if pids.get(kind):
                        chosen[kind] = pids[kind][0]
                seconds = args.n / args.rate + 2.0
                spies = start_spies(chosen, out, seconds, args.spy_rate, not args.spy_all, args.stacks)
                time.sleep(0.5)  # (py-spy attaches: a start-up, not a condition to wait on)
                steady_load(emu, context, args.n, args.rate)
                errors = stop_spies(spies)
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            done = read_done(proc, stderr_lines, "ray1 steady")
            proc.stdin.write("go\n")
            proc.stdin.flush()
            proc.wait(120)
        finally:
            kill_tree(proc, tree)
    phases = 1 if args.no_flame else 2
    # The link's counters span every phase; the phases carry the same load.
    link = {k: v // phases for k, v in (done.get("link") or {}).items()}
    meta = (
        f"Ray (1 shard, 2 CallActors), steady {args.rate:g} calls/s, {args.n} calls in {took:.1f} s; "
        f"idle phase {args.idle:g} s; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    text = table(idle, busy, args.idle, args.n, link, latency, meta)
    print(text)
    (out / "last_table.md").write_text(text)
    if not args.no_flame and args.stacks:
        for kind in PROFILED:
            if (out / f"{kind}.stacks.txt").exists():
                print(top_functions(kind, (out / f"{kind}.stacks.txt").read_text()))
    elif not args.no_flame:
        print(
            "flame graphs: "
            + ", ".join(str(out / f"{k}.svg") for k in PROFILED if (out / f"{k}.svg").exists())
        )
    for kind, error in errors.items():
        print(f"py-spy on the {kind}: {error}", file=sys.stderr)
    if args.json:
        figures = {
            "idle": {k: vars(v) for k, v in idle.items()},
            "busy": {k: vars(v) for k, v in busy.items()},
            "calls": args.n,
            "idle_seconds": args.idle,
            "link": link,
            "latency_ms": latency,
            "pids": pids,
            "counts": dict(Counter(s.label for s in s3.values())),
        }
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
