"""A Ray scenario for the metrics tests, run as its own process (pytest may hold another Ray).

Starts a local Ray on 127.0.0.1 in ``--temp-dir`` (with Ray's metrics agent reporting
every second: the dashboards' "Ray resources" row reads it), an in-process emulator
and two apps on that Ray: ``--app`` (context ``office``, its metrics endpoint on the
port ``RELAY_METRICS_PORT`` or the documented default says) and ``--other-app``
(context ``sales``, endpoint on ``--other-port``). It injects ``--calls`` inbound
calls into the first and ``--other-calls`` into the second, pushes one malformed frame
(a protocol violation) and drops the first app's WebSocket once (a reconnect and a
resume), waits until every handler completed, and prints one JSON line
(``READY {...}``) with what it did and where the metrics are.

Then it reads commands, one per line on stdin, and answers each with ``DONE {...}``:

- ``restart_actor N``: kill CallActor N of the first app (Ray restarts it) and wait
  for the new incarnation to answer;
- ``kill_actor N``: kill CallActor N of the first app for good;
- ``restart_router``: kill the first app's router (Ray restarts it) and wait for it;
- ``stop_other``: stop the second app (its driver's ``disconnect()``).

When stdin closes (or ``--hold`` seconds pass) it stops the apps, Ray and the emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any


def _env(temp_dir: str) -> None:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_metrics_report_interval_ms"] = "1000"
    os.environ["RAY_TMPDIR"] = temp_dir
    os.environ.setdefault("RELAY_METRICS_INTERVAL", "0.5")


async def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _say(kind: str, body: dict[str, Any]) -> None:
    print(f"{kind} " + json.dumps(body, default=str), flush=True)


async def main(args: argparse.Namespace) -> None:
    _env(args.temp_dir)
    import ray

    from relay_actors import Call, RelayClient
    from relay_actors.emulator import Emulator
    from relay_actors.emulator.testing import FAST_DURATIONS
    from relay_actors.ray_runtime import RayOptions
    from relay_actors.ray_runtime.actor_messages import NAMESPACE, actor_name
    from relay_actors.ray_runtime.app_control import app_status, metrics_endpoint

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS) as emu:

        def make(app: str, context: str, metrics_port: int | None) -> RelayClient:
            options = RayOptions(
                app=app,
                min_call_actors=2,
                max_call_actors=2,
                metrics_port=metrics_port,
                init_kwargs={"_temp_dir": args.temp_dir, "include_dashboard": True, "dashboard_port": 0},
            )
            client = RelayClient(
                project=emu.project,
                token=emu.token,
                host=emu.host,
                scheme="ws",
                contexts=[context],
                runtime="ray",
                max_active_calls=args.budget,
                ray_options=options,
            )

            @client.on_call
            async def handle(call: Call) -> None:
                await call.answer()
                play = await call.play_tts("hi")
                await play.wait(timeout=5)
                await call.hangup()

            return client

        client = make(args.app, "office", None)
        other = make(args.other_app, "sales", args.other_port)
        await client.connect()
        await other.connect()
        timings["connect"] = time.monotonic() - t0

        async def completed(c: RelayClient) -> int:
            st = await c.ray_stats()
            return sum(a.get("handlers_completed", 0) for a in st["call_actors"] if isinstance(a, dict))

        emu.core.inject_calls("office", args.calls)
        emu.core.inject_calls("sales", args.other_calls)

        async def all_done() -> bool:
            return await completed(client) >= args.calls and await completed(other) >= args.other_calls

        await _wait(all_done, 60, "handlers")
        timings["calls"] = time.monotonic() - t0

        protocol = client.relay_protocol
        emu.core.push_raw(protocol, "this is not json")

        async def violated() -> bool:
            conn = (await client.ray_stats())["connections"][0]
            return any(k.startswith("conn.violation.") for k in conn)

        await _wait(violated, 20, "the protocol violation")
        emu.core.drop(protocol)

        async def resumed() -> bool:
            conn = (await client.ray_stats())["connections"][0]
            return conn.get("conn.resumes", 0) >= 1 and bool(conn.get("conn.connected"))

        await _wait(resumed, 30, "the resume")
        timings["resume"] = time.monotonic() - t0
        report = {
            "app": args.app,
            "other_app": args.other_app,
            "metrics": await metrics_endpoint(args.app),
            "other_metrics": await metrics_endpoint(args.other_app),
            "status": await app_status(args.app),
            "session_dir": ray._private.worker._global_node.get_session_dir_path(),
            "stats": await client.ray_stats(),
            "timings": timings,
        }
        _say("READY", report)

        def call_actor(idx: int) -> Any:
            return ray.get_actor(actor_name(args.app, "call", idx), namespace=NAMESPACE)

        async def command(line: str) -> dict[str, Any]:
            verb, *rest = line.split()
            if verb == "restart_actor":
                handle = call_actor(int(rest[0]))
                before = (await handle.stats.remote())["incarnation"]
                ray.kill(handle, no_restart=False)

                async def restarted() -> bool:
                    try:
                        now = await asyncio.wait_for(handle.stats.remote(), 2)
                    except Exception:
                        return False
                    return bool(now["incarnation"] != before)

                await _wait(restarted, 60, "the CallActor's restart")
                return {"incarnation_before": before}
            if verb == "restart_router":
                router = ray.get_actor(actor_name(args.app, "router"), namespace=NAMESPACE)
                before = (await router.stats.remote())["pid"]
                ray.kill(router, no_restart=False)

                async def router_back() -> bool:
                    try:
                        await asyncio.wait_for(router.ready.remote(), 2)
                        now = await asyncio.wait_for(router.stats.remote(), 2)
                    except Exception:
                        return False
                    return bool(now["pid"] != before)

                await _wait(router_back, 60, "the router's restart")
                return {"metrics": await metrics_endpoint(args.app)}
            if verb == "kill_actor":
                ray.kill(call_actor(int(rest[0])), no_restart=True)
                return {}
            if verb == "stop_other":
                await other.disconnect()
                stopped.append(other)
                return {}
            raise ValueError(f"unknown command {line!r}")

        stopped: list[RelayClient] = []
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + args.hold
        while time.monotonic() < deadline:
            try:
                line = await asyncio.wait_for(
                    loop.run_in_executor(None, sys.stdin.readline), deadline - time.monotonic()
                )
            except asyncio.TimeoutError:
                break
            if not line:
                break
            try:
                _say("DONE", {"command": line.strip(), **await command(line)})
            except Exception as exc:
                _say("DONE", {"command": line.strip(), "error": repr(exc)})
        if other not in stopped:
            await other.disconnect()
        await client.disconnect()
    ray.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--app", default="metrics")
    parser.add_argument("--other-app", default="metrics2")
    parser.add_argument("--other-port", type=int, default=0)
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--other-calls", type=int, default=4)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--hold", type=float, default=120.0)
    asyncio.run(main(parser.parse_args()))
