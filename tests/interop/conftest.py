"""Fixtures: a wss:// emulator the official SDK trusts through SIGNALWIRE_RELAY_CA_FILE."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS


@pytest.fixture
async def wss_emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    async with Emulator(tls=True, ping_interval=0, durations=FAST_DURATIONS) as emu:
        assert emu.ca_file is not None
        monkeypatch.setenv("SIGNALWIRE_RELAY_CA_FILE", emu.ca_file)
        yield emu
