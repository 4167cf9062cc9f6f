"""Side by side: our RelayClient versus the official signalwire-sdk, same emulator, same run.

    python benchmarks/bench_clients.py [--n 1000] [--rate 200] [--quick]

The emulator runs in its own process pinned to CPU 0 (wss, like the SDK needs);
each client runs in its own process pinned to CPU 1 (``client_runner.py``).
Scenarios: inbound calls (answer → play TTS → hang up) as a burst (all injected
at once) and at a steady rate; N outbound dials; N messages to delivered.

Offer→answer latency is measured at the server, identically for both clients:
from the emulator's journal timestamp of each ``calling.call.receive`` it sent
to that of the ``calling.answer`` it received. CPU is the client process's
user+system time from its READY line to the end of the scenario.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from relay_actors.emulator import EmulatorProcess

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "client_runner.py"
TIME_LIMIT = 600.0
IMPLS = ("sdk", "ours")


def http(method: str, url: str, body: Any = None) -> Any:
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[k]


def offer_to_answer(journal: list[dict[str, Any]]) -> list[float]:
    offered: dict[str, float] = {}
    latencies: list[float] = []
    for entry in journal:
        frame = entry["frame"]
        if entry["dir"] == "out" and frame.get("method") == "signalwire.event":
            params = frame.get("params") or {}
            if params.get("event_type") == "calling.call.receive":
                offered[params["params"]["call_id"]] = entry["t"]
        elif entry["dir"] == "in" and frame.get("method") == "calling.answer":
            t0 = offered.pop((frame.get("params") or {}).get("call_id"), None)
            if t0 is not None:
                latencies.append(entry["t"] - t0)
    return latencies


def run_one(emu: EmulatorProcess, impl: str, scenario: str, n: int, rate: float | None) -> dict[str, Any]:
    env = {
        **os.environ,
        "SIGNALWIRE_PROJECT_ID": emu.project,
        "SIGNALWIRE_API_TOKEN": emu.token,
        "SIGNALWIRE_SPACE": emu.host,
        "SIGNALWIRE_RELAY_CA_FILE": emu.ca_file,
        "SIGNALWIRE_LOG_MODE": "off",
        "PYTHONUNBUFFERED": "1",
    }
    context = f"bench-{impl}-{scenario}-{time.monotonic_ns()}"
    cmd = [
        sys.executable,
        str(RUNNER),
        "--impl",
        impl,
        "--scenario",
        scenario,
        "--n",
        str(n),
        "--context",
        context,
    ]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "1", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError(f"{impl} runner failed: {proc.stderr.read() if proc.stderr else ''}")
        protocol = ready[1]
        if scenario == "inbound":
            body: dict[str, Any] = {"context": context, "count": n}
            if rate:
                body["rate"] = rate
            http("POST", f"{emu.control_url}/calls", body)
        out, err = proc.communicate(timeout=TIME_LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{impl} {scenario} failed ({proc.returncode}): {err[-2000:]}")
    result = json.loads(lines[-1])
    if scenario == "inbound":
        journal = http("GET", f"{emu.control_url}/journal?session={protocol}")
        entries = journal.get("sessions", journal).get(protocol, []) if isinstance(journal, dict) else []
        lat = offer_to_answer(entries)
        result["p50_ms"] = percentile(lat, 0.5) * 1000
        result["p99_ms"] = percentile(lat, 0.99) * 1000
        result["latency_samples"] = len(lat)
    return result


def fmt(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000, help="calls / dials / messages per scenario")
    parser.add_argument("--rate", type=float, default=200.0, help="steady inbound rate (calls/s)")
    parser.add_argument("--quick", action="store_true", help="n=200 for a fast look")
    args = parser.parse_args()
    n = 200 if args.quick else args.n
    scenarios = [
        ("inbound burst", "inbound", None),
        (f"inbound {args.rate:g}/s", "inbound", args.rate),
        ("dial", "dial", None),
        ("message", "message", None),
    ]
    rows: list[tuple[str, dict[str, dict[str, Any]]]] = []
    durations = "play=0.05,ring=0.01,answer=0.01,message=0.002,step=0.002"
    with EmulatorProcess(["--tls", "--ping-interval", "0", "--durations", durations], cpu=0) as emu:
        http("POST", f"{emu.control_url}/config", {"journal_limit": 50 * n})
        for label, scenario, rate in scenarios:
            results = {impl: run_one(emu, impl, scenario, n, rate) for impl in IMPLS}
            rows.append((label, results))
            http("DELETE", f"{emu.control_url}/journal")
    print(f"\nn={n} per scenario; emulator on CPU 0, each client on CPU 1; wss\n")
    header = (
        f"{'scenario':<18}{'impl':<6}{'done':>6}{'fail':>6}{'ops/s':>10}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/op':>11}"
    )
    print(header)
    print("-" * len(header))
    for label, results in rows:
        for impl in IMPLS:
            r = results[impl]
            ops = r["done"] / r["wall"] if r["wall"] else float("nan")
            print(
                f"{label:<18}{impl:<6}{r['done']:>6}{r['failures']:>6}{ops:>10.0f}"
                f"{fmt(r.get('p50_ms', float('nan'))):>9}{fmt(r.get('p99_ms', float('nan'))):>9}"
                f"{1000 * r['cpu'] / max(r['done'], 1):>11.3f}"
            )
        ours, sdk = results["ours"], results["sdk"]
        ratio_ops = (ours["done"] / ours["wall"]) / (sdk["done"] / sdk["wall"])
        ratio_cpu = (ours["cpu"] / max(ours["done"], 1)) / (sdk["cpu"] / max(sdk["done"], 1))
        lat = ""
        if "p50_ms" in ours:
            lat = f"  p50 {fmt(ours['p50_ms'] / sdk['p50_ms'])}x  p99 {fmt(ours['p99_ms'] / sdk['p99_ms'])}x"
        print(f"{'':<18}{'ratio':<6} ours/sdk: ops/s {ratio_ops:.2f}x  CPU/op {ratio_cpu:.2f}x{lat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
