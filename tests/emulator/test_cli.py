"""The CLI ready line (ws and wss) and the load generator against a running emulator process."""

from __future__ import annotations

import asyncio
import io
import ssl

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
