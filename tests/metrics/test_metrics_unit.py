"""The stats → metrics mapping and the exporter's rules, without Ray or Prometheus."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from relay_actors import metrics as m
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
    assert "ray_relay_offers_total" in set(m.metric_names())


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


class FakeMetric:
    def __init__(self, d: m.MetricDef) -> None:
        self.d = d
        self.calls: list[tuple[float, dict[str, str]]] = []

    def inc(self, value: float, tags: dict[str, str]) -> None:
        assert value > 0
        assert set(tags) == set(self.d.tag_keys)
        self.calls.append((value, tags))

    def set(self, value: float, tags: dict[str, str]) -> None:
        assert set(tags) == set(self.d.tag_keys)
        self.calls.append((value, tags))


def test_exporter_counts_deltas_never_negative_and_zeroes_vanished_gauges() -> None:
    made: dict[str, FakeMetric] = {}

    def make(d: m.MetricDef) -> FakeMetric:
        made[d.name] = FakeMetric(d)
        return made[d.name]

    ex = mx.RayExporter("call_actor", {"app": "a", "actor": "3"}, make)
    ex.record(
        {
            "offers": 5,
            "handler_errors": 1,
            "batchers": {0: {"sends": 1, "items": 1, "largest": 1, "queued": 2}},
        }
    )
    ex.record({"offers": 8, "handler_errors": 1, "batchers": {}})
    ex.record({"offers": 2, "handler_errors": 1})  # restarted from zero
    offers = [v for v, _ in made["relay_call_actor_offers"].calls]
    assert offers == [5, 3, 2]
    assert [v for v, _ in made["relay_handlers"].calls] == [1]
    tags = made["relay_call_actor_offers"].calls[0][1]
    assert tags == {"app": "a", "component": "call_actor", "shard": "", "actor": "3", "outcome": "accepted"}
    assert [v for v, _ in made["relay_batch_queued"].calls] == [2, 0]  # the link went away


def test_export_is_a_no_op_outside_a_ray_actor() -> None:
    async def stats() -> dict[str, Any]:
        return {}

    assert mx.export_actor_stats("router", stats, {"app": "a"}) is None  # no running loop

    async def inside_loop() -> None:
        assert mx.export_actor_stats("router", stats, {"app": "a"}) is None  # not in a Ray actor

    asyncio.run(inside_loop())


async def test_export_loop_survives_a_failing_stats(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def stats() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("boom")
        return {"offers": calls}

    ex = mx.RayExporter("call_actor", {"app": "a"}, FakeMetric)
    task = asyncio.ensure_future(mx._export_loop(ex, stats, 0.01))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert calls > 3
    assert sum("failed" in r.message for r in caplog.records) == 1  # logged once, not every round


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
