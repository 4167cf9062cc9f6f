"""``relay-actors run module:client`` in-process: the ready line, the metrics it names, and
SIGTERM drains (no new offers, the active call finishes) and stops with clear lines."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import urllib.request
from pathlib import Path

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS

APP = """
import logging

from relay_actors import RelayClient

client = RelayClient(contexts=["office"], handler_timeout=600.0)


@client.on_call
async def on_call(call):
    logging.getLogger("myapp").info("answering the caller")
    await call.answer()
    await call.wait_for_ended(timeout=60)
"""


async def _line(stream: asyncio.StreamReader, needle: str, timeout: float = 30.0) -> str:
    async def find() -> str:
        while True:
            raw = await stream.readline()
            if not raw:
                raise EOFError(f"output ended before {needle!r}")
            if needle in raw.decode():
                return raw.decode()

    return await asyncio.wait_for(find(), timeout)


async def _until(probe, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not probe():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_run_serves_the_modules_client_and_drains_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(APP)
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS) as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALWIRE_")}
        env.update(
            SIGNALWIRE_PROJECT_ID=emu.project,
            SIGNALWIRE_API_TOKEN=emu.token,
            SIGNALWIRE_SPACE=emu.host,
            SIGNALWIRE_RELAY_SCHEME="ws",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay_actors.cli", "run", "myapp:client", "--drain-timeout", "20",
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            ready = await _line(proc.stdout, "relay-actors: ready:")
            assert f"in-process, connected to {emu.host}" in ready and "contexts office" in ready
            # Its metrics, where the ready line says (RELAY_METRICS_PORT=0 in tests: any free port).
            url = re.search(r"metrics (http://127\.0\.0\.1:\d+/metrics)", ready)
            assert url, ready
            (call_id,) = emu.core.inject_calls("office", 1)
            # The handler's line carries its call_id in-process too (grep <call_id>), as on Ray.
            logged = await _line(proc.stdout, "answering the caller")
            assert f"app=myapp call_id={call_id} myapp: answering the caller" in logged, logged
            await _until(lambda: emu.core.list_calls()[0]["state"] == "answered")
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url[1], timeout=5).read().decode())
            assert 'relay_active_calls{actor="",app="myapp",component="client",node="",shard=""} 1.0' in text
            proc.send_signal(signal.SIGTERM)
            await _line(proc.stdout, "relay-actors: SIGTERM: draining")
            # Draining: no new offers (the contexts are unsubscribed); the active call goes on.
            await _until(lambda: not emu.core.subscribers("office"))
            assert proc.returncode is None
            emu.core.hangup(call_id)
            await _line(proc.stdout, "relay-actors: stopped")
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
