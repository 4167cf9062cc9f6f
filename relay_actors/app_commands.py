"""``relay-actors run``, ``status`` and ``stop``: running and operating an app.

``run MODULE[:CLIENT]`` works like ``uvicorn app:app``: it imports the module,
takes its :class:`~relay_actors.RelayClient` with every setting it has, and serves
it in-process or on Ray (``--ray``, ``--address``), printing one ready line.
SIGTERM/SIGINT drain (no new offers; active calls get ``--drain-timeout`` s) and
stop with a line, not a stack dump. ``status`` reads an app's live state from its
actors; ``stop`` drains and stops an app wherever its driver is.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from . import eventloop
from .client import RelayClient
from .errors import RelayError
from .metrics import serve_local_metrics
from .ray_runtime import RayOptions, app_status, list_apps, sanitize_app_name, stop_app
from .ray_runtime.driver import gcs_address, ship_module_by_value

__all__ = ["load_client", "run_main", "status_main", "stop_main"]

log = logging.getLogger("relay_actors.app_commands")


def say(line: str) -> None:
    print(f"relay-actors: {line}", flush=True)


def fail(exc: BaseException) -> int:
    """One line on stderr for the errors a user can act on."""
    print(f"relay-actors: error: {exc}", file=sys.stderr, flush=True)
    return 1


# --- run ------------------------------------------------------------------------------------


def load_client(target: str) -> tuple[RelayClient, str]:
    """Import ``module[:attr]`` (from the working directory too) and return its client and
    the module's name. Without ``:attr``, the module must hold exactly one RelayClient."""
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise RelayError(
            "argument", f"expected MODULE[:CLIENT] such as examples.ivr.app:client, not {target!r}"
        )
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    module = importlib.import_module(module_name)
    if attr:
        client = getattr(module, attr, None)
        if not isinstance(client, RelayClient):
            raise RelayError("argument", f"{module_name}.{attr} is not a RelayClient")
        return client, module_name
    found = [v for v in vars(module).values() if isinstance(v, RelayClient)]
    if len(found) != 1:
        raise RelayError(
            "argument", f"{module_name} holds {len(found)} RelayClients: name one, e.g. {module_name}:client"
        )
    return found[0], module_name


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay-actors run",
        description="Serve a module's RelayClient, keeping every setting it has; the Ray options "
        "given here override its RayOptions.",
    )
    parser.add_argument("target", help="MODULE[:CLIENT], e.g. examples.ivr.app:client")
    parser.add_argument("--ray", action="store_true", help="run on Ray (else as the client says)")
    parser.add_argument(
        "--address", help="Ray cluster to run on (implies --ray; else RAY_ADDRESS or our own)"
    )
    parser.add_argument("--app", help="the app's name on Ray (default: the module's name)")
    parser.add_argument("--join", action="store_true", help="join the app if it already runs (same settings)")
    parser.add_argument(
        "--upgrade",
        action="store_true",
        help="if the app already runs, deploy this code to it as a rolling upgrade (same settings; new "
        "calls go to the new code, the old CallActors drain for up to --drain-timeout s) and take it over",
    )
    parser.add_argument("--connections", type=int, help="connection actors (shards) on Ray")
    parser.add_argument("--min-call-actors", type=int, help="CallActor pool minimum on Ray")
    parser.add_argument("--max-call-actors", type=int, help="CallActor pool maximum on Ray")
    parser.add_argument("--placement", help='"spread", or a custom resource CallActors are pinned to')
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="port of the app's Prometheus endpoint on Ray (default RELAY_METRICS_PORT, else 9478; "
        "0: any free port; -1: none)",
    )
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="seconds for active calls at stop")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("SIGNALWIRE_LOG_LEVEL") or "info",
        help="logging level of the app, its CallActors' too on Ray (default SIGNALWIRE_LOG_LEVEL, else info)",
    )
    parser.add_argument(
        "--task",
        help="a coroutine function of the module, FUNC(client), run once the app is ready; when it "
        "returns the app drains and stops (a batch job, e.g. a dialing campaign)",
    )
    return parser


def run_main(argv: Sequence[str]) -> int:
    args = _run_parser().parse_args(list(argv))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    try:
        client, module_name = load_client(args.target)
        task = _task(module_name, args.task) if args.task else None
        metrics_server, metrics_where = None, ""
        if args.ray or args.address or client.runtime == "ray":
            client.configure_ray(_ray_options(args, client.ray_options, module_name))
            ship_module_by_value(module_name)
        else:  # the router serves an app's metrics on Ray; in-process, this process does
            app = sanitize_app_name(module_name.rsplit(".", 1)[-1])
            metrics_server, metrics_where = serve_local_metrics(client, args.metrics_port, app=app)
        try:
            last = eventloop.run(_serve(client, args.drain_timeout, task, metrics_where))
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
    except (RelayError, ValueError, ImportError, ConnectionError) as exc:
        return fail(exc)
    except KeyboardInterrupt:
        last = None
    say(last or "stopped")
    return 0


def _ray_options(args: argparse.Namespace, options: RayOptions, module_name: str) -> RayOptions:
    """The client's RayOptions with what the command line says; the app is named after
    the module unless the client or ``--app`` names it."""
    changes: dict[str, Any] = {"join": args.join or options.join, "upgrade": args.upgrade or options.upgrade}
    if args.upgrade:
        changes["upgrade_drain_timeout"] = args.drain_timeout
    if args.app or options.app_defaulted:
        changes["app"] = args.app or sanitize_app_name(module_name.rsplit(".", 1)[-1])
    if args.address:
        changes["address"] = args.address
    for name in ("connections", "min_call_actors", "max_call_actors", "metrics_port"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.placement:
        changes["placement"] = "spread" if args.placement == "spread" else {"resource": args.placement}
    return replace(options, **changes)


def _task(module_name: str, name: str) -> Callable[[RelayClient], Awaitable[Any]]:
    """The module's ``--task`` function."""
    task = getattr(sys.modules[module_name], name, None)
    if not inspect.iscoroutinefunction(task):
        raise RelayError("argument", f"--task {name}: {module_name}.{name} is not an async function")
    return task


async def _serve(
    client: RelayClient,
    drain_timeout: float,
    task: Callable[[RelayClient], Awaitable[Any]] | None = None,
    metrics_where: str = "",
) -> str | None:
    """Serve until a signal (or the end of ``task``); returns the line to end with, if
    not the usual one (this driver handed its Ray app over to an upgrade)."""
    stopping = asyncio.Event()
    running: list[asyncio.Task[Any]] = []
    runtimes: list[Any] = []

    async def run_task() -> None:
        assert task is not None
        outcome = "failed"
        try:
            await task(client)
            outcome = "done"
        except Exception:
            log.exception("--task %s failed", task.__name__)
            raise
        finally:
            if not stopping.is_set():
                say(f"task {task.__name__} {outcome}: draining")
            stopping.set()

    async def ready() -> None:
        runtimes.append(client._ray)
        say(await _ready_line(client, metrics_where))
        if task is not None:
            running.append(asyncio.create_task(run_task()))
        loop = asyncio.get_running_loop()

        def on_signal(name: str) -> None:
            if not stopping.is_set():
                say(f"{name}: draining (no new calls; up to {drain_timeout:g} s for active calls)")
            stopping.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig.name)

    try:
        await client.serve(stopping, drain_timeout=drain_timeout, on_ready=ready)
    finally:
        for started in running:
            started.cancel()
    for started in running:
        if not started.cancelled() and started.exception() is not None:
            name = getattr(task, "__name__", "?")
            raise RelayError("task_failed", f"--task {name}: {started.exception()}")
    return next((rt.handed_over for rt in runtimes if rt is not None and rt.handed_over), None)


async def _ready_line(client: RelayClient, metrics_where: str = "") -> str:
    contexts = ",".join(client.contexts) or "(none)"
    if client.runtime != "ray":
        protocol = client.relay_protocol
        return (
            f"ready: in-process, connected to {client.host} (protocol {protocol}), contexts {contexts}, "
            f"metrics {metrics_where or 'none'}"
        )
    status = await app_status(client.ray_options.name)
    nodes = " ".join(f"{node}:{n['call_actors']}" for node, n in sorted(status["nodes"].items()))
    gcs = gcs_address()
    shards = len(status["shards"])
    runtime = client._ray
    upgraded = (
        f" (upgraded: generation {runtime.generation})" if runtime is not None and runtime.generation else ""
    )
    return (
        f"ready: app {status['app']}{upgraded} on Ray {gcs}, connected to {client.host}, "
        f"contexts {contexts}, "
        f"{shards} shard{'s' * (shards != 1)}, limit {status['max_active_calls']} calls, "
        f"CallActors per node {nodes or '(none)'}, {_metrics(status)}"
    )


def _metrics(status: dict[str, Any]) -> str:
    if status.get("metrics_url"):
        return f"metrics {status['metrics_url']}"
    return f"no metrics endpoint ({status.get('metrics_error') or 'turned off'})"


# --- status ---------------------------------------------------------------------------------


def _status_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay-actors status", description="Show Ray apps and their state.")
    parser.add_argument("app", nargs="?", help="the app (default: list every app)")
    parser.add_argument("--address", help="Ray cluster (else RAY_ADDRESS)")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    parser.add_argument("--watch", type=float, nargs="?", const=2.0, help="refresh every N s (default 2)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each actor")
    return parser


def status_main(argv: Sequence[str]) -> int:
    args = _status_parser().parse_args(list(argv))
    try:
        return eventloop.run(_status(args))
    except RelayError as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return 0


async def _status(args: argparse.Namespace) -> int:
    while True:
        if args.app:
            data: Any = await app_status(args.app, address=args.address, timeout=args.timeout)
        else:
            data = await list_apps(args.address)
        if args.json:
            print(orjson.dumps(data).decode(), flush=True)
        else:
            if args.watch:
                print("\033[2J\033[H", end="")
            print(render_status(data) if args.app else render_apps(data), flush=True)
        if not args.watch:
            return 0
        await asyncio.sleep(args.watch)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *([str(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def render_apps(apps: list[dict[str, Any]]) -> str:
    if not apps:
        return "no relay-actors apps on this cluster"
    rows = [
        [
            a["app"],
            a["state"],
            _age(a.get("created")),
            (a.get("driver") or {}).get("node_ip", "?"),
            ",".join(a.get("contexts") or []),
            a.get("max_active_calls"),
        ]
        for a in apps
    ]
    return _table(["APP", "STATE", "AGE", "DRIVER NODE", "CONTEXTS", "LIMIT"], rows)


def render_status(s: dict[str, Any]) -> str:
    lines = [
        f"app {s['app']}  state {s['state']}  generation {s.get('generation', 0)}"
        f"  age {_age(s.get('created'))}"
        f"  contexts {','.join(s['contexts'] or [])}",
        f"active calls {s['active_calls']} / {s['max_active_calls']} (leased {s['leased']})",
        "",
        _table(
            [
                "SHARD",
                "NODE",
                "CONNECTED",
                "SESSION AGE",
                "RECONNECTS",
                "RESUMES",
                "CALLS",
                "GRANTED",
                "WAITING",
                "PROTOCOL",
            ],
            [
                [
                    r["shard"],
                    r["node"],
                    "yes" if r["connected"] else "NO",
                    _duration(r["session_age"]),
                    r["reconnects"],
                    r["resumes"],
                    r["active_calls"],
                    r["granted"],
                    r["waiting_offers"],
                    r["protocol"],
                ]
                for r in s["shards"]
            ],
        ),
        "",
        _table(
            ["CALLACTOR", "NODE", "GEN", "CALLS", "CAPACITY", "LOAD", "HANDLERS"],
            [
                [
                    r["index"],
                    r["node"],
                    f"{r.get('generation', 0)}{' retiring' if r.get('retiring') else ''}",
                    r["calls"],
                    r["capacity"],
                    f"{100 * r['calls'] / r['capacity']:.0f}%" if r["capacity"] else "-",
                    r["handler_tasks"],
                ]
                for r in s["call_actors"]
            ],
        ),
        "",
        "per node: "
        + (
            ", ".join(
                f"{n}: {v['call_actors']} CallActors, {v['calls']} calls" for n, v in s["nodes"].items()
            )
            or "-"
        ),
        "errors: " + (", ".join(f"{k}={v}" for k, v in s["errors"].items()) or "none"),
        _metrics(s),
    ]
    if s["unreachable"]:
        lines.append("unreachable: " + ", ".join(s["unreachable"]))
    return "\n".join(lines)


def _age(created: Any) -> str:
    return _duration(time.time() - float(created)) if created else "?"


def _duration(value: Any) -> str:
    if value is None:
        return "-"
    seconds = max(0, int(value))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


# --- stop -----------------------------------------------------------------------------------


def _stop_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay-actors stop", description="Drain and stop a Ray app.")
    parser.add_argument("app", help="the app's name (relay-actors status lists them)")
    parser.add_argument("--address", help="Ray cluster (else RAY_ADDRESS)")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="seconds for active calls to end")
    return parser


def stop_main(argv: Sequence[str]) -> int:
    args = _stop_parser().parse_args(list(argv))
    logging.basicConfig(level=logging.WARNING)
    try:
        eventloop.run(
            stop_app(args.app, address=args.address, drain_timeout=args.drain_timeout, progress=say)
        )
    except RelayError as exc:
        return fail(exc)
    return 0
