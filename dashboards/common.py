"""Grafana dashboards as Python dataclasses, rendered to JSON (the way Ray builds its own).

A :class:`Dashboard` has a fixed ``uid``, a hidden ``datasource`` variable that
every panel and query uses as ``${datasource}``, an ``app`` variable, and rows
of :class:`Panel` s laid out two per line. Panel ids are checked unique when the
dashboard is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Target:
    """One Prometheus query of a panel, with its legend (Grafana ``{{label}}`` syntax)."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """A time-series panel. ``unit`` is a Grafana unit (``short``, ``ops``, ``bytes``...)."""

    id: int
    title: str
    description: str
    targets: list[Target]
    unit: str = "short"
    stack: bool = False
    width: int = 12
    height: int = 8
    min: float | None = 0


@dataclass(frozen=True)
class Row:
    id: int
    title: str
    panels: list[Panel]


@dataclass(frozen=True)
class Variable:
    """A query variable over label values (multi-select, "All" = ``.*``)."""

    name: str
    label: str
    query: str


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[Row]
    variables: list[Variable] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    refresh: str = "10s"

    def panels(self) -> list[Panel]:
        return [p for r in self.rows for p in r.panels]

    def check(self) -> None:
        ids = [r.id for r in self.rows] + [p.id for p in self.panels()]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"{self.uid}: duplicate panel ids {duplicates}")
        for p in self.panels():
            refs = [t.expr for t in p.targets]
            if not refs:
                raise ValueError(f"{self.uid}: panel {p.id} has no query")

    def render(self) -> dict[str, Any]:
        self.check()
        panels: list[dict[str, Any]] = []
        y = 0
        for row in self.rows:
            panels.append(
                {
                    "collapsed": False,
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                    "id": row.id,
                    "panels": [],
                    "title": row.title,
                    "type": "row",
                }
            )
            y += 1
            x = 0
            line_height = 0
            for p in row.panels:
                if x + p.width > 24:
                    x, y = 0, y + line_height
                    line_height = 0
                panels.append(_panel(p, x, y))
                x += p.width
                line_height = max(line_height, p.height)
            y += line_height
        return {
            "annotations": {"list": []},
            "description": self.description,
            "editable": True,
            "graphTooltip": 1,
            "links": [],
            "panels": panels,
            "refresh": self.refresh,
            "schemaVersion": 39,
            "tags": self.tags,
            "templating": {"list": [_datasource_variable()] + [_variable(v) for v in self.variables]},
            "time": {"from": "now-30m", "to": "now"},
            "timepicker": {},
            "timezone": "",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
        }


def _panel(p: Panel, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": p.unit,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": True,
            "stacking": {"mode": "normal" if p.stack else "none", "group": "A"},
        },
    }
    if p.min is not None:
        defaults["min"] = p.min
    return {
        "datasource": DATASOURCE,
        "description": p.description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "id": p.id,
        "options": {
            "legend": {"calcs": ["lastNotNull", "max"], "displayMode": "table", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {
                "datasource": DATASOURCE,
                "editorMode": "code",
                "expr": t.expr,
                "legendFormat": t.legend,
                "range": True,
                "refId": chr(ord("A") + i),
            }
            for i, t in enumerate(p.targets)
        ],
        "title": p.title,
        "type": "timeseries",
    }


def _datasource_variable() -> dict[str, Any]:
    return {
        "current": {},
        "description": "The Prometheus data source every panel queries.",
        "hide": 2,
        "includeAll": False,
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }


def _variable(v: Variable) -> dict[str, Any]:
    return {
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "datasource": DATASOURCE,
        "definition": v.query,
        "hide": 0,
        "includeAll": True,
        "label": v.label,
        "multi": True,
        "name": v.name,
        "options": [],
        "query": {"query": v.query, "refId": f"{v.name}-variable"},
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }
