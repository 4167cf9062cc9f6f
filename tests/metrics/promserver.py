"""A real Prometheus (the Debian package) for tests: start, query, stop."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from free_ports import free_port

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "cluster" / "prometheus" / "relay_rules.yml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
MISSING = "the prometheus binary is not installed (CI installs it: .ci/setup, Debian package 'prometheus')"


class Prometheus:
    """Prometheus on 127.0.0.1 scraping every second, with the project's recording rules.

    ``static``: ``host:port`` targets (job ``relay``: the apps' metrics endpoints);
    ``file_sd``: a service discovery file (job ``ray``: Ray's metrics agents).
    """

    def __init__(self, workdir: Path, *, file_sd: str | None = None, static: list[str] | None = None) -> None:
        assert PROMETHEUS is not None, MISSING
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        timing = {"scrape_interval": "1s", "scrape_timeout": "1s"}
        scrapes: list[dict[str, Any]] = []
        if static:
            scrapes.append({"job_name": "relay", **timing, "static_configs": [{"targets": static}]})
        if file_sd:
            sd = [{"files": [file_sd], "refresh_interval": "1s"}]
            scrapes.append({"job_name": "ray", **timing, "file_sd_configs": sd})
        workdir.mkdir(parents=True, exist_ok=True)
        # The project's rules, evaluated every second here.
        rules = yaml.safe_load(RULES.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        (workdir / "rules.yml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(workdir / "rules.yml")],
            "scrape_configs": scrapes,
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "wb")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Prometheus:
        self.proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("prometheus did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET an API path; returns the decoded body (errors too: 400/422 carry JSON)."""
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("/api/v1/query", query=expr)

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it has no data."""
        body = self.query(expr)
        assert body["status"] == "success", (expr, body)
        result = body["data"]["result"]
        if not result:
            return None
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def wait_value(self, expr: str, want: float, timeout: float = 30.0) -> float | None:
        """Poll until ``expr`` equals ``want``; returns the last value seen."""
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.value(expr)
            if got == want:
                return got
            time.sleep(0.5)
        return got


def grafana_expr(expr: str, app: str = ".*", rate_interval: str = "30s") -> str:
    """A dashboard query as Grafana sends it: variables replaced."""
    return expr.replace("$__rate_interval", rate_interval).replace("$app", app)
