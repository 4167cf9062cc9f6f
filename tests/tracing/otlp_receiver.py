"""A small OTLP/HTTP trace receiver for the tests: it decodes what the real exporter posts.

It listens on 127.0.0.1 in a thread of the test process (Ray actors post to it too),
answers every ``POST /v1/traces`` with an empty ``ExportTraceServiceResponse`` and
keeps each span as a :class:`Span` with its resource's attributes.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    kind: int = 0
    status_code: int = 0
    events: list[str] = field(default_factory=list)


class OtlpReceiver:
    """``with OtlpReceiver() as rx: ... rx.endpoint ... rx.spans``."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request, dict(self.headers.items()))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL (``OTEL_EXPORTER_OTLP_ENDPOINT``; the exporter adds ``/v1/traces``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _add(self, request: ExportTraceServiceRequest, headers: dict[str, str]) -> None:
        spans = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(
                        Span(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            resource=resource,
                            kind=s.kind,
                            status_code=s.status.code,
                            events=[e.name for e in s.events],
                        )
                    )
        with self._lock:
            self.requests += 1
            self.headers.append({k.lower(): v for k, v in headers.items()})
            self.spans.extend(spans)

    def snapshot(self) -> list[Span]:
        with self._lock:
            return list(self.spans)

    def traces(self) -> dict[str, list[Span]]:
        """Spans by trace id."""
        found: dict[str, list[Span]] = defaultdict(list)
        for span in self.snapshot():
            found[span.trace_id].append(span)
        return dict(found)

    def roots(self, name: str) -> list[Span]:
        """Root spans (no parent) called ``name``."""
        return [s for s in self.snapshot() if s.name == name and not s.parent_id]

    def complete(self, root: Span, handled: bool = True) -> bool:
        """Whether ``root``'s trace has come in whole: the parent of every span, and (if
        ``handled``) its handler's span (spans end, and are exported, in any order)."""
        spans = self.traces().get(root.trace_id, [])
        ids = {s.span_id for s in spans}
        if handled and not any(s.name == "relay.handler" for s in spans):
            return False
        return all(s.parent_id in ids for s in spans if s.parent_id)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def descends_from(span: Span, root: Span, by_id: dict[str, Span]) -> bool:
    """Whether ``span`` hangs (through its parents, all received) under ``root``."""
    seen = 0
    while span.parent_id and seen < 100:
        if span.parent_id == root.span_id:
            return True
        parent = by_id.get(span.parent_id)
        if parent is None:
            return False
        span, seen = parent, seen + 1
    return False
