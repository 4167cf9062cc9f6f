"""Grafana dashboards as Python dataclasses, rendered to JSON (the way Ray builds its own).

A :class:`Dashboard` has a fixed ``uid``, a hidden ``datasource`` variable that
every Prometheus panel and query uses as ``${datasource}``, an ``app`` variable, and rows
of :class:`Panel` s laid out two per line. A dashboard with :class:`TracePanel` s also
gets a hidden ``traces`` variable (a Tempo data source) that those panels, and only
they, use as ``${traces}``; their row is collapsed so that a Grafana with Prometheus
alone loads the dashboard without an error. Panel ids are checked unique when the
dashboard is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TRACES = {"type": "tempo", "uid": "${traces}"}


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
class TracePanel:
    """A table of the spans a TraceQL search finds in the ``${traces}`` data source.

    Grafana's Tempo search table links each row's trace ID to the trace view;
    ``select(...)`` in the query adds span attributes as columns. Rows are sorted by
    ``sort_by`` (a column's display name), descending.
    """

    id: int
    title: str
    description: str
    query: str
    limit: int = 20
    sort_by: str = "Duration"
    width: int = 24
    height: int = 10


@dataclass(frozen=True)
class Row:
    id: int
    title: str
    panels: list[Panel | TracePanel]
    #: Collapsed rows run no query until opened.
    collapsed: bool = False


@dataclass(frozen=True)
class Variable:
    """A query variable over label values (multi-select, "All" = ``.*``)."""

    name: str
    label: str
    query: str


@dataclass(frozen=True)
class Choice:
    """A variable with fixed options (Grafana ``custom``), one selected: ``default``."""

    name: str
    label: str
    options: list[str]
    default: str
    description: str = ""


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[Row]
    variables: list[Variable | Choice] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    refresh: str = "10s"

    def panels(self) -> list[Panel]:
        """The Prometheus panels (every query of these runs against ``${datasource}``)."""
        return [p for r in self.rows for p in r.panels if isinstance(p, Panel)]

    def trace_panels(self) -> list[TracePanel]:
        """The TraceQL panels (their query runs against ``${traces}``)."""
        return [p for r in self.rows for p in r.panels if isinstance(p, TracePanel)]

    def check(self) -> None:
        ids = [r.id for r in self.rows] + [p.id for r in self.rows for p in r.panels]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"{self.uid}: duplicate panel ids {duplicates}")
        for p in self.panels():
            refs = [t.expr for t in p.targets]
            if not refs:
                raise ValueError(f"{self.uid}: panel {p.id} has no query")
            if any("$traces" in r or "${traces}" in r for r in refs):
                raise ValueError(f"{self.uid}: Prometheus panel {p.id} refers to the traces data source")
        for v in self.variables:
            if isinstance(v, Choice) and v.default not in v.options:
                raise ValueError(f"{self.uid}: variable {v.name}: default {v.default!r} is not an option")
        for t in self.trace_panels():
            if not t.query.strip() or "$datasource" in t.query or "${datasource}" in t.query:
                raise ValueError(f"{self.uid}: trace panel {t.id} needs a TraceQL query of its own")

    def render(self) -> dict[str, Any]:
        self.check()
        panels: list[dict[str, Any]] = []
        y = 0
        for row in self.rows:
            inner: list[dict[str, Any]] = []
            panels.append(
                {
                    "collapsed": row.collapsed,
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                    "id": row.id,
                    # Grafana keeps a collapsed row's panels inside the row.
                    "panels": inner if row.collapsed else [],
                    "title": row.title,
                    "type": "row",
                }
            )
            y += 1
            row_y = y
            x = 0
            line_height = 0
            for p in row.panels:
                if x + p.width > 24:
                    x, y = 0, y + line_height
                    line_height = 0
                (inner if row.collapsed else panels).append(
                    _panel(p, x, y) if isinstance(p, Panel) else _trace_panel(p, x, y)
                )
                x += p.width
                line_height = max(line_height, p.height)
            y = row_y if row.collapsed else y + line_height
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
            "templating": {"list": self._variables()},
            "time": {"from": "now-30m", "to": "now"},
            "timepicker": {},
            "timezone": "",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
        }

    def _variables(self) -> list[dict[str, Any]]:
        out = [
            _datasource_variable(
                "datasource",
                "prometheus",
                "The Prometheus data source every panel but the Traces row queries.",
            )
        ]
        if self.trace_panels():
            out.append(
                _datasource_variable(
                    "traces",
                    "tempo",
                    "The Tempo data source the Traces row searches (only it; optional).",
                )
            )
        return out + [_variable(v) if isinstance(v, Variable) else _choice(v) for v in self.variables]


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


def _trace_panel(p: TracePanel, x: int, y: int) -> dict[str, Any]:
    return {
        "datasource": TRACES,
        "description": p.description,
        "fieldConfig": {"defaults": {"custom": {"align": "auto", "filterable": True}}, "overrides": []},
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "id": p.id,
        "options": {"showHeader": True, "sortBy": [{"desc": True, "displayName": p.sort_by}]},
        "targets": [
            {
                "datasource": TRACES,
                "filters": [],
                "limit": p.limit,
                "query": p.query,
                "queryType": "traceql",
                "refId": "A",
                "spss": 1,  # one span per trace: the matching root span
                "tableType": "spans",
            }
        ],
        "title": p.title,
        "type": "table",
    }


def _datasource_variable(name: str, plugin: str, description: str) -> dict[str, Any]:
    return {
        "current": {},
        "description": description,
        "hide": 2,
        "includeAll": False,
        "multi": False,
        "name": name,
        "options": [],
        "query": plugin,
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


def _choice(v: Choice) -> dict[str, Any]:
    return {
        "current": {"selected": True, "text": v.default, "value": v.default},
        "description": v.description,
        "hide": 0,
        "includeAll": False,
        "label": v.label,
        "multi": False,
        "name": v.name,
        "options": [{"selected": o == v.default, "text": o, "value": o} for o in v.options],
        "query": ",".join(v.options),
        "type": "custom",
    }
