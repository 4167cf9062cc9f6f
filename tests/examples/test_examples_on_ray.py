"""The example apps as a user ships them: ``ray job submit`` of ``relay-actors run ... --ray``
to a real two-node cluster (``ray start --head`` and ``ray start --address``, each on a
127.0.0.x address of its own, Ray's token authentication on), the credentials from
``SIGNALWIRE_CREDENTIALS_FILE`` on the head, calls and messages driven from the emulator.
Every example runs as a job at once: the IVR's CallActors on both nodes and its route for
each digit, the dialer's result per number, the responder's reply to every message and its
delivery, the voicemail's stored recordings; the token shows in no job's logs or the jobs API.

The cluster machinery (emulator thread, free ports, job API, finding our processes by their
``RAY_TMPDIR``) is ``tests/ray/test_lifecycle_cluster.py``'s; every process started here is
killed by pid afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from example_apps import (
    IVR_CASES,
    REPO,
    RESPONDER_CONFIG,
    RESPONDER_INBOUND,
    call_state,
    check_dialer_results,
    check_ivr_routes,
    check_responder_replies,
    dialer_config,
    ended,
    ivr_bridged,
    read_lines,
    write_numbers,
)

sys.path.insert(0, str(REPO / "tests" / "ray"))
from test_lifecycle_cluster import (
    BIN,
    Cluster,
    EmulatorThread,
    _free_port,
    _job_logs,
    _job_status,
    _wait,
    cluster_env,
    stop_cluster,
)

pytestmark = pytest.mark.timeout(300)

NODE_PORTS = (
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
)


@pytest.fixture(scope="module")
def emulator_thread() -> Iterator[EmulatorThread]:
    with EmulatorThread() as emu:
        yield emu


@pytest.fixture(scope="module")
def two_nodes(emulator_thread: EmulatorThread) -> Iterator[tuple[Cluster, str]]:
    """(the cluster, the worker's address): a head and one worker on two loopback addresses."""
    tmp = Path(tempfile.mkdtemp(prefix="relay-excl-"))
    base = 20 + os.getpid() % 100
    ip, worker_ip = f"127.0.1.{base}", f"127.0.1.{base + 100}"
    token = secrets.token_hex(32)
    (tmp / "auth_token").write_text(token)
    (tmp / "auth_token").chmod(0o600)
    creds = tmp / "signalwire.json"
    emu = emulator_thread.emu
    creds.write_text(json.dumps({"project": emu.project, "token": emu.token, "space": emu.host}))
    creds.chmod(0o600)
    env = cluster_env(tmp)
    # The head's environment is the driver's: the credentials file, and ws:// to the emulator.
    head_env = {**env, "SIGNALWIRE_CREDENTIALS_FILE": str(creds), "SIGNALWIRE_RELAY_SCHEME": "ws"}
    ports = {flag: _free_port(ip) for flag in ("--port", "--dashboard-port", "--ray-client-server-port")}
    ports.update({flag: _free_port(ip) for flag in NODE_PORTS})
    head_args = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--node-ip-address={ip}",
        f"--dashboard-host={ip}",
    ]
    head_args += [f"{flag}={port}" for flag, port in ports.items()]
    head_args += ["--num-cpus=2", f"--temp-dir={tmp}", "--disable-usage-stats", "--include-dashboard=true"]
    gcs = f"{ip}:{ports['--port']}"
    worker_args = [str(BIN / "ray"), "start", f"--address={gcs}", "--block", f"--node-ip-address={worker_ip}"]
    worker_args += [f"{flag}={_free_port(worker_ip)}" for flag in NODE_PORTS]
    # Two raylets on one machine: a temp dir (sockets, logs) of its own for the worker.
    worker_args += ["--num-cpus=2", f"--temp-dir={tmp}/worker"]
    logs = [open(tmp / name, "w") for name in ("head.log", "worker.log")]  # closed in finally
    procs: list[subprocess.Popen[bytes]] = []
    cluster = Cluster(ip, gcs, f"http://{ip}:{ports['--dashboard-port']}", token, tmp, env)
    try:
        procs.append(
            subprocess.Popen(head_args, env=head_env, stdout=logs[0], stderr=subprocess.STDOUT, cwd=tmp)
        )
        _wait(lambda: "Ray runtime started" in (tmp / "head.log").read_text(), 90, "ray start --head")

        def start_worker() -> None:
            procs.append(
                subprocess.Popen(worker_args, env=env, stdout=logs[1], stderr=subprocess.STDOUT, cwd=tmp)
            )

        start_worker()

        def alive_nodes() -> bool:
            if procs[-1].poll() is not None and len(procs) < 4:
                # `ray start` gives up when the head's GCS is slow to answer it on a loaded
                # machine ("Failed to get node info ... Deadline Exceeded"): up to three starts.
                start_worker()
            listed = cluster.run("ray", "list", "nodes", "--address", cluster.dashboard, "--format", "json")
            return sum(1 for n in json.loads(listed.stdout) if n["state"] == "ALIVE") >= 2

        try:
            _wait(alive_nodes, 120, "two nodes")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {(tmp / 'worker.log').read_text()[-3000:]}") from None
        yield cluster, worker_ip
    finally:
        stop_cluster(procs, tmp)
        for log in logs:
            log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def submit(cluster: Cluster, job: str, *entrypoint: str, env_vars: dict[str, str] | None = None) -> None:
    """``ray job submit`` with the examples as the working directory (settings that are not
    secret may travel in the runtime env; the credentials never do)."""
    app_dir = cluster.tmp / "app"
    if not app_dir.exists():
        shutil.copytree(REPO / "examples", app_dir / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    extra = ["--runtime-env-json", json.dumps({"env_vars": env_vars})] if env_vars else []
    result = cluster.run(
        "ray", "job", "submit", "--address", cluster.dashboard, "--submission-id", job,
        "--working-dir", str(app_dir), "--no-wait", *extra, "--", *entrypoint,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def ready_line(cluster: Cluster, job: str) -> str:
    def find() -> list[str]:
        logs = _job_logs(cluster, job)
        assert _job_status(cluster, job) not in ("FAILED", "STOPPED"), logs[-3000:]
        return [line for line in logs.splitlines() if "relay-actors: ready:" in line]

    return str(_wait(find, 120, f"the ready line of {job}")[0])


def test_every_example_as_a_ray_job(two_nodes: tuple[Cluster, str], emulator_thread: EmulatorThread) -> None:
    cluster, worker_ip = two_nodes
    emu = emulator_thread
    emu.on_loop(emu.emu.core.set_config, {**dialer_config(), **RESPONDER_CONFIG})
    write_numbers(cluster.tmp / "numbers.txt")
    results = cluster.tmp / "results.jsonl"
    replies = cluster.tmp / "responder"
    ivr_job, dialer_job = f"ivr-{secrets.token_hex(3)}", f"dialer-{secrets.token_hex(3)}"
    responder_job, voicemail_job = f"responder-{secrets.token_hex(3)}", f"voicemail-{secrets.token_hex(3)}"
    voicemails = cluster.tmp / "voicemail"
    # Every example at once: the IVR spread over both nodes, the dialer's campaign, the
    # responder and the voicemail beside it.
    submit(
        cluster, ivr_job, "relay-actors", "run", "examples.ivr.app:client", "--ray", "--placement", "spread",
        "--min-call-actors", "2", "--max-call-actors", "2", "--drain-timeout", "10",
    )  # fmt: skip
    settings = {
        "DIALER_NUMBERS": str(cluster.tmp / "numbers.txt"),
        "DIALER_RESULTS": str(results),
        "DIALER_CONCURRENCY": "3",
    }
    submit(
        cluster, dialer_job, "relay-actors", "run", "examples.dialer.app:client", "--ray",
        "--task", "campaign", env_vars=settings,
    )  # fmt: skip

    submit(
        cluster, responder_job, "relay-actors", "run", "examples.sms_responder.app:client", "--ray",
        env_vars={"RESPONDER_DIR": str(replies)},
    )  # fmt: skip
    submit(
        cluster, voicemail_job, "relay-actors", "run", "examples.voicemail.app:client", "--ray",
        env_vars={"VOICEMAIL_DIR": str(voicemails)},
    )  # fmt: skip

    line = ready_line(cluster, ivr_job)
    assert "app ivr on Ray" in line and "contexts office" in line, line
    assert f"{cluster.ip}:1" in line and f"{worker_ip}:1" in line, f"CallActors on both nodes: {line}"
    core = emu.emu.core
    calls: dict[str, str] = {}
    for name, inputs in IVR_CASES.items():

        def inject(inputs: list[dict[str, object]] = inputs) -> str:
            return core.inject_calls("office", 1, inputs=inputs)[0]

        calls[name] = emu.on_loop(inject)
    try:
        for name in ("sales", "support"):
            _wait(lambda n=name: emu.on_loop(ivr_bridged, emu.emu, calls[n]), 60, f"the {name} transfer")
            emu.on_loop(core.hangup, calls[name])
        _wait(lambda: emu.on_loop(ended, emu.emu, list(calls.values())), 60, "every IVR call ended")
    except TimeoutError as exc:
        states = {n: emu.on_loop(call_state, emu.emu, c) for n, c in calls.items()}
        raise AssertionError(f"{exc}: {states}\n{_job_logs(cluster, ivr_job)[-4000:]}") from None
    emu.on_loop(check_ivr_routes, emu.emu, calls)

    status = cluster.run("relay-actors", "status", "ivr", "--address", cluster.gcs, "--json")
    assert status.returncode == 0, status.stderr
    nodes = json.loads(status.stdout)["nodes"]
    assert {ip for ip, n in nodes.items() if n["call_actors"]} == {cluster.ip, worker_ip}, nodes

    _wait(lambda: _job_status(cluster, dialer_job) in ("SUCCEEDED", "FAILED"), 120, "the campaign")
    dialer_logs = _job_logs(cluster, dialer_job)
    assert _job_status(cluster, dialer_job) == "SUCCEEDED", dialer_logs[-3000:]
    assert "task campaign done" in dialer_logs and "relay-actors: stopped" in dialer_logs
    emu.on_loop(check_dialer_results, emu.emu, read_lines(results), 3)

    ready_line(cluster, responder_job)

    def inject_messages() -> dict[str, str | None]:
        inject = emu.emu.core.messaging.inject
        return {n: inject("sms", from_number=n, body=b) for n, b in RESPONDER_INBOUND.items()}

    message_ids = emu.on_loop(inject_messages)
    _wait(lambda: len(read_lines(replies / "replies.jsonl")) >= 3, 60, "three replies")
    check_responder_replies(read_lines(replies / "replies.jsonl"), message_ids)

    ready_line(cluster, voicemail_job)
    callers = ["+15551110001", "+15551110002"]
    left = [emu.on_loop(lambda n=n: core.inject_calls("voicemail", 1, from_number=n)[0]) for n in callers]
    _wait(lambda: len(read_lines(voicemails / "voicemails.jsonl")) >= 2, 60, "two voicemails")
    stored = {v["call_id"]: v for v in read_lines(voicemails / "voicemails.jsonl")}
    assert sorted(stored) == sorted(left) and {v["from"] for v in stored.values()} == set(callers)
    assert all(v["url"].startswith("https://files.emulator.invalid/recordings/") for v in stored.values())

    logs = ""
    for job in (ivr_job, responder_job, voicemail_job):
        stop = cluster.run("ray", "job", "stop", "--address", cluster.dashboard, job)
        assert stop.returncode == 0, stop.stderr
    for job in (ivr_job, responder_job, voicemail_job):
        _wait(
            lambda j=job: _job_status(cluster, j) in ("STOPPED", "SUCCEEDED", "FAILED"), 60, f"{job} to end"
        )
        job_logs = _job_logs(cluster, job)
        assert "relay-actors: stopped" in job_logs and "Traceback" not in job_logs, job_logs[-3000:]
        logs += job_logs
    assert emu.emu.token not in logs + dialer_logs + cluster.http("/api/jobs/")
