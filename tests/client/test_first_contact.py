"""Mistakes a newcomer makes on first contact: each ends in one clear line saying what to do.

Against the real emulator: ``wss`` to the plain one, ``ws`` to the TLS one, a wrong token
through ``run()`` in a real process; a host that cannot resolve (a name glibc refuses
locally, so no DNS query leaves the machine); handlers registered with no contexts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from typing import Any

import pytest

from relay_actors import RelayClient, RelayError
from relay_actors.backoff import Backoff
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import wait_until

from .conftest import client_kwargs

#: A malformed name (leading hyphen): glibc fails it at once, without asking a DNS server.
UNRESOLVABLE = "-no-such-space.invalid"


def _fast(emulator: Emulator, **kw: Any) -> RelayClient:
    return RelayClient(**client_kwargs(emulator, backoff=Backoff(initial=0.01, cap=0.05), **kw))


async def _serve_fails(client: RelayClient, caplog: pytest.LogCaptureFixture) -> RelayError:
    """serve() gives up by itself (bounded), after exactly 3 attempts; returns its error."""
    caplog.set_level(logging.INFO, logger="relay_actors.connection")
    with pytest.raises(RelayError) as info:
        await asyncio.wait_for(client.serve(asyncio.Event()), 10)
    messages = [r.getMessage() for r in caplog.records if r.name == "relay_actors.connection"]
    assert len([m for m in messages if m.startswith("cannot reach")]) == 2, messages
    assert "cannot connect after 3 attempts; giving up" in messages
    return info.value


async def test_wss_to_the_plain_emulator(emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    error = await _serve_fails(_fast(emulator, scheme="wss"), caplog)
    assert error.failure == "tls_mismatch"
    assert "SIGNALWIRE_RELAY_SCHEME=ws" in error.message and emulator.host in error.message
    client = _fast(emulator, scheme="wss")
    with pytest.raises(RelayError) as info:  # connect(): one attempt, same answer
        await client.connect()
    await client.disconnect()
    assert info.value.failure == "tls_mismatch"
    assert emulator.core.stats()["sessions"] == 0


async def test_plain_ws_to_the_tls_emulator(tls_emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    error = await _serve_fails(_fast(tls_emulator, scheme="ws"), caplog)
    assert error.failure == "tls_mismatch"
    assert "expects TLS" in error.message and "Unset SIGNALWIRE_RELAY_SCHEME" in error.message
    assert tls_emulator.core.stats()["sessions"] == 0


async def test_a_host_that_does_not_resolve(emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    # (allow_insecure: plain ws to a name that is not loopback is refused before any DNS)
    client = _fast(emulator, host=f"{UNRESOLVABLE}:{emulator.port}", allow_insecure=True)
    error = await _serve_fails(client, caplog)
    assert error.failure == "host_not_found"
    assert repr(UNRESOLVABLE) in error.message and "SIGNALWIRE_SPACE" in error.message


async def test_transport_errors_after_a_success_never_give_up(emulator: Emulator) -> None:
    """The bound is for first contact only: a server that goes away later is waited for."""
    client = _fast(emulator)
    server = asyncio.create_task(client.serve(asyncio.Event()))
    try:
        await wait_until(lambda: client.connected)
        emulator.core.refuse_handshakes = 6  # six failed reconnects in a row
        emulator.core.drop(client.relay_protocol)
        await wait_until(lambda: client.stats()["reconnects"] >= 1 and client.connected, timeout=10)
        assert emulator.core.stats()["counters"]["handshakes_refused"] == 6 and not server.done()
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        await client.disconnect()


async def test_wrong_token_run_prints_one_line_and_exits_1(emulator: Emulator) -> None:
    script = "from relay_actors import RelayClient\nRelayClient(contexts=['office']).run()\n"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SIGNALWIRE_PROJECT_ID": emulator.project,
        "SIGNALWIRE_API_TOKEN": "wrong-token",
        "SIGNALWIRE_SPACE": emulator.host,
        "SIGNALWIRE_RELAY_SCHEME": "ws",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = stderr.decode()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("relay-actors: ") and "rejected the credentials" in last
    assert "SIGNALWIRE_API_TOKEN" in last and "wrong-token" not in err
    assert emulator.core.stats()["counters"]["auth_failures"] == 3


@pytest.mark.parametrize("handler", ["on_call", "on_message"])
async def test_handlers_without_contexts_warn_at_connect(
    emulator: Emulator, caplog: pytest.LogCaptureFixture, handler: str
) -> None:
    caplog.set_level(logging.WARNING, logger="relay_actors.client")

    async def noop(_: Any) -> None:
        return None

    quiet = _fast(emulator)  # has contexts: no warning
    getattr(quiet, handler)(noop)
    await quiet.connect()
    await quiet.disconnect()
    assert not [r for r in caplog.records if "contexts=[]" in r.getMessage()]

    client = _fast(emulator, contexts=[])
    getattr(client, handler)(noop)
    await client.connect()
    await client.disconnect()
    [warning] = [r for r in caplog.records if "contexts=[]" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert handler in warning.getMessage() and "receive([...])" in warning.getMessage()
