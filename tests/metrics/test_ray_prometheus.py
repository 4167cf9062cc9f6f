"""Ray apps' metrics endpoints, scraped by a real Prometheus.

The Ray scenario runs in its own process (``ray_scenario.py``: pytest may hold
another Ray for ``tests/ray``): two apps on one local Ray, the first on the
documented default metrics port, the second on a port of its own. Prometheus
scrapes both endpoints (job ``relay``) and Ray's metrics agents through Ray's
service discovery file (job ``ray``: the dashboards' "Ray resources" row). The
tests check the endpoints, the labels, the values, the rules and every dashboard
query, then change the apps (a CallActor restarted, one killed, the second app
stopped) and check what the endpoints and Prometheus show. They run in file order.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay_actors.app_commands import render_status
from relay_actors.metrics import DEFAULT_METRICS_PORT, LABELS

from .promserver import MISSING, PROMETHEUS, REPO, Prometheus, free_port, grafana_expr

pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None, reason=MISSING),
    pytest.mark.timeout(300),
]

SCENARIO = Path(__file__).with_name("ray_scenario.py")
APP = "metricsapp"
OTHER = "metricsother"
CALLS = 12
OTHER_CALLS = 4
BUDGET = 50
#: Labels Prometheus adds to every scraped series.
PROM_LABELS = {"__name__", "job", "instance"}


class Scenario:
    """The scenario's process: READY once up, then one ``DONE`` line per command."""

    def __init__(self, tmp: Path, other_port: int) -> None:
        self.tmp = tmp
        # Short: Ray's unix socket paths under it must stay within 107 bytes.
        self.ray_dir = Path(tempfile.mkdtemp(prefix="relaym-", dir="/tmp"))
        self.stderr = open(tmp / "scenario.err", "wb")
        env = {**os.environ, "RELAY_METRICS_INTERVAL": "0.5"}
        env.pop("RAY_ADDRESS", None)
        # The first app takes the documented default port: nothing may override it here.
        env.pop("RELAY_METRICS_PORT", None)
        env.pop("RELAY_METRICS_HOST", None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SCENARIO),
                "--temp-dir",
                str(self.ray_dir),
                "--app",
                APP,
                "--other-app",
                OTHER,
                "--other-port",
                str(other_port),
                "--calls",
                str(CALLS),
                "--other-calls",
                str(OTHER_CALLS),
                "--budget",
                str(BUDGET),
                "--hold",
                "280",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            start_new_session=True,
        )
        self.lines: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(maxsize=100)
        threading.Thread(target=self._read, daemon=True).start()
        self.started = time.monotonic()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind, _, body = line.decode(errors="replace").partition(" ")
            if kind in ("READY", "DONE"):
                self.lines.put((kind, json.loads(body)))

    def _next(self, kind: str, timeout: float) -> dict[str, Any]:
        try:
            got, body = self.lines.get(timeout=timeout)
        except queue.Empty:
            err = (self.tmp / "scenario.err").read_text(errors="replace")[-3000:]
            raise AssertionError(f"no {kind} line from the Ray scenario in {timeout}s:\n{err}") from None
        assert got == kind, (got, body)
        return body

    def wait_ready(self, timeout: float = 150.0) -> dict[str, Any]:
        report = self._next("READY", timeout)
        report["ready_after"] = time.monotonic() - self.started
        return report

    def command(self, line: str, timeout: float = 90.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        done = self._next("DONE", timeout)
        assert "error" not in done, done
        return done

    def stop(self) -> None:
        """Let the scenario stop its apps and Ray; then end whatever of its session is left."""
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


Scraped = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Scraped:
    """Every sample an endpoint serves now: (name, labels with a value) → value."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out: Scraped = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if v)))] = s.value
    return out


def poll(check: Any, timeout: float, what: str) -> Any:
    """Call ``check()`` until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


class Env:
    def __init__(self, prom: Prometheus, scenario: Scenario, report: dict[str, Any], other_port: int) -> None:
        self.prom = prom
        self.scenario = scenario
        self.report = report
        self.url = f"http://127.0.0.1:{DEFAULT_METRICS_PORT}/metrics"
        self.other_url = f"http://127.0.0.1:{other_port}/metrics"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("ray_metrics")
    other_port = free_port()
    scenario = Scenario(tmp, other_port)
    prom = None
    try:
        # Prometheus starts while the scenario does (its targets are down until the apps
        # serve; Ray writes the discovery file it watches when Ray starts).
        sd = scenario.ray_dir / "prom_metrics_service_discovery.json"
        targets = [f"127.0.0.1:{DEFAULT_METRICS_PORT}", f"127.0.0.1:{other_port}"]
        prom = Prometheus(tmp / "prom", static=targets, file_sd=str(sd)).start()
        report = scenario.wait_ready()
        assert sd.exists(), f"Ray wrote no service discovery file in {scenario.ray_dir}"
        t = time.monotonic()
        got = prom.wait_value(f'sum(relay_offers_total{{app="{APP}",outcome="admitted"}})', CALLS, 30)
        report["scraped_after"] = time.monotonic() - t
        assert got == CALLS, f"admitted offers in Prometheus: {got}, injected {CALLS}"
        print(
            f"\nscenario ready after {report['ready_after']:.1f}s {report['timings']}, "
            f"metrics in Prometheus {report['scraped_after']:.1f}s after that"
        )
        yield Env(prom, scenario, report, other_port)
    finally:
        if prom is not None:
            prom.stop()
        scenario.stop()


def test_the_documented_port_serves_the_app(env: Env) -> None:
    assert DEFAULT_METRICS_PORT == 9478
    for doc in ("README.md", "cluster/README.md"):
        assert "9478" in (REPO / doc).read_text(), f"{doc} does not give the default metrics port"
    assert env.report["metrics"] == {"metrics_url": env.url, "metrics_error": None}
    # `relay-actors status APP` says where it is.
    assert env.report["status"]["metrics_url"] == env.url
    assert f"\nmetrics {env.url}" in render_status(env.report["status"])
    m = scrape(env.url)
    labels = {"app": APP, "component": "connection", "shard": "0", "node": "127.0.0.1", "outcome": "received"}
    assert m[("relay_offers_total", tuple(sorted(labels.items())))] == CALLS
    components = {dict(labels).get("component") for _, labels in m}
    assert components == {"router", "connection", "call_actor"}
    # Ray's agent exports no relay series any more: one place, one copy.
    ray_series = env.prom.query('count({job="ray", __name__=~"(ray_)?relay_.+"})')["data"]["result"]
    assert not ray_series


def test_the_endpoint_is_on_loopback_only(env: Env) -> None:
    """A local Ray's node address is 127.0.0.1: the endpoint listens there, not on a
    wildcard address (read from this host's socket table: no connection made)."""
    import psutil

    listening = {
        c.laddr.ip
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == DEFAULT_METRICS_PORT
    }
    assert listening == {"127.0.0.1"}


def test_targets_are_up(env: Env) -> None:
    want = {f"127.0.0.1:{DEFAULT_METRICS_PORT}": "up", env.other_url.split("/")[2]: "up"}

    def relay_targets() -> dict[str, str]:
        targets = env.prom.api("/api/v1/targets")["data"]["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in targets if t["labels"]["job"] == "relay"}

    poll(lambda: relay_targets() == want, 10, f"targets {want}")


def test_every_series_has_only_the_allowed_labels(env: Env) -> None:
    for url in (env.url, env.other_url):
        for name, labels in scrape(url):
            assert {k for k, _ in labels} <= LABELS, (name, labels)
    result = env.prom.query('{job="relay"}')["data"]["result"]
    assert len(result) > 50
    for r in result:
        extra = set(r["metric"]) - LABELS - PROM_LABELS
        assert not extra, (r["metric"], extra)
    assert LABELS == {
        "app", "component", "shard", "actor", "node",
        "outcome", "event_type", "code", "peer", "key", "direction", "event",
    }  # fmt: skip


def test_apps_do_not_see_each_other(env: Env) -> None:
    assert {dict(labels)["app"] for _, labels in scrape(env.url)} == {APP}
    other = scrape(env.other_url)
    assert {dict(labels)["app"] for _, labels in other} == {OTHER}
    received = [v for (name, labels), v in other.items() if name == "relay_offers_total" and
                ("outcome", "received") in labels]  # fmt: skip
    assert received == [OTHER_CALLS]
    want = {(env.url.split("/")[2], APP), (env.other_url.split("/")[2], OTHER)}

    seen: list[set[tuple[str, str]]] = []

    def apps_by_instance_as_wanted() -> bool:
        by_instance = env.prom.query('count by (instance, app) ({job="relay",app!=""})')["data"]["result"]
        seen.append({(r["metric"]["instance"], r["metric"]["app"]) for r in by_instance})
        return seen[-1] == want

    # Each endpoint as Prometheus stored it once it has scraped both (every 1 s; the
    # target's health can be "up" a moment before its first samples are queryable).
    try:
        poll(apps_by_instance_as_wanted, 10, f"apps by instance {want}")
    except AssertionError:
        assert seen[-1] == want  # (shows what Prometheus had)


def test_key_metrics_have_the_values_of_the_scenario(env: Env) -> None:
    prom = env.prom
    a = f'app="{APP}"'

    def v(expr: str) -> float | None:
        return prom.value(expr)

    assert v(f'sum(relay_offers_total{{{a},outcome="received"}})') == CALLS
    assert v(f'sum(relay_offers_total{{{a},outcome=~"dropped|passed|no_capacity"}})') is None
    assert v(f'sum(relay_events_total{{{a},event_type="calling.call.receive"}})') == CALLS
    assert prom.wait_value(f'sum(relay_handlers_total{{{a},outcome="completed"}})', CALLS, 10) == CALLS
    assert v(f'sum(relay_call_actor_offers_total{{{a},outcome="accepted"}})') == CALLS
    assert v(f"sum(relay_calls_ended_total{{{a}}})") == CALLS
    # Both CallActors took calls, and the per-actor series carry the actor label.
    per_actor = prom.query(f"sum by (actor) (relay_call_actor_offers_total{{{a}}})")["data"]["result"]
    assert sorted(r["metric"]["actor"] for r in per_actor) == ["0", "1"]
    # Gauges: the budget, the pool, nothing in progress once every handler returned.
    assert v(f'max(relay_call_budget{{{a},component="router"}})') == BUDGET
    assert v(f'max(relay_call_actors{{{a},component="router"}})') == 2
    assert prom.wait_value(f'sum(relay_active_calls{{{a},component="router"}})', 0, 10) == 0
    assert prom.wait_value(f'max(relay_connected{{{a},component="connection"}})', 1, 10) == 1
    # Where: every component on this machine's node.
    nodes = prom.query(f"count by (node) ({{job='relay',{a}}})")["data"]["result"]
    assert [r["metric"]["node"] for r in nodes] == ["127.0.0.1"]
    # The violation and the drop the scenario caused. The resume came last, so once the
    # exporter's poll that saw it is scraped, the violation and the reconnect are too (the
    # fixture waited only for the offers, scraped long before).
    assert prom.wait_value(f"sum(relay_resumes_total{{{a}}}) >= bool 1", 1, 15) == 1
    violations = prom.query(f"relay_protocol_violations_total{{{a}}}")["data"]["result"]
    assert violations and all(r["metric"]["code"] for r in violations)
    assert sum(float(r["value"][1]) for r in violations) >= 1
    assert v(f"sum(relay_reconnects_total{{{a}}})") >= 1
    assert v(f"sum(relay_resumes_total{{{a}}})") >= 1
    # Links: every call's offer and events rode in frames, each acknowledged.
    frames = v(f'sum(relay_link_frames_total{{{a},component="connection",direction="out"}})')
    acked = v(f'sum(relay_link_ack_latency_seconds_count_total{{{a},component="connection"}})')
    assert frames is not None and acked is not None and 0 < acked <= frames
    assert v(f'sum(relay_link_events_total{{{a},event="authenticated"}})') >= 2
    assert v(f'max(relay_link_connected{{{a},component="connection"}})') == 1
    # Stats keys with no metric of their own would show here; the scenario's have one each.
    assert v(f"count(relay_stat{{{a}}})") is None
    stats = env.report["stats"]["connections"][0]
    assert v(f"sum(relay_acks_sent_total{{{a}}})") == stats["conn.acks_sent"]


def test_recording_rules_evaluate(env: Env) -> None:
    prom = env.prom
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


# Queries whose metrics this scenario never moves (no series, or only zeros that
# increase() and rate() turn into nothing of note); they must still be valid.
NOT_EXERCISED = re.compile(
    r"queue_full|item_errors|slots_returned|call_actor_restarts|lost_actor_calls|double_assignments"
    r"|server_disconnects|duplicate_events|lease_shortfall|events_unroutable|error\|timeout"
)


def test_every_dashboard_query_is_valid_and_has_data(env: Env) -> None:
    from dashboards.build import queries

    prom = env.prom
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


def _value(m: Scraped, name: str, **labels: str) -> float | None:
    for (n, lab), v in m.items():
        if n == name and set(labels.items()) <= set(lab):
            return v
    return None


def test_counters_stay_monotonic_across_a_call_actor_restart(env: Env) -> None:
    """CallActor 0 restarts (its own counts start from zero): its series go on from
    where they were, never down, and Prometheus sees no counter reset."""
    sel = {"app": APP, "component": "call_actor", "actor": "0"}
    before = scrape(env.url)
    handled = _value(before, "relay_handlers_total", outcome="completed", **sel)
    frames = _value(before, "relay_link_frames_total", direction="in", **sel)
    assert handled and frames, "CallActor 0 handled no call"
    env.scenario.command("restart_actor 0")

    seen: list[float] = []

    def restart_seen() -> bool:
        m = scrape(env.url)
        value = _value(m, "relay_handlers_total", outcome="completed", **sel)
        if value is not None:
            seen.append(value)
        # The same poll that read the router's count of restarts read the new CallActor.
        return bool(_value(m, "relay_call_actor_restarts_total", app=APP, component="router"))

    poll(restart_seen, 30, "the router's restart count at the endpoint")
    after = scrape(env.url)
    assert min(seen) >= handled, (handled, seen)
    assert _value(after, "relay_handlers_total", outcome="completed", **sel) == handled
    assert _value(after, "relay_link_frames_total", direction="in", **sel) >= frames
    resets = f'sum(resets(relay_handlers_total{{app="{APP}",actor="0"}}[5m]))'
    assert env.prom.wait_value(resets, 0.0, 5) == 0.0


def test_a_killed_call_actor_disappears(env: Env) -> None:
    sel = f'app="{APP}",component="call_actor",actor="1"'
    assert env.prom.value(f"count({{{sel}}})"), "CallActor 1 not in Prometheus before the kill"
    env.scenario.command("kill_actor 1")

    def gone() -> bool:
        m = scrape(env.url)
        still = [k for k in m if ("component", "call_actor") in k[1] and ("actor", "1") in k[1]]
        return not still and any(("actor", "0") in k[1] for k in m)

    t = time.monotonic()
    poll(gone, 20, "CallActor 1's series to leave the endpoint")
    took = time.monotonic() - t
    poll(lambda: env.prom.value(f"count({{{sel}}})") is None, 10, "Prometheus to mark them stale")
    print(f"\nkilled CallActor's series gone from the endpoint after {took:.1f}s")
    # The other CallActor is still there.
    assert env.prom.value(f'count({{app="{APP}",component="call_actor",actor="0"}})')


def test_the_endpoint_survives_a_router_restart_on_the_same_port(env: Env) -> None:
    """The router serves the endpoint: its restart (a new process) binds the same port
    again and serves every live component; its counters start again from the actors'
    own counts (a counter reset, as documented)."""
    done = env.scenario.command("restart_router")
    assert done["metrics"] == {"metrics_url": env.url, "metrics_error": None}

    def served() -> Scraped | None:
        try:
            m = scrape(env.url)
        except (urllib.error.URLError, ConnectionError):
            return None
        components = {dict(labels).get("component") for _, labels in m}
        return m if components == {"router", "connection", "call_actor"} else None

    m = poll(served, 20, "the restarted router's endpoint")
    assert _value(m, "relay_offers_total", app=APP, component="connection", outcome="received") == CALLS
    up = f'up{{job="relay",instance="127.0.0.1:{DEFAULT_METRICS_PORT}"}}'
    assert env.prom.wait_value(up, 1.0, 10) == 1.0


def test_a_stopped_app_disappears(env: Env) -> None:
    assert env.prom.value(f'count({{app="{OTHER}"}})'), "the second app not in Prometheus"
    env.scenario.command("stop_other")

    def refused() -> bool:
        try:
            scrape(env.other_url)
        except (urllib.error.URLError, ConnectionError):
            return True
        return False

    poll(refused, 20, "the stopped app's endpoint to close")
    # Stale at once (the scrape fails); recording rules over [1m] windows would lag.
    gone = f'count({{job="relay",app="{OTHER}"}})'
    poll(lambda: env.prom.value(gone) is None, 15, "its series to go stale")
    # The first app's endpoint never had them and still serves its own.
    m = scrape(env.url)
    assert {dict(labels)["app"] for _, labels in m} == {APP}
