"""The processes that carry calls outrank Ray's monitoring daemons
(``relay_actors.ray_runtime.cpu_priority``): the daemons, found by their command lines
among this process's descendants, go down; an actor started at Ray's nice 15 comes up, or
says what to do. Real child processes here; on a real local Ray:
``tests/ray/test_lifecycle_cluster.py::test_a_local_ray_of_our_own_is_our_own``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay_actors.ray_runtime.cpu_priority import NICENESS, is_daemon, lower_daemons

WAIT = "import sys; sys.stdin.read()"


def test_only_the_daemons_command_lines_match() -> None:
    py = "/opt/venv/bin/python3.11"
    assert is_daemon(["ray::DashboardAgent", "", ""])
    assert is_daemon([py, "-u", "/x/site-packages/ray/_private/log_monitor.py", "--logs-dir=/tmp"])
    assert is_daemon([py, "/x/site-packages/ray/dashboard/dashboard.py", "--host=127.0.0.1"])
    assert is_daemon([py, "-u", "/x/site-packages/ray/autoscaler/_private/monitor.py"])
    # The raylet names the agent inside one of its arguments; workers carry calls.
    raylet = "/x/ray/core/src/ray/raylet/raylet"
    assert not is_daemon([raylet, f"--dashboard_agent_command={py} -u /x/ray/dashboard/agent.py"])
    assert not is_daemon([py, "-c", WAIT, "/x/ray/dashboard/agent.py"])
    assert not is_daemon(["ray::CallActor"]) and not is_daemon(["ray::IDLE"]) and not is_daemon([])


@pytest.fixture
def children(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    agent = tmp_path / "ray" / "dashboard" / "agent.py"
    agent.parent.mkdir(parents=True)
    agent.write_text(WAIT + "\n")
    procs = {
        "daemon": subprocess.Popen([sys.executable, str(agent)], stdin=subprocess.PIPE),
        # Names the daemon's script, but as an argument: like the raylet.
        "carrier": subprocess.Popen([sys.executable, "-c", WAIT, f"--agent={agent}"], stdin=subprocess.PIPE),
    }
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


def test_the_daemons_under_this_process_are_lowered_once_and_nothing_else(
    children: dict[str, subprocess.Popen[bytes]],
) -> None:
    daemon, carrier = children["daemon"].pid, children["carrier"].pid
    assert os.getpriority(os.PRIO_PROCESS, daemon) == os.getpriority(os.PRIO_PROCESS, carrier) == 0
    assert lower_daemons() == [daemon]
    assert os.getpriority(os.PRIO_PROCESS, daemon) == NICENESS
    assert os.getpriority(os.PRIO_PROCESS, carrier) == 0
    assert lower_daemons() == []  # idempotent
    assert lower_daemons(root=carrier) == []  # not under that one


CLAIM = """
import json, logging, os, sys
from relay_actors.ray_runtime.cpu_priority import claim_normal_priority
logging.basicConfig(level=logging.WARNING, format="%(message)s")
os.nice(15)  # as Ray starts its workers
if sys.argv[1] == "unprivileged":  # (everything imported: root's files are out of reach now)
    os.setgid(65534)
    os.setuid(65534)
ok = claim_normal_priority("CallActor 3")
print(json.dumps([ok, os.getpriority(os.PRIO_PROCESS, 0)]))
"""


def _may_raise_priority() -> bool:
    probe = "import os; os.nice(1); os.setpriority(os.PRIO_PROCESS, 0, 0)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


@pytest.mark.parametrize("who", ["privileged", "unprivileged"])
def test_an_actor_started_at_nice_15_claims_normal_priority_or_says_what_to_do(who: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: to be refused, and allowed, a raise of priority")
    if who == "privileged" and not _may_raise_priority():
        pytest.skip("this root may not raise a priority (no CAP_SYS_NICE, as in a default container)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", CLAIM, who], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ok, nice = json.loads(done.stdout.strip().splitlines()[-1])
    if who == "privileged":
        assert (ok, nice) == (True, 0) and "RAY_worker_niceness" not in done.stderr
    else:
        assert (ok, nice) == (False, 15)
        (line,) = [ln for ln in done.stderr.splitlines() if "RAY_worker_niceness=0" in ln]
        assert line.startswith("CallActor 3 runs at nice 15"), line
