"""The documentation site: ``mkdocs build --strict`` builds it, and a real headless Chromium (the
Debian ``chromium`` package) renders its pages and finds ``play_and_collect`` with Material's own search.

The site is served from the build directory by a small HTTP server on 127.0.0.1 (Material's search
runs in a Web Worker, which a ``file://`` page may not start). ``chromium --dump-dom`` prints the DOM
once the page's JavaScript has run for a budget of virtual time; the search worker works in real
time, so the search page gets one extra script from the server that keeps a request to it open until
results appear (virtual time does not advance while a request is pending).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian package 'chromium'; .ci/setup installs it)"
)
PLAY_AND_COLLECT = "relay_actors.verbs.collect.CollectVerbs.play_and_collect"

# Keeps the page's virtual time from running out while Material's search worker indexes the site.
KEEP_ALIVE = b"""<script>
(async () => {
  const deadline = Date.now() + 20000;
  while (!document.querySelector(".md-search-result__item") && Date.now() < deadline) {
    await fetch("/__wait__");
  }
})();
</script></body>"""


@pytest.fixture(scope="module")
def site() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="relay-docs-") as tmp:
        out = Path(tmp) / "site"
        env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
        build = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stderr[-4000:]}"
        yield out


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/__wait__"):
            # Not a synchronisation: the page's pending request is what holds its virtual time
            # while the search worker runs (the page stops asking once results show).
            time.sleep(0.2)
            self.send_response(204)
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        if path.endswith(".html") and "q=" in query:
            body = (Path(self.directory) / path.lstrip("/")).read_bytes().replace(b"</body>", KEEP_ALIVE)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


@pytest.fixture(scope="module")
def base_url(site: Path) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def dump_dom(url: str) -> str:
    """The page's DOM after its JavaScript ran, as headless Chromium saw it."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="relay-docs-chromium-") as profile:
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",  # tests run as root in CI
                "--disable-gpu",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=20000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@needs_chromium
def test_getting_started_renders(base_url: str) -> None:
    dom = dump_dom(f"{base_url}/getting-started.html")
    assert re.search(r"<h1[^>]*>Getting started", dom)
    # The steps' commands, rendered as code.
    for command in ("relay-actors demo", "relay-actors run hello:client --ray", "bash .ci/setup"):
        assert command in re.sub(r"<[^>]+>", "", dom), command
    # Material's JavaScript ran: it adds a copy button to every code block (none in the built HTML).
    assert 'data-md-type="copy"' in dom
    # The navigation leads to every part of the site.
    for section in ("Concepts", "How-to guides", "Reference"):
        assert section in dom


@needs_chromium
def test_api_reference_renders(base_url: str) -> None:
    call = dump_dom(f"{base_url}/reference/api/call.html")
    assert f'id="{PLAY_AND_COLLECT}"' in call
    text = re.sub(r"<[^>]+>", "", call)
    assert "Play a prompt and collect digits or speech" in text  # the method's docstring
    client = dump_dom(f"{base_url}/reference/api/client.html")
    assert 'id="relay_actors.RelayClient"' in client
    assert "SIGNALWIRE_PROJECT_ID" in re.sub(r"<[^>]+>", "", client)  # its Args, from the docstring


@needs_chromium
def test_search_finds_play_and_collect(base_url: str) -> None:
    dom = dump_dom(f"{base_url}/index.html?q=play_and_collect")
    hits = re.findall(r'<a href="([^"]+)" class="md-search-result__link"', dom)
    assert hits, "Material's search showed no result for play_and_collect"
    assert any(
        h.split("?")[0].endswith("/reference/api/call.html") and h.endswith(f"#{PLAY_AND_COLLECT}")
        for h in hits
    ), hits


def test_site_works_offline(site: Path) -> None:
    """Every page's scripts, styles and pictures come from the site itself (no CDN, no web font),
    and the two pictures are committed SVGs."""
    pages = list(site.rglob("*.html"))
    assert len(pages) > 20
    for page in pages:
        html = page.read_text()
        external = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?://[^"]+)"', html)
        assert not [u for u in external if "127.0.0.1" not in u], (page, external)
    architecture = (site / "assets" / "architecture.svg").read_text()
    assert architecture.startswith("<svg")
    for piece in ("connection actor", "router", "CallActor", "the link", "lease ledger"):
        assert piece in architecture, piece
    dashboard = (site / "assets" / "dashboard.svg").read_text()
    assert dashboard.startswith("<svg") and dashboard.count("<polyline") > 20  # series drawn from data
    assert "assets/architecture.svg" in (site / "concepts" / "architecture.html").read_text()
    assert "assets/dashboard.svg" in (site / "how-to" / "metrics.html").read_text()


def test_generated_reference_pages(site: Path) -> None:
    """The CLI page comes from the parsers, the metrics page from relay_actors.metrics.METRICS."""
    from relay_actors.metrics import METRICS

    cli = (site / "reference" / "cli.html").read_text()
    for command in ("emulator", "load", "demo", "run", "status", "stop"):
        assert f"usage: relay-actors {command}" in cli, command
    assert "--metrics-port" in cli and "--drain-timeout" in cli
    metrics = (site / "reference" / "metrics.html").read_text()
    missing = [d.name for d in METRICS.values() if d.name not in metrics]
    assert not missing
