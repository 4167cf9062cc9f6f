"""The README's main command: ``relay-actors demo`` runs end to end and says OK."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

DEMO = [sys.executable, "-m", "relay_actors.cli", "demo", "--calls", "6", "--rate", "50", "--dials", "2"]


@pytest.mark.parametrize("runtime", ["ray", "local"])
def test_demo_command_runs_the_flows(runtime: str) -> None:
    with tempfile.TemporaryDirectory(prefix="relay-demo-ray-") as ray_tmp:
        env = {
            **os.environ,
            "RAY_TMPDIR": ray_tmp,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        env.pop("RAY_ADDRESS", None)
        cmd = [*DEMO, "--runtime", runtime]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "demo OK" in proc.stdout
    table = summary(proc.stdout)
    assert table["inbound_completed"] == 6 and table["dialed_answered"] == 2
    if runtime == "ray":
        # The calls ran in CallActors, spread over more than one of them.
        spread = [v for k, v in table.items() if k.startswith("calls_on_call_actor_")]
        assert len(spread) >= 2 and sum(spread) == 6
        assert table["router.double_assignments"] == 0


def summary(stdout: str) -> dict[str, int]:
    """The demo's result table as a dict."""
    rows = [line.split() for line in stdout.splitlines()]
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}


def test_cli_usage() -> None:
    ok = subprocess.run([sys.executable, "-m", "relay_actors.cli", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "emulator" in ok.stdout and "demo" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "relay_actors.cli", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command" in bad.stderr
