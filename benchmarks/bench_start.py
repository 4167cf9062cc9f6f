"""Where the Ray runtime's start-up time goes: process started → session receiving.

    python benchmarks/bench_start.py [--rounds 3] [--paths fresh,ray,job]

Paths (each round runs them in turn, each in a new process, against one emulator):

* ``fresh``: a driver on a machine with no Ray: ``ray.init`` of a local Ray of its own,
  then the app (router, 2 CallActors, 1 connection actor), then one call offered and
  answered. The steps come from the driver (``RayRuntime.start_steps``) and the
  connection actor (``start_took``: its start-up state machine, see shard_startup).
* ``ray``: Ray's own start for comparison: the same ``ray.init``, then one actor
  created and called (what any app pays at least).
* ``job``: ``relay-actors run mod:client --ray --address …`` against a cluster that is
  already up (``ray start --head``, token auth, started once before the rounds):
  from ``Popen`` to its ``ready:`` line; then a driver of the same kind
  (``--address``) for the steps.

Every time is seconds since the process was started (``time.monotonic()``, one clock
for every process of the machine). Medians over the rounds are shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# A script beside this one (python puts the script's directory on the path).
from bench_clients import http, runner_env

from relay_actors.emulator import EmulatorProcess

BIN = Path(sys.executable).parent
CONTEXT = "bench-start"
APP_MODULE = f"""
from relay_actors import RelayClient
from relay_actors.ray_runtime import RayOptions

client = RelayClient(
    contexts=["{CONTEXT}"],
    runtime="ray",
    ray_options=RayOptions(connections=1, min_call_actors=2, max_call_actors=2, call_actor_cpus=0.01),
)


@client.on_call
async def on_call(call):
    await call.answer()
    await call.hangup()
"""


def one_shard_app(app: str, address: str | None = None) -> Any:
    """The Ray shape these benchmarks start: 1 connection actor, 2 CallActors (as bench_clients' ray1)."""
    from relay_actors.ray_runtime import RayOptions

    return RayOptions(
        app=app, connections=1, min_call_actors=2, max_call_actors=2, call_actor_cpus=0.01, address=address
    )


# --- the child processes ---------------------------------------------------------------


def child_fresh(t0: float, address: str | None) -> dict[str, Any]:
    """A driver starting the app (on a local Ray of its own unless ``address``)."""
    steps: list[tuple[str, float]] = [("python up", time.monotonic())]
    from relay_actors import RelayClient

    steps.append(("relay_actors imported", time.monotonic()))
    import ray

    steps.append(("ray imported", time.monotonic()))

    async def run() -> dict[str, Any]:
        answered = asyncio.Event()
        client = RelayClient(
            contexts=[CONTEXT], runtime="ray", ray_options=one_shard_app(f"start{os.getpid()}", address)
        )

        @client.on_call
        async def on_call(call: Any) -> None:
            await call.answer()
            await call.hangup()

        await client.connect()
        assert client._ray is not None
        steps.extend(getattr(client._ray, "start_steps", []))  # (not in a checkout before them)
        steps.append(("connect() returned", time.monotonic()))
        # The first call: offered by the parent (it watches the emulator), answered here.
        print("CONNECTED", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        steps.append(("first call answered", time.monotonic()))
        stats = await client.ray_stats()
        shard = stats["connections"][0]
        began = float(shard.get("start_began") or 0.0)
        for step, took in (shard.get("start_took") or {}).items():
            steps.append((f"  shard: {step} done", began + took))
        if began:
            steps.append(("  shard: start-up began", began))
        answered.set()
        await client.disconnect()
        return {"steps": sorted(((name, t - t0) for name, t in steps), key=lambda s: s[1])}

    try:
        return asyncio.run(run())
    finally:
        if address is None:
            ray.shutdown()


def child_ray(t0: float) -> dict[str, Any]:
    """Ray's own start: the driver's ``ray.init`` (as ours does it) and one actor's first reply."""
    steps: list[tuple[str, float]] = [("python up", time.monotonic())]
    import ray

    from relay_actors.ray_runtime.ray_attach import ensure_ray

    steps.append(("ray imported", time.monotonic()))
    ensure_ray()
    steps.append(("ray.init done", time.monotonic()))

    @ray.remote(num_cpus=0)
    class Nothing:
        def ping(self) -> int:
            return 1

    actor = Nothing.remote()  # type: ignore[attr-defined]
    ray.get(actor.ping.remote())
    steps.append(("one actor's first reply", time.monotonic()))
    ray.shutdown()
    return {"steps": [(name, t - t0) for name, t in steps]}


def child_main(args: argparse.Namespace) -> int:
    if args.child == "ray":
        result = child_ray(args.t0)
    else:
        result = child_fresh(args.t0, args.address)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# --- the parent ----------------------------------------------------------------------


def _answered(emu: EmulatorProcess) -> int:
    return int(http("GET", f"{emu.control_url}/stats")["calls"].get("answered", 0))


def _ended(emu: EmulatorProcess) -> int:
    return int(http("GET", f"{emu.control_url}/stats")["call_state_transitions"].get("ended", 0))


def run_child(
    emu: EmulatorProcess, env: dict[str, str], kind: str, address: str | None = None
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind]
    if address:
        cmd += ["--address", address]
    stderr = open(os.path.join(env["RAY_TMPDIR"], f"{kind}-stderr.log"), "a")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*cmd, "--t0", repr(t0)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        for line in proc.stdout:
            if line.startswith("CONNECTED"):
                ended = _ended(emu)
                http("POST", f"{emu.control_url}/calls", {"context": CONTEXT, "count": 1})
                deadline = time.monotonic() + 60
                while _ended(emu) <= ended and time.monotonic() < deadline:
                    time.sleep(0.01)
                proc.stdin.write("go\n")
                proc.stdin.flush()
            elif line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line[len("RESULT ") :])
                result["steps"].append(("process exited", 0.0))
                proc.wait(120)
                result["steps"][-1] = ("process exited", time.monotonic() - t0)
                return result
        raise RuntimeError(f"{kind}: no result (exit {proc.wait(120)})")
    finally:
        stderr.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


class HeadNode:
    """``ray start --head`` on a loopback address of its own, with token auth (as a user's cluster)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="relay-start-"))
        self.ip = f"127.0.0.{150 + os.getpid() % 80}"
        (self.tmp / "auth_token").write_text(secrets.token_hex(32))
        (self.tmp / "auth_token").chmod(0o600)
        self.env = {k: v for k, v in env.items() if not k.startswith("RAY_")}
        self.env.update(
            PATH=f"{BIN}:{env.get('PATH', '')}",
            RAY_TMPDIR=str(self.tmp),
            RAY_USAGE_STATS_ENABLED="0",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.tmp / "auth_token"),
        )
        with socket.socket() as sock:
            sock.bind((self.ip, 0))
            port = sock.getsockname()[1]
        self.gcs = f"{self.ip}:{port}"
        self.log = open(self.tmp / "ray-start.log", "w")
        self.proc = subprocess.Popen(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--block",
                f"--node-ip-address={self.ip}",
                f"--port={port}",
                "--num-cpus=2",
                f"--temp-dir={self.tmp}",
                "--disable-usage-stats",
                "--include-dashboard=false",
            ],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
        )
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (self.tmp / "ray-start.log").read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("ray start --head did not come up")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        marker = f"RAY_TMPDIR={self.tmp}".encode()
        for entry in Path("/proc").iterdir():  # what the cluster left (by our RAY_TMPDIR), by pid
            if entry.name.isdigit():
                try:
                    if marker in (entry / "environ").read_bytes().split(b"\0"):
                        os.kill(int(entry.name), signal.SIGKILL)
                except OSError:
                    continue
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_job(emu: EmulatorProcess, head: HeadNode) -> dict[str, Any]:
    """``relay-actors run mod:client --ray --address GCS``: Popen → its ready line."""
    (head.tmp / "benchstart_app.py").write_text(APP_MODULE)
    env = {**runner_env(emu), **head.env, "PYTHONPATH": f"{head.tmp}:{os.environ.get('PYTHONPATH', '')}"}
    app = f"job{os.getpid()}x{time.monotonic_ns() % 100000}"
    cmd = [str(BIN / "relay-actors"), "run", "benchstart_app:client", "--address", head.gcs, "--app", app]
    cmd += ["--metrics-port", "-1", "--drain-timeout", "1"]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=head.tmp
    )
    assert proc.stdout is not None
    ready = float("nan")
    try:
        for line in proc.stdout:
            if "ready: app" in line:
                ready = time.monotonic() - t0
                break
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    return {"steps": [("ready line", ready)]}


def show(title: str, rounds: list[dict[str, Any]]) -> None:
    print(f"\n{title} (seconds since the process started; median of {len(rounds)}, min-max)")
    names: list[str] = []
    for r in rounds:
        for name, _ in r["steps"]:
            if name not in names:
                names.append(name)
    order = {
        name: statistics.median(dict(r["steps"]).get(name, float("inf")) for r in rounds) for name in names
    }
    for name in sorted(names, key=lambda n: order[n]):
        values = [dict(r["steps"])[name] for r in rounds if name in dict(r["steps"])]
        print(f"  {name:<28} {statistics.median(values):7.3f}   ({min(values):.3f}-{max(values):.3f})")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paths", default="fresh,ray,job")
    parser.add_argument("--child", choices=["fresh", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)
    paths = args.paths.split(",")
    results: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    with EmulatorProcess(["--ping-interval", "0", "--tls"]) as emu:
        env = runner_env(emu)
        env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="relay-start-local-")
        head = HeadNode(env) if {"job"} & set(paths) else None
        try:
            for _ in range(args.rounds):
                for path in paths:
                    try:
                        if path == "job":
                            assert head is not None
                            job = run_job(emu, head)
                            steps = run_child(emu, head.env | runner_env(emu) | head.env, "fresh", head.gcs)
                            job["steps"] += [(f"  driver: {n}", t) for n, t in steps["steps"]]
                            results[path].append(job)
                        else:
                            results[path].append(run_child(emu, env, path))
                    except RuntimeError as exc:  # (ray.init gives up after 30 s on a machine this busy)
                        print(f"{path}: a round failed: {exc}", flush=True)
        finally:
            if head is not None:
                head.stop()
            shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    titles = {
        "fresh": "fresh local Ray: ray.init + app + first call",
        "ray": "Ray's own start: ray.init + one actor",
        "job": "cluster already up: relay-actors run mod:client --address (and a driver's steps)",
    }
    for path in paths:
        if results[path]:
            show(titles[path], results[path])
    return 0


if __name__ == "__main__":
    sys.exit(main())
