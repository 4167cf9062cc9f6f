"""Run the emulator in its own process (``python -m relay_actors.emulator``) and read its ready line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["EmulatorProcess"]


class EmulatorProcess:
    """Context manager: start the emulator subprocess, expose its ready-line fields, stop it.

    ``with EmulatorProcess(["--tls"]) as emu: emu.host, emu.control_url, ...``
    ``cpu`` (e.g. ``0``) pins it to one core with ``taskset`` when available.
    """

    def __init__(self, args: Sequence[str] = (), *, cpu: int | None = None, ready_timeout: float = 20.0):
        self.args = list(args)
        self.cpu = cpu
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        info = self.__dict__.get("info") or {}
        if name in info:
            return info[name]
        raise AttributeError(name)

    def start(self) -> EmulatorProcess:
        """Start and wait for the ready line (raises RuntimeError on failure)."""
        cmd = [
            sys.executable,
            "-m",
            "relay_actors.emulator",
            "--port",
            "0",
            "--control-port",
            "0",
            *self.args,
        ]
        if self.cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(self.ready_timeout)
        if not line or not line[0].strip():
            if self.proc.poll() is None:
                self.proc.kill()
            _, stderr = self.proc.communicate(timeout=5)  # read before stop() closes the pipes
            self.stop()
            raise RuntimeError(f"emulator did not become ready: {stderr[-2000:]}")
        self.info = json.loads(line[0])
        return self

    @property
    def pid(self) -> int:
        """Process id of the emulator (of taskset's child, which execs python)."""
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 5 s; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
