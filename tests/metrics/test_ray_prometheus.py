"""Ray actors' metrics, scraped by a real Prometheus through Ray's service discovery file.

The Ray scenario runs in its own process (``ray_scenario.py``: pytest may hold
another Ray for ``tests/ray``); this module starts it once, points Prometheus
at the service discovery file it leaves in its temp dir, and checks the values
and every dashboard query against what Prometheus scraped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .promserver import MISSING, PROMETHEUS, Prometheus, grafana_expr

pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None, reason=MISSING),
    pytest.mark.timeout(240),
]

SCENARIO = Path(__file__).with_name("ray_scenario.py")
APP = "metricsapp"
CALLS = 12
BUDGET = 50


class Scenario:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        # Short: Ray's unix socket paths under it must stay within 107 bytes.
        self.ray_dir = Path(tempfile.mkdtemp(prefix="relaym-", dir="/tmp"))
        self.stderr = open(tmp / "scenario.err", "wb")
        env = {**os.environ, "RELAY_METRICS_INTERVAL": "0.5"}
        env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SCENARIO),
                "--temp-dir",
                str(self.ray_dir),
                "--app",
                APP,
                "--calls",
                str(CALLS),
                "--budget",
                str(BUDGET),
                "--hold",
                "200",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            start_new_session=True,
        )
        self.report: dict[str, Any] | None = None
        self.started = time.monotonic()

    def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith(b"READY "):
                    found.append(json.loads(line[6:]))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            self.stop()
            err = (self.tmp / "scenario.err").read_text(errors="replace")[-3000:]
            raise AssertionError(f"the Ray scenario did not get ready in {timeout}s:\n{err}")
        self.report = found[0]
        self.report["ready_after"] = time.monotonic() - self.started
        return self.report

    def stop(self) -> None:
        """Let the scenario stop its app and Ray; then end whatever of its session is left."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.stderr.close()
        # Ray processes of this session (named by our temp dir) that outlived the driver.
        for pid in _pids_mentioning(str(self.ray_dir)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.ray_dir, ignore_errors=True)


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("ray_metrics")
    scenario = Scenario(tmp)
    prom = None
    try:
        report = scenario.wait_ready()
        sd = scenario.ray_dir / "prom_metrics_service_discovery.json"
        assert sd.exists(), f"Ray wrote no service discovery file in {scenario.ray_dir}"
        prom = Prometheus(tmp / "prom", file_sd=str(sd)).start()
        t = time.monotonic()
        got = prom.wait_value(f'sum(ray_relay_offers_total{{app="{APP}",outcome="admitted"}})', CALLS, 30)
        report["scraped_after"] = time.monotonic() - t
        assert got == CALLS, f"admitted offers in Prometheus: {got}, injected {CALLS}"
        print(
            f"\nscenario ready after {report['ready_after']:.1f}s {report['timings']}, "
            f"metrics in Prometheus {report['scraped_after']:.1f}s after it started"
        )
        yield prom, report
    finally:
        if prom is not None:
            prom.stop()
        scenario.stop()


def test_targets_from_ray_service_discovery_are_loopback_and_up(scraped: tuple[Prometheus, dict]) -> None:
    prom, report = scraped
    targets = prom.api("/api/v1/targets")["data"]["activeTargets"]
    assert targets, "no targets from Ray's service discovery file"
    assert all(t["labels"]["instance"].startswith("127.0.0.1:") for t in targets)
    ports = {f"127.0.0.1:{n['metrics_port']}" for n in report["nodes"]}
    up = {t["labels"]["instance"] for t in targets if t["health"] == "up"}
    assert ports <= up, (ports, targets)


def test_key_metrics_have_the_values_of_the_scenario(scraped: tuple[Prometheus, dict]) -> None:
    prom, report = scraped
    a = f'app="{APP}"'

    def v(expr: str) -> float | None:
        return prom.value(expr)

    assert v(f'sum(ray_relay_offers_total{{{a},outcome="received"}})') == CALLS
    assert v(f'sum(ray_relay_offers_total{{{a},outcome=~"dropped|passed|no_capacity"}})') is None
    assert v(f'sum(ray_relay_events_total{{{a},event_type="calling.call.receive"}})') == CALLS
    assert prom.wait_value(f'sum(ray_relay_handlers_total{{{a},outcome="completed"}})', CALLS, 10) == CALLS
    assert v(f'sum(ray_relay_call_actor_offers_total{{{a},outcome="accepted"}})') == CALLS
    assert v(f"sum(ray_relay_calls_ended_total{{{a}}})") == CALLS
    # Both CallActors took calls, and the per-actor series carry the actor tag.
    per_actor = prom.query(f"sum by (actor) (ray_relay_call_actor_offers_total{{{a}}})")["data"]["result"]
    assert sorted(r["metric"]["actor"] for r in per_actor) == ["0", "1"]
    # Gauges: the budget, the pool, nothing in progress once every handler returned.
    assert v(f'max(ray_relay_call_budget{{{a},component="router"}})') == BUDGET
    assert v(f'max(ray_relay_call_actors{{{a},component="router"}})') == 2
    assert prom.wait_value(f'sum(ray_relay_active_calls{{{a},component="router"}})', 0, 10) == 0
    assert prom.wait_value(f'max(ray_relay_connected{{{a},component="connection"}})', 1, 10) == 1
    # The violation and the drop the scenario caused.
    violations = prom.query(f"ray_relay_protocol_violations_total{{{a}}}")["data"]["result"]
    assert violations and all(r["metric"]["code"] for r in violations)
    assert sum(float(r["value"][1]) for r in violations) >= 1
    assert v(f"sum(ray_relay_reconnects_total{{{a}}})") >= 1
    assert v(f"sum(ray_relay_resumes_total{{{a}}})") >= 1
    # Links: every call's offer and events rode in frames, fewer frames than calls' items,
    # each acknowledged (the acknowledgement latency is a sum over a count).
    frames = v(f'sum(ray_relay_link_frames_total{{{a},component="connection",direction="out"}})')
    acked = v(f'sum(ray_relay_link_ack_latency_seconds_count_total{{{a},component="connection"}})')
    assert frames is not None and acked is not None and 0 < acked <= frames
    assert v(f'sum(ray_relay_link_events_total{{{a},event="authenticated"}})') >= 2
    assert v(f'max(ray_relay_link_connected{{{a},component="connection"}})') == 1
    # Stats keys with no metric of their own would show here; the scenario's have one each.
    assert v(f"count(ray_relay_stat{{{a}}})") is None
    stats = report["stats"]["connections"][0]
    assert v(f"sum(ray_relay_acks_sent_total{{{a}}})") == stats["conn.acks_sent"]


def test_recording_rules_evaluate(scraped: tuple[Prometheus, dict]) -> None:
    prom, _ = scraped
    deadline = time.monotonic() + 20
    missing = [
        "relay:offers:rate1m",
        "relay:active_calls:ratio",
        "relay:events:rate1m",
        "relay:handlers:rate1m",
        "relay:batch_size:avg1m",
    ]
    while missing and time.monotonic() < deadline:
        missing = [r for r in missing if not prom.query(f'{r}{{app="{APP}"}}')["data"]["result"]]
        time.sleep(0.5)
    assert not missing, f"recording rules without data: {missing}"
    assert prom.value(f'relay:active_calls:ratio{{app="{APP}"}}') == 0.0


# Queries whose metrics this scenario never moves: Ray creates a counter series at
# its first increment, so these have no data here (they must still be valid).
NOT_EXERCISED = re.compile(
    r"queue_full|item_errors|slots_returned|call_actor_restarts|lost_actor_calls|double_assignments"
    r"|server_disconnects|duplicate_events|lease_shortfall|events_unroutable|error\|timeout"
)


def test_every_dashboard_query_is_valid_and_has_data(scraped: tuple[Prometheus, dict]) -> None:
    from dashboards.build import queries

    prom, _ = scraped
    # Ray's node gauges come with its reporter (every few seconds): poll a little.
    deadline = time.monotonic() + 20
    while True:
        invalid, empty = [], []
        for q in queries():
            expr = grafana_expr(q["expr"], app=APP)
            body = prom.query(expr)
            if body.get("status") != "success":
                invalid.append((q["panel"], expr, body.get("error")))
            elif not body["data"]["result"] and not NOT_EXERCISED.search(expr):
                empty.append((q["panel"], q["title"], expr))
        if invalid or not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not invalid, invalid
    assert not empty, "\n".join(map(str, empty))
