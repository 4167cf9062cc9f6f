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
from pathlib import Path

import pytest

from relay_actors.ray_runtime.cpu_priority import NICENESS, is_daemon

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


#: Run in a child of the test (so that only its own children are its descendants, not the
#: session's Ray): a daemon-like child and one that names the daemon's script in an argument.
LOWER = """
import json, os, subprocess, sys
from relay_actors.ray_runtime.cpu_priority import lower_daemons
agent, wait = sys.argv[1], "import sys; sys.stdin.read()"
daemon = subprocess.Popen([sys.executable, agent], stdin=subprocess.PIPE)
carrier = subprocess.Popen([sys.executable, "-c", wait, "--agent=" + agent], stdin=subprocess.PIPE)
try:
    before = [os.getpriority(os.PRIO_PROCESS, p.pid) for p in (daemon, carrier)]
    first, second, elsewhere = lower_daemons(), lower_daemons(), lower_daemons(root=carrier.pid)
    after = [os.getpriority(os.PRIO_PROCESS, p.pid) for p in (daemon, carrier)]
    print(json.dumps({"pids": [daemon.pid, carrier.pid], "before": before, "after": after,
                      "first": first, "second": second, "elsewhere": elsewhere}))
finally:
    for p in (daemon, carrier):
        p.kill()
        p.wait()
"""


def test_the_daemons_under_this_process_are_lowered_once_and_nothing_else(tmp_path: Path) -> None:
    agent = tmp_path / "ray" / "dashboard" / "agent.py"
    agent.parent.mkdir(parents=True)
    agent.write_text(WAIT + "\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", LOWER, str(agent)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    daemon, _carrier = out["pids"]
    assert out["before"] == [0, 0]
    assert out["first"] == [daemon] and out["after"] == [NICENESS, 0], out
    assert out["second"] == [] and out["elsewhere"] == [], out  # idempotent; not under the carrier


CLAIM = """
import json, logging, os, resource, sys
from relay_actors.ray_runtime.cpu_priority import claim_normal_priority
logging.basicConfig(level=logging.WARNING, format="%(message)s")
os.nice(15)  # as Ray starts its workers
if sys.argv[1] == "unprivileged":
    # No raise of priority allowed by the limit (anyone may lower it), nor by a capability
    # (root becomes nobody; everything is imported: root's files are out of reach now).
    resource.setrlimit(resource.RLIMIT_NICE, (0, 0))
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
ok = claim_normal_priority("CallActor 3")
print(json.dumps([ok, os.getpriority(os.PRIO_PROCESS, 0)]))
"""


def _may_raise_priority() -> bool:
    """Whether a process of this test's user may bring itself back from nice 1 to 0
    (root with ``CAP_SYS_NICE``, or an ``RLIMIT_NICE`` that allows it)."""
    probe = "import os; os.nice(1); os.setpriority(os.PRIO_PROCESS, 0, 0)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


@pytest.mark.parametrize("who", ["as_this_user", "unprivileged"])
def test_an_actor_started_at_nice_15_claims_normal_priority_or_says_what_to_do(who: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", CLAIM, who], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ok, nice = json.loads(done.stdout.strip().splitlines()[-1])
    # As this user: back at 0 where the system allows it (here, as root: it does), and
    # otherwise the same refusal as an unprivileged process's.
    if who == "as_this_user" and _may_raise_priority():
        assert (ok, nice) == (True, 0) and "RAY_worker_niceness" not in done.stderr
    else:
        assert (ok, nice) == (False, 15)
        (line,) = [ln for ln in done.stderr.splitlines() if "RAY_worker_niceness=0" in ln]
        assert line.startswith("CallActor 3 runs at nice 15"), line
