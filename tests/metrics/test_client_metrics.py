"""The in-process client's metrics: served on a port by ``serve_client_metrics``, scraped.

Over the limit: 5 calls offered to a client with ``max_active_calls=3`` whose
handlers wait, so 3 are admitted and 2 dropped; one handler raises. The
``/metrics`` text is parsed, then a real Prometheus scrapes the same port and
every dashboard query is run against it.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay_actors import Call, RelayClient
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS, wait_until
from relay_actors.metrics import serve_client_metrics

from .promserver import MISSING, PROMETHEUS, Prometheus, grafana_expr

pytestmark = pytest.mark.timeout(90)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if v))
            out[(s.name, labels)] = s.value
    return out


@pytest.fixture
async def loaded_client() -> AsyncIterator[tuple[RelayClient, asyncio.Event]]:
    release = asyncio.Event()
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS) as emu:
        client = RelayClient(
            project=emu.project,
            token=emu.token,
            host=emu.host,
            scheme="ws",
            contexts=["office"],
            max_active_calls=3,
        )
        seen = 0

        @client.on_call
        async def handle(call: Call) -> None:
            nonlocal seen
            seen += 1
            mine = seen
            await release.wait()
            await call.hangup()
            if mine == 1:
                raise RuntimeError("a handler bug")

        await client.connect()
        emu.core.inject_calls("office", 5)
        await wait_until(lambda: client.stats().get("offers", 0) >= 5, timeout=10)
        try:
            yield client, release
        finally:
            release.set()
            await client.disconnect()


def _labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"app": "inproc", "component": "client", **kw}.items()))


async def test_client_metrics_served_and_scraped(loaded_client: tuple[RelayClient, asyncio.Event]) -> None:
    client, release = loaded_client
    server, port = serve_client_metrics(client, 0, app="inproc")
    try:
        m = await asyncio.to_thread(scrape, port)
        assert m[("relay_offers_total", _labels(outcome="received"))] == 5
        assert m[("relay_offers_total", _labels(outcome="admitted"))] == 3
        assert m[("relay_offers_total", _labels(outcome="dropped"))] == 2
        assert m[("relay_active_calls", _labels())] == 3
        assert m[("relay_call_budget", _labels())] == 3
        assert m[("relay_connected", _labels())] == 1
        assert m[("relay_events_total", _labels(event_type="calling.call.receive"))] == 5
        assert not any(name == "relay_stat" for name, _ in m), "a stats key without a metric"
        release.set()
        await wait_until(lambda: client.stats().get("handler_errors", 0) == 1, timeout=5)
        await wait_until(lambda: client.stats()["active_calls"] == 0, timeout=5)
        m = await asyncio.to_thread(scrape, port)
        assert m[("relay_handlers_total", _labels(outcome="error"))] == 1
        assert m[("relay_active_calls", _labels())] == 0
    finally:
        server.shutdown()


@pytest.mark.skipif(PROMETHEUS is None, reason=MISSING)
async def test_dashboards_work_for_the_in_process_client(
    loaded_client: tuple[RelayClient, asyncio.Event], tmp_path: Any
) -> None:
    """The client's series (the same names as an app's endpoint on Ray) fill the
    dashboards' connection panels."""
    from dashboards.build import queries

    client, _ = loaded_client
    server, port = serve_client_metrics(client, 0, app="inproc")
    prom = Prometheus(tmp_path / "prom", static=[f"127.0.0.1:{port}"])
    try:
        await asyncio.to_thread(prom.start)
        got = await asyncio.to_thread(
            prom.wait_value, 'sum(relay_offers_total{app="inproc",outcome="admitted"})', 3, 20
        )
        assert got == 3
        # Active calls vs limit, offers, events, requests, reconnects: the client's panels
        # (rate() needs a few scrapes: polled).
        client_panels = (2, 3, 11, 12, 13)
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            results: dict[int, list[bool]] = {}
            for q in queries():
                body = await asyncio.to_thread(prom.query, grafana_expr(q["expr"], app="inproc"))
                assert body.get("status") == "success", (q, body)
                results.setdefault(q["panel"], []).append(bool(body["data"]["result"]))
            empty = [panel for panel in client_panels if not any(results[panel])]
            if not empty or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
        assert not empty, f"panels {empty} have no data for the in-process client"
        ratio = await asyncio.to_thread(prom.wait_value, 'relay:active_calls:ratio{app="inproc"}', 1.0, 10)
        assert ratio == 1.0  # 3 of 3
    finally:
        await asyncio.to_thread(prom.stop)
        server.shutdown()
