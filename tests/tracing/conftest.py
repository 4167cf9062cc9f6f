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
