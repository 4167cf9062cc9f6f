"""What the tracing tests share besides fixtures: the check for the ``[otel]`` extra and the
standard variables that turn tracing on. (A module of its own, not ``conftest``: several test
folders have a conftest, and ``from conftest import`` would find whichever came first.)"""

from __future__ import annotations

import pytest

#: What the tests need: the ``relay-actors[otel]`` extra (each test module skips without it).
OTEL_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
)


def need_otel() -> None:
    """Skip the calling test module unless the ``[otel]`` extra is installed."""
    for module in OTEL_MODULES:
        pytest.importorskip(module, reason="needs relay-actors[otel]")


#: A header the exporter must send (as an API key would travel).
SECRET_HEADER = ("x-api-key", "s3cret-trace-key")


def otel_env(endpoint: str) -> dict[str, str]:
    """The standard variables that turn tracing on, exporting to ``endpoint`` quickly."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": f"{SECRET_HEADER[0]}={SECRET_HEADER[1]}",
        "OTEL_SERVICE_NAME": "relay-trace-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
