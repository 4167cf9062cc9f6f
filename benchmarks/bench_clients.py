"""Side by side: the official signalwire-sdk, our in-process RelayClient, and our Ray runtime
(1 and 2 connection shards) — same emulator, same run.

    python benchmarks/bench_clients.py [--n 1000] [--rate 200] [--hold 10000] [--hold-rate R]
                                       [--quick] [--repeat 3]

The emulator runs in its own process pinned to CPU 0 (wss, which the SDK needs);
each client runs in its own process tree pinned to CPU 1 (``client_runner.py``;
for Ray that tree holds the driver, the GCS, the raylet and every actor).

``--impls ours+t,ray1+t`` (any impl but sdk, with ``+t``) runs it with tracing on: the
standard ``OTEL_*`` variables point the real OTLP/HTTP exporter (default batch processor)
at a sink in this process that answers every export (``--trace-ratio 0.1``: one call in
ten sampled, ``parentbased_traceidratio``); the plain impls run with no ``OTEL_*``
variable at all (tracing off).

Measured from outside, identically for all: CPU seconds (user+system) of the
client's whole process tree between its READY and DONE lines; peak memory
(sum of PSS over the tree, sampled every 0.5 s); offer→answer latency at the
server, from the emulator journal's timestamps of each ``calling.call.receive``
sent and the ``calling.answer`` received; memory per active call from the
``hold`` scenario (N calls answered and held open: PSS when all are up minus
PSS at READY, divided by N).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

from relay_actors.emulator import EmulatorProcess

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "client_runner.py"
TIME_LIMIT = 900.0
#: The emulator every client runs against: wss (the SDK needs it), short operations.
EMULATOR_ARGS = [
    "--tls",
    "--ping-interval",
    "0",
    "--durations",
    "play=0.05,ring=0.01,answer=0.01,message=0.002,step=0.002",
]


def http(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read() or b"null")


#: The OTLP sink's base URL while one runs (``+t`` impls export to it).
_otlp_sink: str | None = None
#: ``OTEL_TRACES_SAMPLER_ARG`` of the ``+t`` runs (None: the default sampler, every call).
_trace_ratio: float | None = None
#: What the sink received: exports and bytes.
otlp_received: Counter[str] = Counter()


@contextmanager
def otlp_sink() -> Iterator[str]:
    """An OTLP/HTTP endpoint that accepts every export (and decodes nothing: its CPU is not
    the client's). Yields its base URL."""

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            otlp_received["bytes"] += len(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            otlp_received["exports"] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def span(entries: list[dict[str, Any]]) -> float:
    """Seconds from the first offer sent to the last ``calling.end`` received."""
    offers = [
        e["t"]
        for e in entries
        if e["dir"] == "out" and (e["frame"].get("params") or {}).get("event_type") == "calling.call.receive"
    ]
    ends = [e["t"] for e in entries if e["dir"] == "in" and e["frame"].get("method") == "calling.end"]
    return max(ends) - min(offers) if offers and ends else float("nan")


def offer_to_answer(entries: list[dict[str, Any]], at: list[float] | None = None) -> list[float]:
    """Each call's offer→answer time at the server; ``at`` gets each one's offer time."""
    offered: dict[str, float] = {}
    latencies: list[float] = []
    for entry in sorted(entries, key=lambda e: e["t"]):
        frame = entry["frame"]
        if entry["dir"] == "out" and frame.get("method") == "signalwire.event":
            params = frame.get("params") or {}
            if params.get("event_type") == "calling.call.receive":
                offered[params["params"]["call_id"]] = entry["t"]
        elif entry["dir"] == "in" and frame.get("method") == "calling.answer":
            t0 = offered.pop((frame.get("params") or {}).get("call_id"), None)
            if t0 is not None:
                latencies.append(entry["t"] - t0)
                if at is not None:
                    at.append(t0)
    return latencies


class Tree:
    """A process and its descendants, measured with psutil."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0.0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def procs(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> dict[int, tuple[str, float]]:
        out = {}
        for p in self.procs():
            try:
                t = p.cpu_times()
                out[p.pid] = (self._label(p), t.user + t.system)
            except psutil.Error:
                continue
        return out

    @staticmethod
    def _label(p: psutil.Process) -> str:
        try:
            cmd = p.cmdline()
        except psutil.Error:
            return "?"
        text = " ".join(cmd[:3])
        for key in (
            "ConnectionActor",
            "CallActor",
            "Router",
            "raylet",
            "gcs_server",
            "dashboard",
            "agent",
            "log_monitor",
        ):
            if key in text:
                return key
        if "client_runner" in text:
            return "driver"
        return os.path.basename(cmd[0]) if cmd else p.name()

    def pss(self) -> float:
        return sum(self.pss_by_process().values())

    def pss_by_process(self) -> Counter[str]:
        """MiB of PSS per kind of process (``_label``)."""
        out: Counter[str] = Counter()
        for p in self.procs():
            try:
                out[self._label(p)] += p.memory_full_info().pss / 2**20
            except psutil.Error:
                continue
        return out

    def start_sampling(self, interval: float = 0.5) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                self.peak = max(self.peak, self.pss())

        self._sampler = threading.Thread(target=loop, daemon=True)
        self._sampler.start()

    def stop_sampling(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(5)


def cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> Counter[str]:
    by_label: Counter[str] = Counter()
    for pid, (label, t) in after.items():
        by_label[label] += t - before.get(pid, (label, 0.0))[1]
    return by_label


def runner_env(emu: EmulatorProcess, traced: bool = False) -> dict[str, str]:
    """The environment of a ``client_runner.py`` process: the emulator's coordinates (and,
    ``traced``, the OTEL variables that export to this process's sink)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "SIGNALWIRE_PROJECT_ID": emu.project,
        "SIGNALWIRE_API_TOKEN": emu.token,
        "SIGNALWIRE_SPACE": emu.host,
        "SIGNALWIRE_RELAY_CA_FILE": emu.ca_file,
        "SIGNALWIRE_LOG_MODE": "off",
        "PYTHONUNBUFFERED": "1",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": os.environ.get("RAY_TMPDIR", "/tmp/relay-bench-ray"),
    }
    if traced:
        assert _otlp_sink is not None
        env.update(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=_otlp_sink)
        if _trace_ratio is not None:
            env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
            env["OTEL_TRACES_SAMPLER_ARG"] = str(_trace_ratio)
    os.makedirs(env["RAY_TMPDIR"], exist_ok=True)
    return env


def start_runner(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    """Start ``client_runner.py`` (``cmd``) on CPU 1; its stderr is collected in the list."""
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "1", *cmd]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    stderr_lines: list[str] = []
    threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    return proc, stderr_lines


def wait_ready(
    proc: subprocess.Popen[str], stderr_lines: list[str], impl: str, pids: dict[str, list[int]] | None = None
) -> list[str]:
    """Wait for the runner's READY line; the RELAY protocols it names. A Ray runner's
    ``PIDS`` line before it (which process is which actor) goes into ``pids``."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.startswith("PIDS "):
        if pids is not None:
            pids.update(json.loads(line[5:]))
        line = proc.stdout.readline()
    ready = line.split()
    if not ready or ready[0] != "READY":
        proc.wait(30)
        raise RuntimeError(f"{impl} runner failed: {''.join(stderr_lines)[-3000:]}")
    return ready[1:]


def read_done(proc: subprocess.Popen[str], stderr_lines: list[str], what: str) -> dict[str, Any]:
    """The runner's DONE figures (it then waits for a line on stdin to go)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("DONE"):
        raise RuntimeError(f"{what} failed: {line}{''.join(stderr_lines)[-3000:]}")
    result: dict[str, Any] = json.loads(line[5:])
    return result


def launch_runner(
    emu: EmulatorProcess,
    impl: str,
    scenario: str,
    n: int,
    link_linger: float | None = None,
    pids: dict[str, list[int]] | None = None,
) -> tuple[subprocess.Popen[str], Tree, list[str], list[str], str]:
    """Start ``client_runner.py`` for ``impl`` (``sdk``, ``ours``, ``ray<shards>``; ``+t``: with
    tracing on) and wait for its READY line: (process, its tree, its stderr lines so far, its
    protocols, its context). ``pids``: filled with the Ray actors' pids by kind."""
    traced = impl.endswith("+t")
    impl = impl.removesuffix("+t")
    shards = int(impl[3:] or 1) if impl.startswith("ray") else 1
    context = f"bench-{impl}-{scenario}-{time.monotonic_ns()}"
    kind = "ray" if impl.startswith("ray") else impl
    cmd = [sys.executable, str(RUNNER), "--impl", kind, "--scenario", scenario, "--n", str(n)]
    cmd += ["--context", context, "--shards", str(shards)]
    if link_linger is not None:
        cmd += ["--link-linger", str(link_linger)]
    proc, stderr_lines = start_runner(cmd, runner_env(emu, traced))
    tree = Tree(proc.pid)
    try:
        protocols = wait_ready(proc, stderr_lines, impl, pids)
    except BaseException:
        kill_tree(proc, tree)
        raise
    return proc, tree, stderr_lines, protocols, context


def kill_tree(proc: subprocess.Popen[str], tree: Tree) -> None:
    """Stop sampling and kill a runner's whole tree if it is still up."""
    tree.stop_sampling()
    if proc.poll() is None:
        for p in tree.procs()[::-1]:
            try:
                p.kill()
            except psutil.Error:
                pass
        proc.wait(30)


def run_one(
    emu: EmulatorProcess,
    impl: str,
    scenario: str,
    n: int,
    rate: float | None,
    link_linger: float | None = None,
) -> dict[str, Any]:
    proc, tree, stderr_lines, protocols, context = launch_runner(emu, impl, scenario, n, link_linger)
    impl = impl.removesuffix("+t")
    assert proc.stdout is not None and proc.stdin is not None
    server = psutil.Process(emu.pid)
    try:
        ended_before = http("GET", f"{emu.control_url}/stats")["call_state_transitions"].get("ended", 0)
        cpu0, pss0_by = tree.cpu(), tree.pss_by_process()
        pss0 = sum(pss0_by.values())
        server_cpu0 = sum(server.cpu_times()[:2])
        tree.start_sampling()
        if scenario in ("inbound", "hold"):
            body: dict[str, Any] = {"context": context, "count": n}
            if rate:
                body["rate"] = rate
            if scenario == "hold":
                body["hangup_after"] = 3600
            http("POST", f"{emu.control_url}/calls", body)
        held_pss = float("nan")
        held_by: Counter[str] = Counter()
        if scenario == "hold":
            deadline = time.monotonic() + TIME_LIMIT
            while time.monotonic() < deadline:
                answered = http("GET", f"{emu.control_url}/stats")["calls"].get("answered", 0)
                if answered >= n:
                    break
                time.sleep(0.25)
            held_by = tree.pss_by_process()
            held_pss = sum(held_by.values())
            calls = http("GET", f"{emu.control_url}/calls?state=answered")["calls"]
            with ThreadPoolExecutor(16) as pool:
                list(
                    pool.map(
                        lambda c: http("POST", f"{emu.control_url}/calls/{c['call_id']}/hangup", {}), calls
                    )
                )
        if scenario == "inbound":
            deadline = time.monotonic() + TIME_LIMIT
            while time.monotonic() < deadline:
                stats = http("GET", f"{emu.control_url}/stats")
                if stats["call_state_transitions"].get("ended", 0) - ended_before >= n:
                    break
                time.sleep(0.05)
        if scenario in ("inbound", "hold"):
            cpu1 = tree.cpu()
            server_cpu1 = sum(server.cpu_times()[:2])
            if scenario == "hold":
                # Let the hang-ups reach the handlers before the runner reports.
                while http("GET", f"{emu.control_url}/stats")["calls"].get("answered", 0) > 0:
                    time.sleep(0.1)
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        result = read_done(proc, stderr_lines, f"{impl} {scenario}")
        if scenario not in ("inbound", "hold"):
            cpu1 = tree.cpu()
            server_cpu1 = sum(server.cpu_times()[:2])
        tree.stop_sampling()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.wait(120)
    finally:
        kill_tree(proc, tree)
    by_label = cpu_delta(cpu0, cpu1)
    result.update(
        impl=impl,
        scenario=scenario,
        cpu=sum(by_label.values()),
        cpu_by_process=dict(by_label.most_common()),
        emulator_cpu=server_cpu1 - server_cpu0,
        peak_mib=max(tree.peak, pss0),
        base_mib=pss0,
        held_mib=held_pss,
    )
    if scenario == "hold":
        result["kib_per_call"] = (held_pss - pss0) * 1024 / max(n, 1)
        result["kib_per_call_by_process"] = {
            k: (held_by[k] - pss0_by[k]) * 1024 / max(n, 1) for k in sorted(set(held_by) | set(pss0_by))
        }
    if scenario == "inbound":
        entries: list[dict[str, Any]] = []
        for protocol in protocols:
            journal = http("GET", f"{emu.control_url}/journal?session={protocol}")
            entries += journal["sessions"].get(protocol, [])
        at: list[float] = []
        lat = offer_to_answer(entries, at)
        # The slowest calls, with when they were offered (s after the first offer): spikes
        # that come in clusters at a period point at a timer somewhere in the tree.
        start = min(at, default=0.0)
        result["slowest"] = sorted(
            ((round(t - start, 3), round(x * 1000, 2)) for t, x in zip(at, lat, strict=True)),
            key=lambda p: -p[1],
        )[:20]
        # Throughput as the server saw it, the same way for every client.
        result["wall"] = span(entries)
        result.update(
            p50_ms=percentile(lat, 0.5) * 1000, p99_ms=percentile(lat, 0.99) * 1000, samples=len(lat)
        )
    return result


#: The figures of one run that the table shows (medians over rounds).
NUMERIC = ("done", "failures", "ops", "p50_ms", "p99_ms", "cpu_op", "peak_mib", "kib_per_call", "emu_busy")


def derive(r: dict[str, Any]) -> dict[str, Any]:
    """Add the table's figures to one run's result."""
    r["ops"] = r["done"] / r["wall"] if r["wall"] else float("nan")
    r["cpu_op"] = 1000 * r["cpu"] / max(r["done"], 1)
    # The emulator's share of its own core while it served this run: near 100%
    # means the server, not the client, set the pace.
    r["emu_busy"] = 100 * r["emulator_cpu"] / r["wall"] if r["wall"] else float("nan")
    for key in NUMERIC:
        r.setdefault(key, float("nan"))
    return r


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000, help="calls / dials / messages per scenario")
    parser.add_argument("--rate", type=float, default=200.0, help="steady inbound rate (calls/s)")
    parser.add_argument("--hold", type=int, default=10_000, help="calls held open for memory per call")
    parser.add_argument(
        "--hold-rate",
        type=float,
        default=None,
        help="the held calls arrive at this many calls/s (default: all at once, a burst)",
    )
    parser.add_argument("--quick", action="store_true", help="n=200, hold=1000 for a fast look")
    parser.add_argument(
        "--impls",
        default="sdk,ours,ray1,ray2",
        help="comma-separated: sdk,ours,ray1,ray2 (+t: with tracing on, e.g. ours+t)",
    )
    parser.add_argument(
        "--scenarios", default="burst,steady,dial,message,hold", help="comma-separated subset to run"
    )
    parser.add_argument(
        "--link-linger",
        type=float,
        default=None,
        help="RayOptions.link_linger for the Ray runs (default: its own)",
    )
    parser.add_argument(
        "--trace-ratio", type=float, default=None, help="+t runs sample this share of calls (default: all)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds per scenario (medians are shown)")
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args()
    n = 200 if args.quick else args.n
    hold = 1000 if args.quick else args.hold
    impls = args.impls.split(",")
    held_at = f" at {args.hold_rate:g}/s" if args.hold_rate else ""
    scenarios = [
        ("burst", "inbound", n, None, impls),
        (f"steady {args.rate:g}/s", "inbound", n, args.rate, impls),
        ("dial", "dial", n, None, [i for i in impls if not i.startswith("ray")]),
        ("message", "message", n, None, [i for i in impls if not i.startswith("ray")]),
        (f"hold {hold}{held_at}", "hold", hold, args.hold_rate, impls),
    ]
    wanted = set(args.scenarios.split(","))
    scenarios = [s for s in scenarios if s[0].split()[0] in wanted]
    rows: list[tuple[str, dict[str, list[dict[str, Any]]]]] = []
    durations = "play=0.05,ring=0.01,answer=0.01,message=0.002,step=0.002"
    global _otlp_sink, _trace_ratio
    _trace_ratio = args.trace_ratio
    with (
        otlp_sink() as _otlp_sink,
        EmulatorProcess(["--tls", "--ping-interval", "0", "--durations", durations], cpu=0) as emu,
    ):
        http("POST", f"{emu.control_url}/config", {"journal_limit": 50 * max(n, hold), "ring_timeout": 600})
        for label, scenario, count, rate, which in scenarios:
            results: dict[str, list[dict[str, Any]]] = {impl: [] for impl in which}
            # Repetitions interleave the implementations, so a slow spell of the
            # machine falls on all of them, and ratios are taken within a round.
            for _ in range(args.repeat):
                for impl in which:
                    results[impl].append(derive(run_one(emu, impl, scenario, count, rate, args.link_linger)))
                    http("DELETE", f"{emu.control_url}/journal")
            rows.append((label, results))
    rounds = f", median of {args.repeat} interleaved rounds" if args.repeat > 1 else ""
    print(f"\nemulator on CPU 0 (wss), each client's process tree on CPU 1; n={n}{rounds}\n")
    header = (
        f"{'scenario':<16}{'impl':<6}{'done':>6}{'fail':>5}{'ops/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'CPU ms/op':>10}{'CPU x sdk':>10}{'ops x sdk':>10}{'peak MiB':>9}{'KiB/call':>9}{'emu busy':>9}"
    )
    print(header)
    print("-" * len(header))
    for label, results in rows:
        sdk_runs = results.get("sdk")
        for impl, runs in results.items():
            cpu_x = ops_x = "-"
            if sdk_runs:
                cpu_x = fmt(median([r["cpu_op"] / s["cpu_op"] for r, s in zip(runs, sdk_runs, strict=True)]))
                ops_x = fmt(median([r["ops"] / s["ops"] for r, s in zip(runs, sdk_runs, strict=True)]))
            m = {key: median([r[key] for r in runs]) for key in NUMERIC}
            print(
                f"{label:<16}{impl:<6}{m['done']:>6.0f}{m['failures']:>5.0f}{m['ops']:>8.0f}{fmt(m['p50_ms']):>8}"
                f"{fmt(m['p99_ms']):>8}{m['cpu_op']:>10.3f}{cpu_x:>10}{ops_x:>10}{m['peak_mib']:>9.0f}"
                f"{fmt(m['kib_per_call'], 1):>9}{fmt(m['emu_busy'], 0):>8}%"
            )
    if args.repeat > 1:
        print("\nEach round (ops/s, and ÷ the SDK's of the same round):")
        for label, results in rows:
            sdk_runs = results.get("sdk")
            for impl, runs in results.items():
                parts = [
                    f"{r['ops']:.0f}" + (f" ({r['ops'] / s['ops']:.2f}x)" if sdk_runs else "")
                    for r, s in zip(runs, sdk_runs or runs, strict=True)
                ]
                print(f"  {label:<16}{impl:<6}{', '.join(parts)}")
    if otlp_received:
        print(f"\nOTLP sink: {otlp_received['exports']} exports, {otlp_received['bytes'] / 1e6:.1f} MB")
    print("\nCPU seconds by process (Ray runs, the first round):")
    for label, results in rows:
        for impl, runs in results.items():
            if impl.startswith("ray"):
                parts = ", ".join(f"{k} {v:.2f}" for k, v in runs[0]["cpu_by_process"].items() if v >= 0.01)
                print(f"  {label:<16}{impl:<6}{parts}")
    held = [(label, rs) for label, rs in rows if label.startswith("hold")]
    if held:
        print("\nKiB per held call by process (the first round):")
        for label, results in held:
            for impl, runs in results.items():
                by = runs[0].get("kib_per_call_by_process", {})
                parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(by.items(), key=lambda kv: -kv[1]))
                print(f"  {label:<16}{impl:<6}{parts}")
    if args.json:
        Path(args.json).write_text(
            json.dumps([{"label": label, **r} for label, rs in rows for runs in rs.values() for r in runs])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
