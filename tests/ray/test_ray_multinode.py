"""Runs ``multinode_cases.py`` (a 3-node Cluster) in a subprocess: a Cluster cannot share
this process with the session's local Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
CASES = "multinode_cases.py"


@pytest.mark.timeout(280)
def test_multinode_cases() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.pop("RAY_TMPDIR", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            str(HERE / "multinode_cases.py"),
        ],
        cwd=HERE.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=260,
    )
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "3 passed" in proc.stdout
