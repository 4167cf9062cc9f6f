"""Fixtures: an in-process emulator (ws://) and raw clients connected to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS, RawClient


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS) as emu:
        yield emu


@pytest.fixture
async def client_factory(emulator: Emulator) -> AsyncIterator[Callable[..., Awaitable[RawClient]]]:
    clients: list[RawClient] = []

    async def make(contexts: list[str] | None = None, connect: bool = True, **kw: object) -> RawClient:
        client = await RawClient(emulator.url, **kw).open()  # type: ignore[arg-type]
        clients.append(client)
        if connect:
            await client.connect(emulator.project, emulator.token, contexts=contexts)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(client_factory: Callable[..., Awaitable[RawClient]]) -> RawClient:
    return await client_factory(contexts=["office"])
