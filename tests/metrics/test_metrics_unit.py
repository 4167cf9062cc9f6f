"""The stats → metrics mapping, the endpoint's series rules and its server, without Ray or Prometheus."""

from __future__ import annotations

import asyncio
import pathlib
import re
from typing import Any

import pytest

from relay_actors import metrics as m
from relay_actors.errors import ArgumentError
from relay_actors.ray_runtime import RayOptions
from relay_actors.ray_runtime import metrics_export as mx


def samples(component: str, stats: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, s.tags): s.value for s in m.flatten(component, stats)}


def test_metric_list_is_fixed_and_well_named() -> None:
    for name, d in m.METRICS.items():
        assert re.fullmatch(r"relay_[a-z_]+", name), name
        assert d.kind in ("counter", "gauge")
        assert not name.endswith("_total"), "counters are declared without _total"
        tag_keys = {"outcome", "event_type", "code", "peer", "key", "direction", "event"}
        assert d.help and set(d.extra) <= tag_keys
    assert "relay_offers_total" in set(m.metric_names())


def test_connection_actor_stats() -> None:
    got = samples(
        "connection",
        {
            "shard": 0,
            "pid": 123,
            "protocol": "p",
            "active_calls": 3,
            "granted": 10,
            "waiting_offers": 1,
            "placed": {0: 2, 1: 1},
            "batchers": {1: {"sends": 4, "items": 40, "largest": 20, "queued": 0}},
            "offers": 9,
            "offers_admitted": 7,
            "offers_dropped": 1,
            "offers_passed": 1,
            "events_unroutable": 2,
            "conn.connected": True,
            "conn.reconnects": 1,
            "conn.pending": 5,
            "conn.violation.invalid_json": 2,
            "conn.calling.call.receive": 9,
        },
    )
    assert got[("relay_offers", (("outcome", "admitted"),))] == 7
    assert got[("relay_offers", (("outcome", "received"),))] == 9
    assert got[("relay_placed_calls", (("actor", "1"),))] == 1
    assert got[("relay_batch_items", (("peer", "call_actor:1"),))] == 40
    assert got[("relay_connected", ())] == 1
    assert got[("relay_pending_requests", ())] == 5
    assert got[("relay_protocol_violations", (("code", "invalid_json"),))] == 2
    assert got[("relay_events", (("event_type", "calling.call.receive"),))] == 9
    assert not any(name == "relay_stat" for name, _ in got), "identity fields are not metrics"


def test_router_and_call_actor_stats() -> None:
    router = samples(
        "router",
        {
            "calls": 4,
            "leased": 20,
            "budget": 100,
            "grants": {0: 12, 1: 8},
            "actors": 2,
            "loads": {0: 3, 1: 1},
            "call_actor_restarts": 1,
        },
    )
    assert router[("relay_active_calls", ())] == 4
    assert router[("relay_slots_granted", (("shard", "1"),))] == 8
    assert router[("relay_call_actor_load", (("actor", "0"),))] == 3
    assert router[("relay_call_actor_restarts", ())] == 1
    actor = samples(
        "call_actor",
        {
            "index": 1,
            "incarnation": "x",
            "calls": 2,
            "offers": 5,
            "offers_refused": 1,
            "handlers_completed": 3,
            "handler_errors": 1,
            "handler_timeouts": 1,
            "batchers": {0: {"sends": 2, "items": 6, "largest": 4, "queued": 0}},
            "mystery": 7,
        },
    )
    assert actor[("relay_active_calls", ())] == 2
    assert actor[("relay_call_actor_offers", (("outcome", "refused"),))] == 1
    assert actor[("relay_handlers", (("outcome", "timeout"),))] == 1
    assert actor[("relay_batch_sends", (("peer", "connection:0"),))] == 2
    assert actor[("relay_stat", (("key", "mystery"),))] == 7


def test_client_admitted_is_derived() -> None:
    got = samples("client", {"offers": 10, "offers_dropped": 2, "offers_passed": 1, "offers_invalid": 1})
    assert got[("relay_offers", (("outcome", "admitted"),))] == 6


def test_wire_derived_tags_are_capped() -> None:
    stats = {f"conn.ev.type{i}": 1 for i in range(m.MAX_DYNAMIC_VALUES + 10)}
    got = samples("connection", stats)
    types = {dict(tags)["event_type"] for name, tags in got if name == "relay_events"}
    assert len(types) == m.MAX_DYNAMIC_VALUES + 1 and m.OTHER in types
    assert got[("relay_events", (("event_type", m.OTHER),))] == 10


def _series(book: m.AppSeries) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for name, labels, value in book.series():
        out[(name, tuple(sorted((k, v) for k, v in labels.items() if v)))] = value
    return out


def _actor(stats: dict[str, Any], incarnation: str = "a", actor: str = "3") -> m.Report:
    return m.Report("call_actor", {"incarnation": incarnation, **stats}, actor=actor, node="10.0.0.7")


def test_app_series_labels_every_series_with_its_component() -> None:
    book = m.AppSeries("shop", stale_after=5)
    book.update(
        0,
        [
            m.Report("router", {"calls": 2, "pid": 1}),
            m.Report("connection", {"offers": 4, "pid": 2}, shard="0", node="10.0.0.5"),
            _actor({"offers": 5}),
        ],
    )
    got = _series(book)
    assert got[("relay_active_calls", (("app", "shop"), ("component", "router")))] == 2
    conn = (("app", "shop"), ("component", "connection"), ("node", "10.0.0.5"), ("outcome", "received"))
    assert got[("relay_offers", (*conn[:3], conn[3], ("shard", "0")))] == 4
    labels = (("actor", "3"), ("app", "shop"), ("component", "call_actor"), ("node", "10.0.0.7"))
    assert got[("relay_call_actor_offers", (*labels, ("outcome", "accepted")))] == 5
    for name, labels_, _ in book.series():
        assert set(labels_) == set(m.METRICS[name].tag_keys) and set(labels_) <= m.LABELS


def test_app_series_counters_never_go_down() -> None:
    """A restart (new incarnation) and a count that drops in place (a link rebuilt) both
    carry the earlier count on; gauges are the value now."""
    book = m.AppSeries("a", stale_after=5)
    key = ("relay_call_actor_offers", (("actor", "3"), ("app", "a"), ("component", "call_actor"),
                                       ("node", "10.0.0.7"), ("outcome", "accepted")))  # fmt: skip
    calls = ("relay_active_calls", key[1][:4])
    book.update(0, [_actor({"offers": 5, "calls": 4})])
    assert _series(book)[key] == 5
    book.update(1, [_actor({"offers": 8, "calls": 1})])
    assert _series(book)[key] == 8
    book.update(2, [_actor({"offers": 2, "calls": 2}, incarnation="b")])  # restarted: counts from 0
    assert _series(book)[key] == 10 and _series(book)[calls] == 2
    book.update(3, [_actor({"offers": 9}, incarnation="b")])  # more than before the restart
    assert _series(book)[key] == 17
    book.update(4, [_actor({"offers": 1}, incarnation="b")])  # dropped in place: a reset
    assert _series(book)[key] == 18
    # A restart that already counted past the old count is still seen (by incarnation).
    book.update(5, [_actor({"offers": 30}, incarnation="c")])
    assert _series(book)[key] == 1 + 17 + 30
    # After a restart, series the new process has not counted yet stay at what they were.
    book.update(6, [_actor({}, incarnation="d")])
    assert _series(book)[key] == 48
    book.update(7, [_actor({"offers": 2}, incarnation="d")])
    assert _series(book)[key] == 50


def test_app_series_forgets_components_that_left_and_hides_silent_ones() -> None:
    book = m.AppSeries("a", stale_after=5)
    book.update(0, [_actor({"offers": 5}), _actor({"offers": 1}, actor="4")])
    assert {dict(k[1]).get("actor") for k in _series(book)} == {"3", "4"}
    # CallActor 4 does not answer: its last series stay for stale_after, then go.
    silent = m.Report("call_actor", None, actor="4")
    book.update(3, [_actor({"offers": 6}), silent])
    assert {dict(k[1]).get("actor") for k in _series(book)} == {"3", "4"}
    book.update(6, [_actor({"offers": 7}), silent])
    assert {dict(k[1]).get("actor") for k in _series(book)} == {"3"}
    # Back (restarted): its counters go on from where they were.
    book.update(7, [_actor({"offers": 2}, incarnation="z", actor="4"), _actor({"offers": 7})])
    got = _series(book).items()
    back = [v for (n, lab), v in got if n == "relay_call_actor_offers" and ("actor", "4") in lab]
    assert back == [3]
    # Removed from the app: forgotten at once.
    book.update(8, [_actor({"offers": 7})])
    assert {dict(k[1]).get("actor") for k in _series(book)} == {"3"}
    assert set(book.sources) == {("call_actor", "", "3")}


def test_families_render_counters_with_total_and_every_label() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    book = m.AppSeries("a", stale_after=5)
    book.update(0, [_actor({"offers": 5, "calls": 1})])
    registry = CollectorRegistry(auto_describe=False)
    families = m.families(book.series())
    registry.register(m.SeriesCollector(lambda: families))
    text = generate_latest(registry).decode()
    assert (
        'relay_call_actor_offers_total{actor="3",app="a",component="call_actor",node="10.0.0.7",'
        'outcome="accepted",shard=""} 5.0'
    ) in text
    assert "WorkerId" not in text and "otel" not in text


def test_metrics_port_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAY_METRICS_PORT", raising=False)
    monkeypatch.delenv("RELAY_METRICS_HOST", raising=False)
    assert m.resolve_metrics_config()["port"] == m.DEFAULT_METRICS_PORT == 9478
    assert m.resolve_metrics_config()["host"] is None  # the router node's address
    assert m.resolve_metrics_config(0)["port"] == 0
    assert m.resolve_metrics_config(-1)["port"] is None
    monkeypatch.setenv("RELAY_METRICS_PORT", "9600")
    monkeypatch.setenv("RELAY_METRICS_HOST", "10.0.0.5")
    assert m.resolve_metrics_config() == {"port": 9600, "host": "10.0.0.5", "interval": m.DEFAULT_INTERVAL}
    assert m.resolve_metrics_config(9700, "127.0.0.1")["port"] == 9700  # the option wins
    monkeypatch.setenv("RELAY_METRICS_PORT", "off")
    assert m.resolve_metrics_config()["port"] is None
    monkeypatch.setenv("RELAY_METRICS_PORT", "nine")
    with pytest.raises(ArgumentError, match="RELAY_METRICS_PORT"):
        m.resolve_metrics_config()
    with pytest.raises(ArgumentError, match="metrics_port"):
        RayOptions(app="x", metrics_port=70000)


async def test_app_metrics_polls_serves_and_reports_a_busy_port() -> None:
    """The router's endpoint without Ray: sources are plain coroutines; one that hangs
    is cut off by the timeout and does not hold the others up."""
    import socket
    import urllib.request

    async def fast() -> dict[str, Any]:
        return {"offers": 3, "incarnation": "i", "node_id": ""}

    async def hangs() -> dict[str, Any]:
        await asyncio.sleep(60)
        return {}

    def sources() -> list[Any]:
        return [("call_actor", "", "0", fast), ("call_actor", "", "1", hangs)]

    config = mx.MetricsConfig(port=0, host="127.0.0.1", interval=0.5)
    am = mx.AppMetrics("x", config, sources)
    am.start()
    try:
        assert am.url is not None and am.info()["metrics_error"] is None
        t = asyncio.get_running_loop().time()
        await am.poll()
        assert asyncio.get_running_loop().time() - t < 2.0
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(am.url, timeout=5).read().decode())
        assert 'relay_call_actor_offers_total{actor="0",app="x"' in text
        assert 'actor="1"' not in text
        # A second endpoint on the same port: reported, not raised.
        port = int(am.url.rsplit(":", 1)[1].split("/")[0])
        busy = mx.AppMetrics("y", mx.MetricsConfig(port=port, host="127.0.0.1"), sources)
        busy.start()
        assert busy.url is None and "cannot listen on 127.0.0.1" in (busy.info()["metrics_error"] or "")
    finally:
        am.close()
    with socket.socket() as s:  # closed: the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_client_collector_retries_a_racing_read() -> None:
    class Racy:
        n = 0

        def stats(self) -> dict[str, Any]:
            self.n += 1
            if self.n == 1:
                raise RuntimeError("dictionary changed size during iteration")
            return {"offers": 1, "active_calls": 1}

    families = {f.name: f for f in m.ClientCollector(Racy(), app="x", prefix="ray_").collect()}
    assert families["ray_relay_offers"].samples[0].value == 1  # family name without _total
    assert "ray_relay_active_calls" in families


def test_link_stats_become_per_peer_link_metrics() -> None:
    got = samples(
        "connection",
        {
            "loop_lag": 0.25,
            "unavailable_call_actors": 1,
            "requests_fenced": 2,
            "links": {
                1: {
                    "frames_out": 10,
                    "frames_in": 4,
                    "bytes_out": 1000,
                    "bytes_in": 400,
                    "resent": 2,
                    "duplicates": 0,
                    "window": 3,
                    "pending": 5,
                    "ack_latency_sum": 0.5,
                    "ack_latency_count": 8,
                    "connected": True,
                    "peer_lag_ms": 1500,
                },
                "_process": {"links_authenticated": 3, "link_refused": 7},
            },
        },
    )
    peer = (("peer", "call_actor:1"),)
    assert got[("relay_link_frames", (("direction", "out"), *peer))] == 10
    assert got[("relay_link_bytes", (("direction", "in"), *peer))] == 400
    assert got[("relay_link_window", peer)] == 3
    assert got[("relay_link_pending", peer)] == 5
    assert got[("relay_link_ack_latency_seconds_count", peer)] == 8
    assert got[("relay_link_connected", peer)] == 1
    assert got[("relay_link_peer_lag_seconds", peer)] == 1.5
    assert got[("relay_link_events", (("event", "refused"),))] == 7
    assert got[("relay_link_events", (("event", "authenticated"),))] == 3
    assert got[("relay_loop_lag_seconds", ())] == 0.25
    assert got[("relay_call_actors_unavailable", ())] == 1
    assert got[("relay_requests_fenced", ())] == 2
    assert not any(name == "relay_stat" for name, _ in got)


def test_every_counter_the_actors_keep_is_a_named_series() -> None:
    """A counter added to an actor without a metric would surface only as the catch-all
    ``relay_stat{key}``: every ``counters["…"]`` in the actors' code maps to a named series."""
    root = pathlib.Path(m.__file__).parent
    sources = {
        "connection": [
            "ray_runtime/connection_actor.py",
            "ray_runtime/shard_core.py",
            "ray_runtime/shard_recovery.py",
            "ray_runtime/shard_requests.py",
        ],
        "router": ["ray_runtime/router.py", "ray_runtime/pool_core.py"],
        "call_actor": ["ray_runtime/call_actor.py", "ray_runtime/call_actor_core.py", "call_host.py"],
    }
    for component, files in sources.items():
        keys = {
            key for name in files for key in re.findall(r'counters\["(\w+)"\]', (root / name).read_text())
        }
        assert len(keys) > 3, component  # the sources really were read
        unnamed = [
            dict(s.tags)["key"]
            for s in m.flatten(component, dict.fromkeys(keys, 1))
            if s.name == "relay_stat"
        ]
        assert unnamed == [], component
