"""The README's main command: ``relay-actors demo`` runs end to end and says OK."""

from __future__ import annotations

import subprocess
import sys


def test_demo_command_runs_the_flows() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "relay_actors.cli", "demo", "--calls", "5", "--rate", "50", "--dials", "2"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo OK" in proc.stdout
    assert "inbound_completed                      5" in proc.stdout


def test_cli_usage() -> None:
    ok = subprocess.run([sys.executable, "-m", "relay_actors.cli", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "emulator" in ok.stdout and "demo" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "relay_actors.cli", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command" in bad.stderr
