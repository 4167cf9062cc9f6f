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

from . import eventloop, logcontext
from .client import RelayClient
from .errors import RelayError, unwrap_remote
from .metrics import serve_local_metrics
from .ray_runtime import RayOptions, app_status, detach_ray, list_apps, sanitize_app_name, stop_app
from .ray_runtime.ray_attach import gcs_address, ship_module_by_value

__all__ = ["load_client", "run_main", "status_main", "stop_main"]

log = logging.getLogger("relay_actors.app_commands")


def say(line: str) -> None:
    print(f"relay-actors: {line}", flush=True)


def fail(exc: BaseException, state: str = "") -> int:
    """One line on stderr for the errors a user can act on, then what state the app is in;
    the traceback only at debug level (``--log-level debug``). Exit status 1."""
    exc = unwrap_remote(exc)
    log.debug("the error in full", exc_info=exc)
    text = exc.message if isinstance(exc, RelayError) else str(exc) or type(exc).__name__
    print(f"relay-actors: error: {text}{f' ({state})' if state else ''}", file=sys.stderr, flush=True)
    return 1


# --- run ------------------------------------------------------------------------------------


def load_client(target: str) -> tuple[RelayClient, str]:
    """Import ``module[:attr]`` (from the working directory too) and return its client and
    the module's name. Without ``:attr``, the module must hold exactly one RelayClient.

    Raises:
        RelayError: ``argument`` (a file path, a module that is not there, a name that is
            not a RelayClient: the message says the right form and lists the module's
            clients) or ``import_failed`` (the module raised while importing, e.g. a syntax error).
    """
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise RelayError(
            "argument", f"expected MODULE[:CLIENT] such as examples.ivr.app:client, not {target!r}"
        )
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        dotted = module_name.removesuffix(".py").strip("./").replace(os.sep, ".").replace("/", ".")
        raise RelayError(
            "argument",
            f"{target!r} is a file path; run takes a module name, as python -m does: "
            f"relay-actors run {dotted}{':' + attr if attr else ''} (from the directory that holds "
            f"{module_name.split('/')[0]!r})",
        )
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise _import_failed(module_name, exc) from None  # the module is there; one of its imports is not
        raise RelayError(
            "argument",
            f"no module named {exc.name!r} here ({Path.cwd()}): run from the directory that holds "
            f"{exc.name.split('.')[0]!r} (for the examples, the repository's root) or add that "
            "directory to PYTHONPATH",
        ) from None
    except RelayError:
        raise  # the module's RelayClient(...) refused its settings: that message says what to fix
    except Exception as exc:  # whatever the app's module raised while importing
        raise _import_failed(module_name, exc) from None
    clients = sorted(name for name, v in vars(module).items() if isinstance(v, RelayClient))
    have = f"{module_name} has {', '.join(f'{module_name}:{n}' for n in clients) or 'no RelayClient'}"
    if attr:
        client = getattr(module, attr, None)
        if not isinstance(client, RelayClient):
            what = "does not exist" if client is None else f"is a {type(client).__name__}, not a RelayClient"
            raise RelayError("argument", f"{module_name}.{attr} {what}; {have}")
        return client, module_name
    if len(clients) != 1:
        raise RelayError("argument", f"{module_name} holds {len(clients)} RelayClients, name one: {have}")
    return getattr(module, clients[0]), module_name


def _import_failed(module_name: str, exc: BaseException) -> RelayError:
    """One line for a module that raised on import: what and where (file:line)."""
    log.debug("importing %s failed", module_name, exc_info=exc)
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}:{exc.lineno}"
        return RelayError("import_failed", f"{module_name} does not import: {exc.msg} at {where}")
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
    return RelayError("import_failed", f"{module_name} does not import: {type(exc).__name__}: {exc}{where}")


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
    parser.add_argument(
        "--standby-connections",
        action="store_true",
        help="a warm standby beside each connection actor on Ray (one more process per shard): "
        "calls flow again ~0.1 s after the serving process dies, instead of ~0.8 s",
    )
    parser.add_argument("--min-call-actors", type=int, help="CallActor pool minimum on Ray")
    parser.add_argument("--max-call-actors", type=int, help="CallActor pool maximum on Ray")
    parser.add_argument("--placement", help='"spread", or a custom resource CallActors are pinned to')
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="port of the app's Prometheus endpoint, in-process (on 127.0.0.1) and on Ray (default "
        "RELAY_METRICS_PORT, else 9478; 0: any free port; -1: none)",
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
    # Every line with its call_id / message_id, in-process as in the CallActors on Ray.
    logcontext.install()
    logging.basicConfig(level=args.log_level.upper(), format=logcontext.RUN_LOG_FORMAT, force=True)
    # What a failure leaves behind, said after its line: ready_seen[0] once serving.
    ready_seen = [False]
    try:
        client, module_name = load_client(args.target)
        task = _task(module_name, args.task) if args.task else None
        metrics_server, metrics_where = None, ""
        if args.ray or args.address or client.runtime == "ray":
            client.configure_ray(_ray_options(args, client.ray_options, module_name))
            ship_module_by_value(module_name)
        else:  # the router serves an app's metrics on Ray; in-process, this process does
            app = sanitize_app_name(module_name.rsplit(".", 1)[-1])
            client._host.app = app  # the app= of its log lines, as on Ray
            metrics_server, metrics_where = serve_local_metrics(client, args.metrics_port, app=app)
        try:
            last = eventloop.run(_serve(client, args.drain_timeout, task, metrics_where, ready_seen))
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
    except (RelayError, ValueError, ImportError, ConnectionError) as exc:
        detach_ray()  # (the error line is the last: nothing of the actors' after it)
        return fail(exc, _state_after_failure(args, ready_seen[0]))
    except KeyboardInterrupt:
        last = None
    say(last or "stopped")
    return 0


def _state_after_failure(args: argparse.Namespace, served: bool) -> str:
    if served:
        return "the app stopped"
    if args.upgrade:
        return "nothing was deployed: the running generation, if any, is untouched and still serving"
    return "the app did not start"


def _ray_options(args: argparse.Namespace, options: RayOptions, module_name: str) -> RayOptions:
    """The client's RayOptions with what the command line says; the app is named after
    the module unless the client or ``--app`` names it."""
    changes: dict[str, Any] = {"join": args.join or options.join, "upgrade": args.upgrade or options.upgrade}
    if args.standby_connections:
        changes["standby_connections"] = True
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
    ready_seen: list[bool] | None = None,
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
        if ready_seen is not None:
            ready_seen[0] = True
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
        _shards_table(s["shards"]),
        "",
        _call_actors_table(s["call_actors"]),
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


def _shards_table(shards: list[dict[str, Any]]) -> str:
    return _table(
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
            for r in shards
        ],
    )


def _call_actors_table(call_actors: list[dict[str, Any]]) -> str:
    return _table(
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
            for r in call_actors
        ],
    )


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
