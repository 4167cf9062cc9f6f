"""Fixtures for client tests: an in-process emulator with short durations, a client
factory, and helpers to get inbound calls and to read the wire frames a client sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from relay_actors import Call, RelayClient
from relay_actors.backoff import Backoff
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS, wait_until

FAST = FAST_DURATIONS

#: Every operation lasts long enough for sub-commands to reach it while it runs.
SLOW = {name: 30.0 for name in FAST if name not in ("ring", "answer", "connect", "message", "step")}

#: Environment variables the client reads: cleared for every test so none leaks in.
CLIENT_ENV = (
    "SIGNALWIRE_PROJECT_ID",
    "SIGNALWIRE_API_TOKEN",
    "SIGNALWIRE_JWT_TOKEN",
    "SIGNALWIRE_SPACE",
    "SIGNALWIRE_RELAY_SCHEME",
    "SIGNALWIRE_RELAY_CA_FILE",
    "SIGNALWIRE_RELAY_ALLOW_INSECURE",
    "RELAY_MAX_ACTIVE_CALLS",
    "RELAY_MAX_CONNECTIONS",
    "SIGNALWIRE_LOG_MODE",
    "SIGNALWIRE_LOG_LEVEL",
    "SIGNALWIRE_LOG_FORMAT",
)

PHONE = {"type": "phone", "params": {"from_number": "+15550000001", "to_number": "+15550000002"}}


def phone(to_number: str) -> dict[str, Any]:
    """A phone device dialling ``to_number``."""
    return {"type": "phone", "params": {"from_number": "+15550000001", "to_number": to_number}}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(ping_interval=0, durations=FAST) as emu:
        yield emu


@pytest.fixture
async def tls_emulator() -> AsyncIterator[Emulator]:
    async with Emulator(tls=True, ping_interval=0, durations=FAST) as emu:
        yield emu


def client_kwargs(emulator: Emulator, **kw: Any) -> dict[str, Any]:
    """Constructor arguments for a client of ``emulator`` (explicit ``kw`` win)."""
    kw.setdefault("project", emulator.project)
    kw.setdefault("token", emulator.token)
    kw.setdefault("host", emulator.host)
    kw.setdefault("scheme", "wss" if emulator.tls else "ws")
    if emulator.tls:
        kw.setdefault("ca_file", emulator.ca_file)
    kw.setdefault("contexts", ["office"])
    kw.setdefault("backoff", Backoff(initial=0.05, cap=0.5))
    return kw


async def start_serving(client: RelayClient) -> tuple[asyncio.Event, asyncio.Task[None]]:
    """Run ``client.serve(stop)`` in a task until connected; returns ``stop`` and the task."""
    stop = asyncio.Event()
    server = asyncio.create_task(client.serve(stop))
    await wait_until(lambda: client.connected or server.done())
    return stop, server


@pytest.fixture
async def make_client(emulator: Emulator) -> AsyncIterator[Callable[..., Awaitable[RelayClient]]]:
    clients: list[RelayClient] = []

    async def make(connect: bool = True, **kw: Any) -> RelayClient:
        client = RelayClient(**client_kwargs(emulator, **kw))
        clients.append(client)
        if connect:
            await client.connect()
        return client

    yield make
    for client in clients:
        await client.disconnect()


class Harness:
    """One client of the emulator, with its inbound calls in a queue and the
    frames it sent readable from the emulator's journal."""

    def __init__(self, emulator: Emulator, client: RelayClient) -> None:
        self.emulator = emulator
        self.client = client
        self.calls: asyncio.Queue[Call] = asyncio.Queue()

        @client.on_call
        async def _queue(call: Call) -> None:
            self.calls.put_nowait(call)

    @property
    def core(self) -> Any:
        return self.emulator.core

    @property
    def protocol(self) -> str:
        return self.client.relay_protocol

    async def inbound(self, context: str = "office", timeout: float = 5.0, **options: Any) -> Call:
        """Inject one inbound call on ``context`` and return the client's Call for it."""
        (call_id,) = self.core.inject_calls(context, 1, **options)
        call = await asyncio.wait_for(self.calls.get(), timeout)
        assert call.call_id == call_id
        return call

    async def answered(self, **options: Any) -> Call:
        call = await self.inbound(**options)
        await call.answer()
        await call.wait_for_answered(timeout=5)
        return call

    def frames(self, direction: str = "in", protocol: str | None = None) -> list[dict[str, Any]]:
        """Frames of this client's session (``in``: sent by the client), in order."""
        protocol = protocol or self.protocol
        entries = self.core.journal.frames(protocol)[protocol]
        return [e["frame"] for e in entries if e["dir"] == direction]

    def requests(self, method: str, protocol: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """Params of every ``method`` request the client sent whose params contain ``match``."""
        return [
            f.get("params", {})
            for f in self.frames("in", protocol)
            if f.get("method") == method and all(f.get("params", {}).get(k) == v for k, v in match.items())
        ]

    def request(self, method: str, **match: Any) -> dict[str, Any]:
        """The single ``method`` request matching ``match`` (asserted to exist once)."""
        found = self.requests(method, **match)
        assert len(found) == 1, f"{method} {match}: {len(found)} requests in the journal"
        return found[0]

    async def wait_request(self, method: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        found = await wait_until(lambda: self.requests(method, **match), timeout)
        return found[-1]


@pytest.fixture
def make_harness(
    emulator: Emulator, make_client: Callable[..., Awaitable[RelayClient]]
) -> Callable[..., Awaitable[Harness]]:
    async def make(connect: bool = True, **kw: Any) -> Harness:
        h = Harness(emulator, await make_client(connect=False, **kw))
        if connect:
            await h.client.connect()
        return h

    return make


@pytest.fixture
async def harness(make_harness: Callable[..., Awaitable[Harness]]) -> Harness:
    return await make_harness()
