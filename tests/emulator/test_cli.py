"""The CLI ready line (ws and wss) and the load generator against a running emulator process."""

from __future__ import annotations

import asyncio
import io
import socket
import ssl
import subprocess
import sys

import pytest

from relay_actors.emulator import EmulatorProcess
from relay_actors.emulator.load import run_load
from relay_actors.emulator.testing import RawClient


@pytest.mark.parametrize("tls", [False, True])
async def test_ready_line_and_clean_stop(tls: bool) -> None:
    args = ["--tls"] if tls else []
    emu = EmulatorProcess([*args, "--project", "p1", "--token", "t1"]).start()
    try:
        info = emu.info
        assert {"url", "host", "control_url", "ca_file", "project", "token", "jwt"} <= info.keys()
        assert info["url"] == f"{'wss' if tls else 'ws'}://{info['host']}"
        assert info["host"].startswith("127.0.0.1:")
        assert (info["ca_file"] is not None) == tls
        assert (info["project"], info["token"]) == ("p1", "t1")
        client = await RawClient(info["url"], ca_file=info["ca_file"]).open()
        try:
            await client.connect(jwt=info["jwt"])
        finally:
            await client.close()
        if tls:
            with pytest.raises(ssl.SSLError):
                await RawClient(info["url"]).open()  # not trusted without the CA
    finally:
        assert emu.stop() == 0


async def test_load_generator() -> None:
    with EmulatorProcess(["--ping-interval", "0", "--durations", "ring=0.01"]) as emu:
        client = await RawClient(emu.url).open()
        await client.connect(emu.project, emu.token, contexts=["load"])
        answered: set[str] = set()

        async def answer_offers() -> None:
            while True:
                for event in client.events("calling.call.receive"):
                    if event["call_id"] not in answered:
                        answered.add(event["call_id"])
                        await client.send(
                            {
                                "jsonrpc": "2.0",
                                "id": event["call_id"],
                                "method": "calling.answer",
                                "params": {"call_id": event["call_id"]},
                            }
                        )
                await client.wait_frame(
                    lambda f: f.get("params", {}).get("event_type") == "calling.call.receive",
                    timeout=10,
                    start=len(client.frames),
                )

        answering = asyncio.get_running_loop().create_task(answer_offers())
        out = io.StringIO()
        try:
            counts = await run_load(
                emu.control_url, rate=50, total=20, context="load", hangup_after=0.05, timeout=20, out=out
            )
        finally:
            answering.cancel()
            await client.close()
        assert counts["created"] == 20
        assert counts["answered"] == 20
        assert counts["ended"] == 20
        assert "injected=20" in out.getvalue()


# --- mistakes: one clear line, a non-zero status, no traceback ------------------------------------

CLI = [sys.executable, "-m", "relay_actors.cli"]


def _one_line_error(proc: subprocess.CompletedProcess[str], status: int) -> str:
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_emulator_on_a_busy_port_says_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*CLI, "emulator", "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    line = _one_line_error(proc, 2)
    assert line.startswith("relay-actors emulator: cannot listen on 127.0.0.1")
    assert "in use" in line and "--port" in line and proc.stdout == ""


def test_load_with_a_bad_control_url_says_so() -> None:
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for url in (f"http://127.0.0.1:{port}", "127.0.0.1:nope"):
        proc = subprocess.run(
            [*CLI, "load", "--control-url", url, "--total", "1"], capture_output=True, text=True, timeout=60
        )
        line = _one_line_error(proc, 2)
        assert line.startswith(f"relay-actors load: cannot use the control API at {url!r}")
        assert "control_url" in line


def test_load_to_a_context_nobody_receives_hints_and_fails() -> None:
    with EmulatorProcess(["--ping-interval", "0"]) as emu:
        proc = subprocess.run(
            [
                *CLI,
                "load",
                "--control-url",
                emu.control_url,
                "--context",
                "nobody",
                "--total",
                "3",
                "--rate",
                "50",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    line = _one_line_error(proc, 1)
    assert "answered=0" in proc.stderr
    assert line.startswith("relay-actors load: no call was answered") and "contexts=['nobody']" in line
