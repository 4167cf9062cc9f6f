"""Connection.start(): the way a connection actor comes up — through the reconnect loop,
so a blip or a refused resume at that moment does not leave its shard down for good."""

from __future__ import annotations

import asyncio

import pytest

from relay_actors.backoff import Backoff
from relay_actors.config import resolve_settings
from relay_actors.connection import Connection
from relay_actors.emulator import Emulator
from relay_actors.errors import AuthenticationError


def _connection(emulator: Emulator, token: str | None = None) -> Connection:
    settings = resolve_settings(
        emulator.project, token or emulator.token, None, emulator.host, ["office"], scheme="ws", env={}
    )
    return Connection(settings, on_event=lambda event, ack: None, backoff=Backoff(initial=0.02, cap=0.1))


async def test_start_rides_out_refused_handshakes(emulator: Emulator) -> None:
    emulator.core.refuse_handshakes = 3
    conn = _connection(emulator)
    # connect() makes one attempt and fails on a refused handshake...
    with pytest.raises(Exception):  # noqa: B017 - whichever transport error the refusal gives
        await conn.connect()
    # ...start() keeps trying (with backoff) until it is in.
    conn2 = _connection(emulator)
    connected = await asyncio.wait_for(conn2.start(), 10)
    assert connected.protocol and conn2.connected
    assert emulator.core.stats()["counters"]["handshakes_refused"] == 3
    await conn2.close()


async def test_start_with_a_dead_resume_state_opens_a_fresh_session(emulator: Emulator) -> None:
    conn = _connection(emulator)
    await conn.start()
    state = conn.session.resume_state()
    await conn.close()
    # The server forgets the session (as after a restart of it); a restarted actor that
    # restores the old state must not be stuck offering the dead protocol.
    emulator.core.sessions.clear()
    restarted = _connection(emulator)
    restarted.session.restore(state)
    connected = await asyncio.wait_for(restarted.start(), 10)
    assert connected.protocol != state["protocol"] and restarted.connected
    await restarted.close()


async def test_start_raises_the_rejection_cap(emulator: Emulator) -> None:
    conn = _connection(emulator, token="wrong-token")
    with pytest.raises(AuthenticationError):
        await asyncio.wait_for(conn.start(), 10)
