"""The committed dashboard JSON is the generator's output, and it is well formed."""

from __future__ import annotations

import json
import re

import pytest

from dashboards import build
from dashboards.common import Dashboard, Panel, Row, Target
from relay_actors.metrics import metric_names


def test_committed_json_matches_the_generator() -> None:
    assert build.main(["--check"]) == 0, "run: python -m dashboards.build"


def test_dashboard_shape() -> None:
    for path, text in build.rendered().items():
        if path.suffix != ".json":
            continue
        d = json.loads(text)
        assert d["uid"] == path.stem
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids))
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert variables["datasource"]["hide"] == 2 and variables["datasource"]["type"] == "datasource"
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert p["targets"] and p["description"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}"
        assert "prometheus" not in json.dumps(variables["app"]).replace('"type": "prometheus"', "")


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
