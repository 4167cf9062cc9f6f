"""Fixtures for the tracing tests: an OTLP/HTTP receiver on 127.0.0.1, the standard
variables pointing at it, and tracing turned off again after each test.

The tests need the ``relay-actors[otel]`` extra (the SDK, the OTLP/HTTP exporter and
``opentelemetry-proto``); without it they skip (``.ci/setup`` installs it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from relay_actors import tracing
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS

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


@pytest.fixture
def receiver() -> Iterator[Any]:
    from otlp_receiver import OtlpReceiver

    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(autouse=True)
def _tracing_off_after() -> Iterator[None]:
    tracing.shutdown()
    yield
    tracing.shutdown()


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS) as emu:
        yield emu
