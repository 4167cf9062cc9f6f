"""How the standard variables turn tracing on, and what travels to the actors."""

from __future__ import annotations

import logging
import os

import pytest
from otel_support import need_otel

from relay_actors import tracing

need_otel()


def test_requested_only_by_an_exporter_that_traces() -> None:
    assert not tracing.requested({})
    assert not tracing.requested({"OTEL_TRACES_EXPORTER": "none"})
    assert tracing.requested({"OTEL_TRACES_EXPORTER": "console, otlp"})
    assert not tracing.requested({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})


def test_environment_carries_the_otel_variables_only_when_asked() -> None:
    assert tracing.environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "PATH": "/bin"}) == {}
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "k=v", "PATH": "/bin"}
    assert tracing.environment(env) == {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "k=v"}


def test_unsupported_protocol_leaves_tracing_off(caplog: pytest.LogCaptureFixture) -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}
    with caplog.at_level(logging.WARNING, logger="relay_actors.tracing"):
        assert tracing.setup(env=env) is False
    assert not tracing.ENABLED
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=thrift is not supported" in caplog.text


def test_carried_headers_stay_out_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An actor applies the carried variables to its environment (for the SDK) but the
    headers, which may hold an API key, go to the exporter only."""
    carried = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=s3cret",
        "OTEL_SERVICE_NAME": "svc",
    }
    for key in carried:  # restored after the test, whatever setup() writes
        monkeypatch.setenv(key, "-")
        monkeypatch.delenv(key)
    assert tracing.setup(env=carried, role="call_actor", resource={"ray.actor.name": "a"})
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in os.environ
    assert os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:9"
    resource = tracing._provider.resource.attributes
    assert resource["service.name"] == "svc" and resource["relay.role"] == "call_actor"
    assert resource["ray.actor.name"] == "a" and resource["process.pid"] == os.getpid()
    tracing.shutdown()
    assert not tracing.ENABLED


def test_placed_offer_carries_the_root_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection actor's part: the offer item's trace is [trace_id, span_id, arrived, sent];
    with a sampler that drops the call, an empty list (the CallActor then traces nothing)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    assert tracing.setup(provider=TracerProvider())
    tracing.offer_arrived("c1")
    trace_id, span_id, arrived, sent = tracing.placed("c1", 0)
    assert len(trace_id) == 32 and len(span_id) == 16 and arrived <= sent
    # Refused by a full CallActor and placed elsewhere: the same trace, the same root.
    assert tracing.placed("c1", 1)[:3] == [trace_id, span_id, arrived]
    tracing.shutdown()
    assert tracing.setup(provider=TracerProvider(sampler=ALWAYS_OFF))
    assert tracing.placed("c1", 0) == []
