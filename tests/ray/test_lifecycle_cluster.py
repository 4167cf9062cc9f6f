"""A real ``ray start --head`` with Ray's token authentication, used as a user would:
``ray job submit`` of an app run by ``relay-actors run`` with its credentials from
``SIGNALWIRE_CREDENTIALS_FILE`` (on the head only), a call driven from the emulator,
``relay-actors status``, ``ray job stop`` (drain, clear lines), and the checks that the
token shows nowhere in Ray's jobs API or actor listings; the handler's log records reach
``ray job logs`` at the app's level (INFO, not DEBUG), each with its app, node and call id;
a rolling upgrade submitted as a second job (``--upgrade``) takes the app over.

The cluster runs on a loopback address of its own (127.0.0.x), every port chosen free,
in a temp dir of its own (``RAY_TMPDIR``); every process it started is found by that
temp dir in its environment and killed by pid afterwards. No in-process Ray here.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from free_ports import free_port

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS
from relay_actors.ray_runtime.cpu_priority import NICENESS

BIN = Path(sys.executable).parent
APP = """
import logging

from relay_actors import RelayClient
from relay_actors.ray_runtime import RayOptions

log = logging.getLogger("lifeapp")

client = RelayClient(contexts=["office"], scheme="ws", max_active_calls=10,
                     ray_options=RayOptions(min_call_actors=1, max_call_actors=1))


@client.on_call
async def on_call(call):
    log.info("answering the caller")
    log.debug("a detail below the app's level")
    await call.answer()
    await call.hangup()
"""


@dataclass
class Cluster:
    ip: str
    gcs: str
    dashboard: str
    token: str
    tmp: Path
    env: dict[str, str]

    def http(self, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.dashboard}{path}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
        )


def cluster_env(tmp: Path) -> dict[str, str]:
    """The environment of a test cluster's processes: this venv first, Ray's files in
    ``tmp``, token auth from ``tmp/auth_token``, none of the caller's Ray/SignalWire settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SIGNALWIRE_"))}
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '')}",
        RAY_TMPDIR=str(tmp),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(tmp / "auth_token"),
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        RAY_JOB_STOP_WAIT_TIME_S="30",
    )
    return env


def _free_port(ip: str) -> int:
    # (`ray start`'s ports: see free_ports)
    return free_port(ip, first=20_000)


def _wait(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except Exception:  # not up yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.25)  # polling another process's state, with a deadline


def stop_cluster(procs: list[subprocess.Popen[Any]], tmp: Path) -> None:
    """SIGTERM what we started (newest first), then SIGKILL every process our cluster
    left (found by our RAY_TMPDIR, by pid)."""
    for proc in reversed(procs):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    for pid in _our_pids(tmp):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _our_pids(tmp: Path) -> list[int]:
    """Processes whose environment carries our RAY_TMPDIR: everything our cluster started."""
    marker = f"RAY_TMPDIR={tmp}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class EmulatorThread:
    """The emulator on an event loop of its own thread (the tests here are synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.emu = Emulator(ping_interval=0, durations=FAST_DURATIONS)

    def on_loop(self, fn: Any, *args: Any) -> Any:
        async def call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(30)

    def __enter__(self) -> EmulatorThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.emu.__aenter__(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.emu.__aexit__(None, None, None), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def emulator_server() -> Iterator[EmulatorThread]:
    with EmulatorThread() as emu:
        yield emu


@pytest.fixture(scope="module")
def cluster(emulator_server: EmulatorThread) -> Iterator[Cluster]:
    tmp = Path(tempfile.mkdtemp(prefix="relay-raycl-"))
    ip = f"127.0.0.{100 + os.getpid() % 120}"
    token = secrets.token_hex(32)
    (tmp / "auth_token").write_text(token)
    (tmp / "auth_token").chmod(0o600)
    creds = tmp / "signalwire.env"
    creds.write_text(
        f"SIGNALWIRE_PROJECT_ID={emulator_server.emu.project}\n"
        f"SIGNALWIRE_API_TOKEN={emulator_server.emu.token}\n"
        f"SIGNALWIRE_SPACE={emulator_server.emu.host}\n"
    )
    creds.chmod(0o600)
    env = cluster_env(tmp)
    head_env = {**env, "SIGNALWIRE_CREDENTIALS_FILE": str(creds)}
    ports = {
        flag: _free_port(ip)
        for flag in (
            "--port",
            "--dashboard-port",
            "--ray-client-server-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--metrics-export-port",
            "--runtime-env-agent-port",
            "--node-manager-port",
            "--object-manager-port",
        )
    }
    args = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--node-ip-address={ip}",
        f"--dashboard-host={ip}",
    ]
    args += [f"{flag}={port}" for flag, port in ports.items()]
    args += ["--num-cpus=2", f"--temp-dir={tmp}", "--disable-usage-stats", "--include-dashboard=true"]
    log = open(tmp / "ray-start.log", "w")  # closed in finally
    head = subprocess.Popen(args, env=head_env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    handle = Cluster(
        ip, f"{ip}:{ports['--port']}", f"http://{ip}:{ports['--dashboard-port']}", token, tmp, env
    )
    try:
        try:
            _wait(lambda: "Ray runtime started" in (tmp / "ray-start.log").read_text(), 90, "ray start")
        except TimeoutError:
            said = (tmp / "ray-start.log").read_text()[-3000:]
            raise TimeoutError(f"ray start did not start; it said:\n{said}") from None
        _wait(lambda: handle.http("/api/version"), 60, "the dashboard")
        yield handle
    finally:
        stop_cluster([head], tmp)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _job_logs(cluster: Cluster, job: str) -> str:
    return str(json.loads(cluster.http(f"/api/jobs/{job}/logs")).get("logs", ""))


def _job_status(cluster: Cluster, job: str) -> str:
    return str(json.loads(cluster.http(f"/api/jobs/{job}")).get("status", ""))


def test_missing_ray_token_is_one_clear_line(cluster: Cluster) -> None:
    env = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    started = time.monotonic()
    result = cluster.run("relay-actors", "status", "--address", cluster.gcs, env=env)
    assert result.returncode == 1
    assert time.monotonic() - started < 20, "no 20 s of retries"
    ours = [line for line in result.stderr.splitlines() if line.startswith("relay-actors: error:")]
    assert len(ours) == 1 and "set RAY_AUTH_MODE=token" in ours[0] and cluster.gcs in ours[0], result.stderr
    assert "Traceback" not in result.stderr and "previous Ray instance" not in result.stderr

    wrong = cluster.tmp / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    result = cluster.run(
        "relay-actors",
        "status",
        "--address",
        cluster.gcs,
        env={**cluster.env, "RAY_AUTH_TOKEN_PATH": str(wrong)},
    )
    ours = [line for line in result.stderr.splitlines() if line.startswith("relay-actors: error:")]
    assert result.returncode == 1 and len(ours) == 1 and "refused this process's Ray token" in ours[0]


def test_job_submit_with_a_credentials_file(cluster: Cluster, emulator_server: EmulatorThread) -> None:
    app_dir = cluster.tmp / "app"
    app_dir.mkdir()
    (app_dir / "lifeapp.py").write_text(APP)
    job = f"relaytest-{secrets.token_hex(4)}"
    submit = cluster.run(
        "ray", "job", "submit", "--address", cluster.dashboard, "--submission-id", job,
        "--working-dir", str(app_dir), "--no-wait", "--",
        "relay-actors", "run", "lifeapp:client", "--ray", "--drain-timeout", "10",
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    ready = _wait(
        lambda: [line for line in _job_logs(cluster, job).splitlines() if "relay-actors: ready:" in line],
        90,
        "the ready line",
    )
    line = ready[0]
    assert "app lifeapp on Ray" in line and f"connected to {emulator_server.emu.host}" in line, line
    assert "contexts office" in line and "1 shard," in line and f"CallActors per node {cluster.ip}:1" in line

    core = emulator_server.emu.core
    (call_id,) = emulator_server.on_loop(core.inject_calls, "office", 1)

    def handled() -> bool:
        calls = {c["call_id"]: c for c in emulator_server.on_loop(core.list_calls)}
        return calls[call_id]["state"] == "ended" and calls[call_id]["end_reason"] == "hangup"

    _wait(handled, 30, "the call answered and hung up by the app")

    # The handler's INFO record, in the job's logs, with its app, node and call id.
    def logged() -> list[str]:
        return [line for line in _job_logs(cluster, job).splitlines() if "answering the caller" in line]

    (record,) = _wait(logged, 30, "the handler's log line in ray job logs")
    assert f"INFO app=lifeapp node={cluster.ip} call_id={call_id} lifeapp: answering the caller" in record

    status = cluster.run("relay-actors", "status", "lifeapp", "--address", cluster.gcs, "--json")
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["state"] == "running" and state["max_active_calls"] == 10
    assert [s["connected"] for s in state["shards"]] == [True]
    assert state["nodes"] == {cluster.ip: {"call_actors": 1, "calls": 0}}

    secret = emulator_server.emu.token
    assert secret not in cluster.http("/api/jobs/")
    assert secret not in cluster.http("/api/v0/actors?detail=1&limit=1000")
    listed = cluster.run("ray", "list", "actors", "--detail", "--address", cluster.dashboard)
    assert listed.returncode == 0 and "relay:lifeapp:router" in listed.stdout, listed.stderr
    assert secret not in listed.stdout
    assert secret not in _job_logs(cluster, job)

    stop = cluster.run("ray", "job", "stop", "--address", cluster.dashboard, job)
    assert stop.returncode == 0, stop.stderr
    _wait(lambda: _job_status(cluster, job) in ("STOPPED", "SUCCEEDED", "FAILED"), 60, "the job to end")
    logs = _job_logs(cluster, job)
    assert "relay-actors: SIGTERM: draining" in logs and "relay-actors: stopped" in logs, logs[-2000:]
    assert "Traceback" not in logs, logs[-3000:]
    assert "a detail below the app's level" not in logs, "the app logs at INFO: no DEBUG records"
    apps = cluster.run("relay-actors", "status", "--address", cluster.gcs, "--json")
    assert apps.returncode == 0 and json.loads(apps.stdout) == [], apps.stdout


def test_credentials_in_a_runtime_env_are_loudly_refused_as_a_route(cluster: Cluster) -> None:
    job = f"relayenv-{secrets.token_hex(4)}"
    runtime_env = json.dumps({"env_vars": {"SIGNALWIRE_API_TOKEN": "not-a-real-token"}})
    submit = cluster.run(
        "ray", "job", "submit", "--address", cluster.dashboard, "--submission-id", job,
        "--runtime-env-json", runtime_env, "--",
        "python", "-c", "from relay_actors.ray_runtime import ensure_ray; ensure_ray()",
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    logs = _job_logs(cluster, job)
    assert "WARNING: SIGNALWIRE_API_TOKEN arrived through this job's runtime_env" in logs, logs[-2000:]
    assert "SIGNALWIRE_CREDENTIALS_FILE" in logs


#: A local Ray of our own, and what runs at which priority on it (see cpu_priority).
LOCAL_RAY_PROBE = """
import glob, json, os
import psutil, ray
from relay_actors.ray_runtime import ensure_ray

def nice(pid):
    tids = [int(t.rsplit("/", 1)[1]) for t in glob.glob(f"/proc/{pid}/task/*")]
    return sorted({os.getpriority(os.PRIO_PROCESS, tid) for tid in tids})

@ray.remote
class Carrier:
    def pid(self):
        return os.getpid()

out = {"started": ensure_ray(), "address": ray.get_runtime_context().gcs_address}
actor = Carrier.remote()
out["actor"] = nice(ray.get(actor.pid.remote(), timeout=60))
for proc in psutil.Process().children(recursive=True):
    try:
        pid, argv = proc.pid, proc.cmdline()
        kinds = ("DashboardAgent", "log_monitor.py", "raylet/raylet", "gcs_server")
        kind = next((k for k in kinds if any(k in a for a in argv[:3])), None)
        if kind:
            out.setdefault(kind, []).extend(nice(pid))
    except (OSError, psutil.Error):
        pass
print(json.dumps(out))
ray.shutdown()
"""


def test_a_local_ray_of_our_own_is_our_own(cluster: Cluster) -> None:
    """Not the cluster ``ray start`` left running; and on it the actors carrying calls
    outrank Ray's monitoring daemons (Ray's default put its workers at nice 15, below them)."""
    result = subprocess.run(
        [sys.executable, "-c", LOCAL_RAY_PROBE],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cluster.tmp,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    address = out["address"]
    assert out["started"] is True and address != cluster.gcs and address.startswith("127.0.0.1:")
    assert out["actor"] == [0], out
    assert set(out["DashboardAgent"]) == set(out["log_monitor.py"]) == {NICENESS}, out
    assert set(out["raylet/raylet"]) == set(out["gcs_server"]) == {0}, out


def test_rolling_upgrade_as_ray_jobs(cluster: Cluster, emulator_server: EmulatorThread) -> None:
    """v1 and v2 of an app submitted as jobs, the second with ``--upgrade``: the v1 job hands
    over and succeeds; calls then go to v2, whose handler lines are in the v2 job's logs."""
    jobs = {}
    for version in ("v1", "v2"):
        app_dir = cluster.tmp / f"upgrade-{version}"
        app_dir.mkdir()
        (app_dir / "upgapp.py").write_text(APP.replace("answering the caller", f"answering as {version}"))
        jobs[version] = f"upg{version}-{secrets.token_hex(3)}"
        extra = ["--upgrade"] if version == "v2" else []
        submit = cluster.run(
            "ray", "job", "submit", "--address", cluster.dashboard, "--submission-id", jobs[version],
            "--working-dir", str(app_dir), "--no-wait", "--",
            "relay-actors", "run", "upgapp:client", "--ray", "--drain-timeout", "20", *extra,
        )  # fmt: skip
        assert submit.returncode == 0, submit.stderr
        _wait(lambda v=version: "relay-actors: ready:" in _job_logs(cluster, jobs[v]), 90, f"{version} ready")
    assert "(upgraded: generation 1)" in _job_logs(cluster, jobs["v2"])
    _wait(lambda: _job_status(cluster, jobs["v1"]) == "SUCCEEDED", 30, "the v1 job to hand over and end")
    v1_logs = _job_logs(cluster, jobs["v1"])
    assert "relay-actors: handed over: app upgapp was upgraded to generation 1" in v1_logs, v1_logs[-2000:]

    core = emulator_server.emu.core
    (call_id,) = emulator_server.on_loop(core.inject_calls, "office", 1)

    def logged() -> list[str]:
        return [line for line in _job_logs(cluster, jobs["v2"]).splitlines() if call_id in line]

    (line,) = _wait(logged, 30, "the v2 handler's line in the v2 job's logs")
    assert f"call_id={call_id} lifeapp: answering as v2" in line, line
    stop = cluster.run("ray", "job", "stop", "--address", cluster.dashboard, jobs["v2"])
    assert stop.returncode == 0, stop.stderr
    _wait(lambda: "relay-actors: stopped" in _job_logs(cluster, jobs["v2"]), 60, "the v2 job to stop the app")
    apps = cluster.run("relay-actors", "status", "--address", cluster.gcs, "--json")
    assert apps.returncode == 0 and json.loads(apps.stdout) == [], apps.stdout
