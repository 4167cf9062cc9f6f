"""Fixtures: a wss:// emulator the official SDK trusts through SIGNALWIRE_RELAY_CA_FILE."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from relay_actors.emulator import Emulator

FAST = {
    "play": 0.05,
    "record": 0.1,
    "collect": 0.05,
    "ring": 0.01,
    "answer": 0.01,
    "message": 0.005,
    "step": 0.005,
    "fax": 0.05,
    "detect": 0.05,
}


@pytest.fixture
async def wss_emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    async with Emulator(tls=True, ping_interval=0, durations=FAST) as emu:
        assert emu.ca_file is not None
        monkeypatch.setenv("SIGNALWIRE_RELAY_CA_FILE", emu.ca_file)
        yield emu
