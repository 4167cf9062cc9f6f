"""Running an example app as a user would (``relay-actors run MODULE:client`` in a
subprocess, from the repository's root, credentials in its environment) against an
in-process emulator, and reading what it did from the emulator's journal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from relay_actors.emulator import Emulator

REPO = Path(__file__).resolve().parents[2]


class App:
    """A running ``relay-actors run`` process; its output is read as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def line(self, needle: str, timeout: float = 60.0) -> str:
        """The first output line holding ``needle`` (waiting for it)."""

        async def find() -> str:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                if self._reader.done():
                    raise EOFError(f"the app exited before {needle!r}:\n{self.output[-3000:]}")
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    async def exit_code(self, timeout: float = 60.0) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._reader, 10)
        return code


def app_env(emu: Emulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALWIRE_", "RAY_ADDRESS"))}
    env.update(
        SIGNALWIRE_PROJECT_ID=emu.project,
        SIGNALWIRE_API_TOKEN=emu.token,
        SIGNALWIRE_SPACE=emu.host,
        SIGNALWIRE_RELAY_SCHEME="ws",
        **extra,
    )
    return env


@contextlib.asynccontextmanager
async def served(target: str, emu: Emulator, *args: str, **env: str) -> AsyncIterator[App]:
    """``relay-actors run TARGET ARGS`` until the block ends (then SIGTERM: it must stop cleanly)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay_actors.cli", "run", target, "--drain-timeout", "10", *args,
        cwd=REPO, env=app_env(emu, **env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    app = App(proc)
    try:
        await app.line("relay-actors: ready:")
        yield app
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await app.exit_code(60) == 0, app.output[-3000:]
        assert "Traceback" not in app.output, app.output[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _frames(frame: Any) -> Iterator[dict[str, Any]]:
    for item in frame if isinstance(frame, list) else [frame]:
        if isinstance(item, dict):
            yield item


def commands(emu: Emulator, call_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The RELAY commands the app sent for one call, in order (from every session's journal)."""
    found = []
    for entries in emu.core.journal.frames().values():
        for entry in entries:
            if entry["dir"] != "in":
                continue
            for frame in _frames(entry["frame"]):
                params = frame.get("params") or {}
                if isinstance(params, dict) and params.get("call_id") == call_id and "method" in frame:
                    found.append((entry["t"], frame["method"], params))
    return [(method, params) for _, method, params in sorted(found, key=lambda x: x[0])]


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def until(probe: Callable[[], Any], timeout: float = 30.0, what: str = "a condition") -> Any:
    """Poll ``probe`` (state of another process) with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = probe()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def call_state(emu: Emulator, call_id: str) -> dict[str, Any]:
    return next(c for c in emu.core.list_calls() if c["call_id"] == call_id)
