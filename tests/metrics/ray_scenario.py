"""A Ray scenario for the metrics tests, run as its own process (pytest may hold another Ray).

Starts a local Ray on 127.0.0.1 in ``--temp-dir`` with the dashboard (it writes
Prometheus' service discovery file) and metrics reported every second, an
in-process emulator, and ``RelayClient(runtime="ray")``. It then injects
``--calls`` inbound calls, pushes one malformed frame (a protocol violation)
and drops the WebSocket once (a reconnect and a resume), waits until every
handler completed, and prints one JSON line (``READY {...}``) with what it did
and where Ray's metrics are. It keeps everything up until stdin closes (or
``--hold`` seconds pass), then stops the app, Ray and the emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time


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


async def main(args: argparse.Namespace) -> None:
    _env(args.temp_dir)
    import ray

    from relay_actors import Call, RelayClient
    from relay_actors.emulator import Emulator
    from relay_actors.emulator.testing import FAST_DURATIONS
    from relay_actors.ray_runtime import RayOptions

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS) as emu:
        options = RayOptions(
            app=args.app,
            min_call_actors=2,
            max_call_actors=2,
            init_kwargs={"_temp_dir": args.temp_dir, "include_dashboard": True, "dashboard_port": 0},
        )
        client = RelayClient(
            project=emu.project,
            token=emu.token,
            host=emu.host,
            scheme="ws",
            contexts=["office"],
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

        await client.connect()
        timings["connect"] = time.monotonic() - t0

        async def completed() -> int:
            st = await client.ray_stats()
            return sum(a.get("handlers_completed", 0) for a in st["call_actors"] if isinstance(a, dict))

        emu.core.inject_calls("office", args.calls)

        async def all_done() -> bool:
            return await completed() >= args.calls

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
        stats = await client.ray_stats()
        nodes = [
            {"ip": n["NodeManagerAddress"], "metrics_port": n["MetricsExportPort"]}
            for n in ray.nodes()
            if n.get("Alive")
        ]
        report = {
            "app": args.app,
            "calls": args.calls,
            "budget": args.budget,
            "temp_dir": ray.get_runtime_context().gcs_address and args.temp_dir,
            "session_dir": ray._private.worker._global_node.get_session_dir_path(),
            "nodes": nodes,
            "stats": stats,
            "timings": timings,
        }
        print("READY " + json.dumps(report, default=str), flush=True)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), args.hold)
        except asyncio.TimeoutError:
            pass
        await client.disconnect()
    ray.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--app", default="metrics")
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--hold", type=float, default=120.0)
    asyncio.run(main(parser.parse_args()))
