"""First contact with ``relay-actors run``: each expected failure ends in one line on stderr
that names the setting (and where it came from) and the state the app is in, exit status 1,
no traceback; the lines a newcomer reads are right (``--help``, a busy metrics port, logs).

Real processes (``python -m relay_actors.cli``), the real emulator where a server is needed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from relay_actors import logcontext
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS

REPO = Path(__file__).resolve().parents[1]

APP = """
from relay_actors import RelayClient

client = RelayClient(contexts=["office"])
backup = RelayClient(contexts=["backup"])
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALWIRE_", "RAY_ADDRESS"))}
    env.update(SIGNALWIRE_PROJECT_ID="p", SIGNALWIRE_API_TOKEN="t", SIGNALWIRE_RELAY_SCHEME="ws")
    env.update(SIGNALWIRE_SPACE="127.0.0.1:9", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay_actors.cli", "run", *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The failure's line: the last, exit 1, no traceback; before it only the log lines of the
    attempts (a failure found before connecting has nothing before it)."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("relay-actors: error: "), proc.stderr
    assert not [x for x in lines[:-1] if x.startswith("relay-actors:")], proc.stderr
    assert "RELAY error" not in lines[-1]  # not the prefix of a usage error
    return lines[-1]


def test_a_file_path_suggests_the_module_name() -> None:
    line = _one_line(_run(["examples/ivr/app.py"], REPO))
    assert "relay-actors run examples.ivr.app" in line and "the app did not start" in line


def test_a_misspelt_client_lists_the_modules_clients(tmp_path: Path) -> None:
    (tmp_path / "twoapp.py").write_text(APP)
    line = _one_line(_run(["twoapp:clint"], tmp_path))
    assert "twoapp.clint does not exist" in line and "twoapp:backup, twoapp:client" in line
    line = _one_line(_run(["twoapp"], tmp_path))
    assert "holds 2 RelayClients" in line and "twoapp:backup, twoapp:client" in line


def test_outside_the_repository_root_says_where_to_run_from(tmp_path: Path) -> None:
    # This checkout's relay_actors importable, its examples not (as for a user elsewhere).
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "relay_actors").symlink_to(REPO / "relay_actors")
    (tmp_path / "elsewhere").mkdir()
    proc = _run(["examples.ivr.app:client"], tmp_path / "elsewhere", PYTHONPATH=str(tmp_path / "lib"))
    line = _one_line(proc)
    assert line.count("relay-actors:") == 1, proc.stderr
    assert "no module named 'examples'" in line and "repository's root" in line and "PYTHONPATH" in line


def test_a_syntax_error_in_upgrade_code_leaves_the_running_generation(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("from relay_actors import RelayClient\nclient = RelayClient(\n")
    line = _one_line(_run(["broken:client", "--ray", "--upgrade"], tmp_path))
    assert "broken does not import" in line and f"{tmp_path / 'broken.py'}:" in line
    assert "the running generation, if any, is untouched and still serving" in line


def test_configuration_from_the_credentials_file_names_the_file(tmp_path: Path) -> None:
    creds = tmp_path / "creds.env"
    creds.write_text("SIGNALWIRE_API_TOKEN=t\n")
    creds.chmod(0o600)
    (tmp_path / "oneapp.py").write_text("from relay_actors import RelayClient\nclient = RelayClient()\n")
    env = _env(SIGNALWIRE_CREDENTIALS_FILE=str(creds))
    del env["SIGNALWIRE_PROJECT_ID"]
    proc = subprocess.run(
        [sys.executable, "-m", "relay_actors.cli", "run", "oneapp:client"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    line = _one_line(proc)
    assert "SIGNALWIRE_PROJECT_ID" in line and f"SIGNALWIRE_CREDENTIALS_FILE {str(creds)!r}" in line


async def test_a_token_rejected_from_the_credentials_file_says_so(tmp_path: Path) -> None:
    """The token came from SIGNALWIRE_CREDENTIALS_FILE: the one line says that, not the env."""
    creds = tmp_path / "creds.env"
    (tmp_path / "oneapp.py").write_text(
        "from relay_actors import RelayClient\nclient = RelayClient(contexts=['office'])\n"
    )
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS) as emu:
        creds.write_text(f"SIGNALWIRE_PROJECT_ID={emu.project}\nSIGNALWIRE_API_TOKEN=wrong-token\n")
        creds.chmod(0o600)
        proc = await asyncio.to_thread(
            _run,
            ["oneapp:client"],
            tmp_path,
            60,
            SIGNALWIRE_SPACE=emu.host,
            SIGNALWIRE_CREDENTIALS_FILE=str(creds),
        )
    line = _one_line(proc)
    assert "rejected the credentials" in line and "wrong-token" not in proc.stderr + proc.stdout
    assert f"SIGNALWIRE_API_TOKEN in SIGNALWIRE_CREDENTIALS_FILE {str(creds)!r}" in line
    assert "(environment)" in line.split("SIGNALWIRE_PROJECT_ID")[0] or "SIGNALWIRE_PROJECT_ID in" in line
    assert "the app did not start" in line


async def test_a_busy_metrics_port_names_the_option(tmp_path: Path) -> None:
    (tmp_path / "oneapp.py").write_text(
        "from relay_actors import RelayClient\nclient = RelayClient(contexts=['office'])\n"
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with Emulator(ping_interval=0, durations=FAST_DURATIONS) as emu:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "relay_actors.cli", "run", "oneapp:client", "--metrics-port", str(port),
                cwd=tmp_path, env=_env(SIGNALWIRE_SPACE=emu.host, SIGNALWIRE_PROJECT_ID=emu.project,
                                       SIGNALWIRE_API_TOKEN=emu.token),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            try:
                assert proc.stdout is not None
                ready = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
                while "ready:" not in ready:
                    ready = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
                assert f"port {port}" in ready and "--metrics-port" in ready and "RELAY_METRICS_PORT" in ready
            finally:
                proc.terminate()
                await asyncio.wait_for(proc.wait(), 30)


def test_metrics_port_help_is_not_only_for_ray() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "relay_actors.cli", "run", "--help"],
        env=_env(), capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    text = " ".join(out.split())
    assert "Prometheus endpoint, in-process (on 127.0.0.1) and on Ray" in text


def test_message_handler_lines_carry_the_message_id() -> None:
    """In-process lines name the message (``grep <message_id>``) as the call's name the call."""
    logcontext.install()
    formatter = logging.Formatter(logcontext.RUN_LOG_FORMAT)

    def line() -> str:
        record = logging.getLogger("myapp").makeRecord("myapp", logging.INFO, __file__, 1, "hello", (), None)
        return formatter.format(record)

    async def in_message_handler() -> str:
        logcontext.bind(message="m-1", app_name="sms")
        return line()

    async def in_call_handler() -> str:
        logcontext.bind(call="c-1", app_name="ivr")
        return line()

    assert "app=sms call_id=- message_id=m-1 myapp: hello" in asyncio.run(in_message_handler())
    assert "app=ivr call_id=c-1 myapp: hello" in asyncio.run(in_call_handler())


def test_status_without_a_cluster_found_says_address(tmp_path: Path) -> None:
    """No --address, no RAY_ADDRESS and no ``ray start`` under Ray's temp dir: one line that says
    how to name the cluster (with one, ``status`` finds it as ``ray status`` does)."""
    env = _env(RAY_TMPDIR=str(tmp_path))
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "relay_actors.cli", "status", "ivr"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    line = _one_line(proc)
    assert "no Ray cluster found" in line and "--address" in line and "RAY_ADDRESS" in line
