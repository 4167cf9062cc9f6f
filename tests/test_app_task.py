"""``relay-actors run MODULE:client --task FUNC``: FUNC(client) runs once the app is ready,
then the app drains and stops; a task that raises, or a name that is no async function,
exits 1 with one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS

APP = """
from relay_actors import RelayClient

client = RelayClient(contexts=["office"])


async def fine(client):
    print("task saw protocol", bool(client.relay_protocol), flush=True)


async def boom(client):
    raise RuntimeError("the campaign file is empty")


def not_async(client):
    pass
"""


def _run(tmp_path: Path, emu: Emulator, task: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALWIRE_")}
    env.update(
        SIGNALWIRE_PROJECT_ID=emu.project,
        SIGNALWIRE_API_TOKEN=emu.token,
        SIGNALWIRE_SPACE=emu.host,
        SIGNALWIRE_RELAY_SCHEME="ws",
    )
    return subprocess.run(
        [sys.executable, "-m", "relay_actors.cli", "run", "taskapp:client", "--task", task],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_task_runs_once_ready_then_the_app_stops(tmp_path: Path) -> None:
    (tmp_path / "taskapp.py").write_text(APP)
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS) as emu:
        ok = await asyncio.to_thread(_run, tmp_path, emu, "fine")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        lines = ok.stdout.splitlines()
        ready = next(i for i, line in enumerate(lines) if "relay-actors: ready:" in line)
        assert lines[ready + 1] == "task saw protocol True"
        assert "relay-actors: task fine done: draining" in ok.stdout and lines[-1] == "relay-actors: stopped"

        failed = await asyncio.to_thread(_run, tmp_path, emu, "boom")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        errors = [line for line in failed.stderr.splitlines() if line.startswith("relay-actors: error:")]
        assert "relay-actors: task boom failed: draining" in failed.stdout
        assert len(errors) == 1 and errors[0].endswith(
            "--task boom: the campaign file is empty (the app stopped)"
        ), errors

        wrong = await asyncio.to_thread(_run, tmp_path, emu, "not_async")
        assert wrong.returncode == 1
        assert "--task not_async: taskapp.not_async is not an async function" in wrong.stderr
