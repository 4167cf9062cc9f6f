"""Fixtures for client tests: an in-process emulator with short durations, and a client factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from relay_actors import RelayClient
from relay_actors.backoff import Backoff
from relay_actors.emulator import Emulator

FAST = {
    "play": 0.05,
    "record": 0.1,
    "collect": 0.05,
    "detect": 0.05,
    "fax": 0.05,
    "tap": 0.05,
    "stream": 0.05,
    "pay": 0.05,
    "transcribe": 0.05,
    "ring": 0.01,
    "answer": 0.01,
    "connect": 0.01,
    "message": 0.005,
    "step": 0.005,
    "send_digits": 0.01,
}


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(ping_interval=0, durations=FAST) as emu:
        yield emu


@pytest.fixture
async def make_client(emulator: Emulator) -> AsyncIterator[Callable[..., Awaitable[RelayClient]]]:
    clients: list[RelayClient] = []

    async def make(connect: bool = True, **kw: Any) -> RelayClient:
        kw.setdefault("project", emulator.project)
        kw.setdefault("token", emulator.token)
        kw.setdefault("host", emulator.host)
        kw.setdefault("scheme", "ws")
        kw.setdefault("contexts", ["office"])
        kw.setdefault("backoff", Backoff(initial=0.05, cap=0.5))
        client = RelayClient(**kw)
        clients.append(client)
        if connect:
            await client.connect()
        return client

    yield make
    for client in clients:
        await client.disconnect()
