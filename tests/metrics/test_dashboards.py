"""The committed dashboard JSON is the generator's output, and it is well formed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dashboards import build
from dashboards.common import Choice, Dashboard, Panel, Row, Target, TracePanel
from relay_actors.metrics import metric_names


def test_committed_json_matches_the_generator() -> None:
    assert build.main(["--check"]) == 0, "run: python -m dashboards.build"


def _all_panels(d: dict) -> list[dict]:
    """Every panel, those inside collapsed rows too."""
    return [q for p in d["panels"] for q in [p, *p.get("panels", [])]]


def _overview() -> dict:
    return json.loads(build.rendered()[build.OUT / "relay-actors-overview.json"])


def test_dashboard_shape() -> None:
    for path, text in build.rendered().items():
        if path.suffix != ".json":
            continue
        d = json.loads(text)
        assert d["uid"] == path.stem
        ids = [p["id"] for p in _all_panels(d)]
        assert len(ids) == len(set(ids))
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert variables["datasource"]["hide"] == 2 and variables["datasource"]["type"] == "datasource"
        for p in _all_panels(d):
            if p["type"] == "row":
                continue
            assert p["targets"] and p["description"]
            if p["type"] == "table":  # the Traces row: ${traces} only
                assert p["datasource"] == {"type": "tempo", "uid": "${traces}"}
                assert "datasource}" not in json.dumps(p)
                continue
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}"
            assert "$traces" not in json.dumps(p) and "${traces}" not in json.dumps(p)
        assert "prometheus" not in json.dumps(variables["app"]).replace('"type": "prometheus"', "")
        assert "traces}" not in json.dumps(variables["app"])


def test_traces_panel_searches_slow_calls_in_the_trace_data_source() -> None:
    d = _overview()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    # Hidden, so a Grafana with Prometheus alone shows nothing of it.
    assert (variables["traces"]["type"], variables["traces"]["query"], variables["traces"]["hide"]) == (
        "datasource",
        "tempo",
        2,
    )
    slow = variables["slow_call"]
    assert slow["type"] == "custom" and slow["current"]["value"] == "400ms"
    assert "400ms" in slow["query"].split(",")

    (row,) = [p for p in d["panels"] if p["type"] == "row" and p["title"] == "Traces"]
    assert row["collapsed"] is True, "no trace query runs until the row is opened"
    (panel,) = row["panels"]
    assert panel["type"] == "table" and panel["datasource"]["uid"] == "${traces}"
    assert panel["options"]["sortBy"] == [{"desc": True, "displayName": "Duration"}]
    (target,) = panel["targets"]
    assert target["datasource"] == {"type": "tempo", "uid": "${traces}"}
    assert (target["queryType"], target["tableType"]) == ("traceql", "spans")
    query = target["query"]
    assert '{ name = "relay.call" && duration > $slow_call }' in query
    for attribute in ("relay.call_id", "relay.app"):
        assert f"span.{attribute}" in query
    # The one panel using ${traces}: every other mention is the variable itself.
    text = json.dumps(d)
    assert text.count("${traces}") == 2  # the panel's and its query's data source


def test_traces_query_names_what_tracing_records() -> None:
    """The span name and the attributes the query selects are the ones relay_actors.tracing sets."""
    source = (Path(__file__).resolve().parents[2] / "relay_actors" / "tracing.py").read_text()
    (panel,) = build.DASHBOARDS[0].trace_panels()
    assert '"relay.call"' in source
    for attribute in re.findall(r"span\.(relay\.[a-z_]+)", panel.query):
        assert f'"{attribute}"' in source, attribute


def test_queries_use_only_exported_metric_names() -> None:
    known = set(metric_names())
    used = set()
    for q in build.queries():
        for name in re.findall(r"\brelay_[a-z_]+", q["expr"]):
            assert name in known, (q["panel"], name)
            used.add(name)
        assert "ray_relay_" not in q["expr"], "the app's endpoint serves relay_* (Ray's agent exports none)"
        if "relay_" in q["expr"]:
            assert 'app=~"$app"' in q["expr"], (q["panel"], "every relay query follows the app variable")
    assert len(used) > 30


def test_duplicate_panel_ids_are_refused() -> None:
    p = Panel(1, "t", "d", [Target("up")])
    with pytest.raises(ValueError, match="duplicate panel ids"):
        Dashboard("x", "x", "x", [Row(1, "r", [p])]).check()
    t = TracePanel(2, "t", "d", "{ }")
    with pytest.raises(ValueError, match="duplicate panel ids"):
        Dashboard("x", "x", "x", [Row(1, "r", [p]), Row(3, "t", [t, TracePanel(2, "u", "d", "{ }")])]).check()


def test_data_sources_do_not_cross() -> None:
    wrong = Panel(1, "t", "d", [Target('up{x="$traces"}')])
    with pytest.raises(ValueError, match="refers to the traces data source"):
        Dashboard("x", "x", "x", [Row(2, "r", [wrong])]).check()
    with pytest.raises(ValueError, match="TraceQL query of its own"):
        Dashboard("x", "x", "x", [Row(2, "r", [TracePanel(1, "t", "d", "${datasource}")])]).check()
    slow = Choice("slow", "Slow", ["1s"], "2s")
    with pytest.raises(ValueError, match="is not an option"):
        Dashboard("x", "x", "x", [Row(2, "r", [])], variables=[slow]).check()
