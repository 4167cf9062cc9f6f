"""Draw the Grafana dashboard's panels from a real Prometheus's data: ``docs/assets/dashboard.svg``.

Grafana itself is not installable here, so this runs what it would show: the emulator, the IVR example on
a local Ray, steady inbound load (``relay-actors load``), and a real Prometheus (the Debian package)
scraping the app's metrics endpoint every second; then it asks Prometheus's HTTP API for every query of
every ``relay_*`` panel of ``dashboards/grafana/relay-actors-overview.json`` over the run
(``/api/v1/query_range``) and draws the panels as one SVG. The "Ray resources" row reads Ray's own
metrics agent and is left out. Run from the repository's root (about two minutes):

    python docs/scripts/dashboard_picture.py [--seconds 60] [--rate 20] [--out docs/assets/dashboard.svg]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from html import escape
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dashboards.build import queries  # noqa: E402

APP = "ivr"
RAY_PANELS_FROM = 41  # the "Ray resources" row: Ray's own agent, not scraped here
COLUMNS, PANEL_W, PANEL_H, GAP = 3, 380, 200, 16
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def prom_range(prom: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 2})
    return list(get_json(f"{prom}/api/v1/query_range?{q}")["data"]["result"])


def collect(seconds: float, rate: float) -> tuple[list[dict[str, Any]], float, float]:
    """Run the scenario and return every panel query's series over the loaded window."""
    tmp = Path(tempfile.mkdtemp(prefix="relay-dashboard-"))
    procs: list[subprocess.Popen[str]] = []
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RAY_TMPDIR": str(tmp / "ray"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    cli = [sys.executable, "-m", "relay_actors.cli"]
    try:
        emu = subprocess.Popen(
            [*cli, "emulator", "--port", "0", "--control-port", "0", "--durations", "play=1,record=1"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        procs.append(emu)
        assert emu.stdout is not None
        info = json.loads(emu.stdout.readline())
        metrics_port = free_port()
        app_env = {
            **env,
            "SIGNALWIRE_PROJECT_ID": info["project"],
            "SIGNALWIRE_API_TOKEN": info["token"],
            "SIGNALWIRE_SPACE": info["host"],
            "SIGNALWIRE_RELAY_SCHEME": "ws",
        }
        log = open(tmp / "app.log", "w")  # closed with the process
        app = subprocess.Popen(
            [*cli, "run", "examples.ivr.app:client", "--ray", "--metrics-port", str(metrics_port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=app_env,
            cwd=ROOT,
        )
        procs.append(app)
        wait_for(lambda: "ready:" in (tmp / "app.log").read_text(), 240, "the app's ready line")

        prom_port = free_port()
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: relay\n    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
        )
        prom_bin = shutil.which("prometheus") or "/usr/bin/prometheus"
        prom = subprocess.Popen(
            [
                prom_bin,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(prom)
        prom_url = f"http://127.0.0.1:{prom_port}"
        wait_for(lambda: _up(prom_url), 60, "Prometheus to scrape the app")

        start = time.time()
        # Callers press 1 (a transfer, 3 s) or 3 (voicemail), the IVR's two long paths.
        subprocess.run(
            [
                *cli,
                "load",
                "--control-url",
                info["control_url"],
                "--rate",
                str(rate),
                "--total",
                str(int(rate * seconds)),
                "--context",
                "office",
                "--hangup-after",
                "3",
            ],
            env=env,
            cwd=ROOT,
            check=False,
            stdout=subprocess.DEVNULL,
        )
        time.sleep(10)  # the tail: calls end, rates fall back
        end = time.time()
        results = []
        for q in queries():
            if q["panel"] >= RAY_PANELS_FROM:
                continue
            expr = q["expr"].replace("$app", APP).replace("$__rate_interval", "10s")
            results.append({**q, "series": prom_range(prom_url, expr, start, end)})
        return results, start, end
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT if p is not procs[-1] else signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _up(prom: str) -> bool:
    try:
        r = get_json(f"{prom}/api/v1/query?query=up")
    except OSError:
        return False
    return any(s["value"][1] == "1" for s in r["data"]["result"])


def label_of(expr: str, metric: dict[str, str]) -> str:
    """A legend entry: the query's first metric name (without ``relay_``) and the series' labels."""
    name = re.search(r"relay_(\w+?)(?:_total)?\b", expr)
    labels = ",".join(f"{k}={v}" for k, v in sorted(metric.items()) if k != "app")
    return f"{name.group(1) if name else expr[:20]} {labels}".strip()


def draw(results: list[dict[str, Any]], start: float, end: float) -> str:
    """One SVG: a panel per dashboard panel, every query's series as a line."""
    panels: dict[int, dict[str, Any]] = {}
    for r in results:
        p = panels.setdefault(r["panel"], {"title": r["title"], "series": []})
        p["series"] += [(label_of(r["expr"], s["metric"]), s["values"]) for s in r["series"]]
    rows = (len(panels) + COLUMNS - 1) // COLUMNS
    width = COLUMNS * (PANEL_W + GAP) + GAP
    height = rows * (PANEL_H + GAP) + GAP + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#181b1f"/>',
        f'<text x="{GAP}" y="22" fill="#d8d9da" font-size="14">relay-actors overview: the IVR example on Ray '
        f"under {int(end - start)} s of inbound load (a real Prometheus; the dashboard's queries)</text>",
    ]
    for i, (_, panel) in enumerate(sorted(panels.items())):
        x0 = GAP + (i % COLUMNS) * (PANEL_W + GAP)
        y0 = 30 + GAP + (i // COLUMNS) * (PANEL_H + GAP)
        out.append(
            f'<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="#202226" stroke="#2c3235"/>'
        )
        out.append(
            f'<text x="{x0 + 8}" y="{y0 + 16}" fill="#d8d9da" font-weight="bold">'
            f"{escape(panel['title'])}</text>"
        )
        px, py, pw, ph = x0 + 40, y0 + 26, PANEL_W - 50, PANEL_H - 80
        values = [float(v) for _, vs in panel["series"] for _, v in vs if v not in ("NaN", "+Inf", "-Inf")]
        top = max(values, default=0.0) or 1.0
        out.append(f'<text x="{px - 4}" y="{py + 8}" fill="#8e8e8e" text-anchor="end">{top:.3g}</text>')
        out.append(f'<text x="{px - 4}" y="{py + ph}" fill="#8e8e8e" text-anchor="end">0</text>')
        out.append(f'<line x1="{px}" y1="{py + ph}" x2="{px + pw}" y2="{py + ph}" stroke="#464c54"/>')
        if not panel["series"]:
            out.append(
                f'<text x="{px + pw / 2}" y="{py + ph / 2}" fill="#8e8e8e" '
                'text-anchor="middle">No data</text>'
            )
        for k, (name, vs) in enumerate(panel["series"][:8]):
            colour = COLOURS[k % len(COLOURS)]
            pts = " ".join(
                f"{px + pw * (float(t) - start) / (end - start):.1f},{py + ph - ph * float(v) / top:.1f}"
                for t, v in vs
                if v not in ("NaN", "+Inf", "-Inf")
            )
            out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
            ly = y0 + PANEL_H - 46 + (k % 4) * 11
            lx = x0 + 8 + (k // 4) * (PANEL_W // 2)
            out.append(f'<rect x="{lx}" y="{ly - 7}" width="8" height="3" fill="{colour}"/>')
            out.append(
                f'<text x="{lx + 12}" y="{ly}" fill="#c7d0d9" font-size="9">{escape(name[:52])}</text>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of inbound load")
    parser.add_argument("--rate", type=float, default=20.0, help="inbound calls per second")
    parser.add_argument("--out", default=str(ROOT / "docs" / "assets" / "dashboard.svg"))
    args = parser.parse_args(argv)
    results, start, end = collect(args.seconds, args.rate)
    Path(args.out).write_text(draw(results, start, end))
    with_data = sum(1 for r in results if r["series"])
    print(f"wrote {args.out}: {len(results)} queries, {with_data} with data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
