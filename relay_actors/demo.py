"""``relay-actors demo``: the embedded RELAY emulator plus a small IVR, on a local Ray.

It starts the emulator in this process (real WebSockets on 127.0.0.1), starts a local
Ray kept on loopback (or attaches to ``RAY_ADDRESS``), and serves the IVR with
``RelayClient(runtime="ray")``: the connection actor owns the socket, the router admits
calls, the handlers run in CallActors. It shows its progress, then what a phone
operator looks at: calls handled per node, the offer-to-answer latency, errors, and
where the metrics and the dashboard are. It exits non-zero if any flow failed, so it
doubles as a smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from . import eventloop
from .backoff import Backoff
from .call import Call
from .client import RelayClient
from .emulator import Emulator
from .errors import RelayError
from .message import Message
from .metrics import serve_local_metrics
from .ray_runtime import RayOptions
from .ray_runtime.app_control import metrics_endpoint
from .ray_runtime.ray_attach import detach_ray, node_ips

log = logging.getLogger("relay_actors.demo")

DESCRIPTION = """\
Run the demo: the embedded RELAY emulator (real WebSockets on 127.0.0.1) and a small IVR
(answer, greeting, digit prompt, recording, hang-up) served on a local Ray (or RAY_ADDRESS):
a connection actor owns the socket, a router admits calls, CallActors run the handlers.
The driver also dials out and sends messages, and an inbound message is answered from a
CallActor. With --runtime local the same handlers run in this process.

It shows its progress, then calls handled per node, the offer-to-answer latency (p50/p99),
errors, and where the metrics and the dashboard are; it exits 1 if any flow failed."""

PHONE = {"type": "phone", "params": {"from_number": "+15550100001", "to_number": "+15550100002"}}
DURATIONS = {"play": 0.2, "record": 0.3, "collect": 0.2, "ring": 0.05, "answer": 0.02, "message": 0.02}
DASHBOARD = "dashboards/grafana/relay-actors-overview.json"


async def ivr(call: Call) -> None:
    """The demo's call flow: what a user's ``on_call`` handler looks like."""
    await call.answer()
    greeting = await call.play_tts("Welcome to relay-actors.")
    await greeting.wait(timeout=10)
    menu = await call.prompt_tts("Press a key.", {"digits": {"max": 1, "digit_timeout": 5}})
    choice = await menu.wait(timeout=10)
    if choice.params.get("result", {}).get("type") != "digit":
        raise RuntimeError(f"no digit collected: {choice.params}")
    recording = await call.record({"beep": True, "end_silence_timeout": 1})
    await recording.wait(timeout=10)
    if not recording.url:
        raise RuntimeError("the recording has no URL")
    await call.hangup()
    await call.wait_for_ended(timeout=10)


class Progress:
    """The demo's progress: a live ``rich`` bar per kind of work on a terminal; elsewhere
    (``ray job logs``, a pipe) one plain line per quarter, so logs stay short."""

    WIDTH = 30

    def __init__(self, totals: dict[str, int], out: TextIO | None = None) -> None:
        self.totals = {k: v for k, v in totals.items() if v}
        self.done: Counter[str] = Counter()
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self._quarter = -1
        self._last = ""
        self._live: RichProgress | None = None
        self._tasks: dict[str, TaskID] = {}
        if self.tty:
            self._live = RichProgress(
                TextColumn("{task.description:<9}"),
                BarColumn(bar_width=self.WIDTH),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.out, force_terminal=True),
                auto_refresh=False,  # redrawn on each change, from our loop: no thread
            )
            self._tasks = {k: self._live.add_task(k, total=v) for k, v in self.totals.items()}
            self._live.start()

    def set(self, name: str, value: int) -> None:
        if self.done[name] != value:
            self.done[name] = value
            self.draw()

    def draw(self, final: bool = False) -> None:
        if self._live is not None:
            for name, task in self._tasks.items():
                self._live.update(task, completed=min(self.done[name], self.totals[name]))
            self._live.refresh()
            if final:
                self._live.stop()
                self._live = None
            return
        if self.tty:
            return  # the bar was stopped
        total = sum(self.totals.values()) or 1
        done = sum(min(self.done[k], v) for k, v in self.totals.items())
        filled = self.WIDTH * done // total
        parts = "  ".join(f"{k} {min(self.done[k], v)}/{v}" for k, v in self.totals.items())
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {100 * done // total:3d}%  {parts}"
        if (final or 4 * done // total > self._quarter) and line != self._last:
            self._quarter = 4 * done // total
            self._last = line
            self.out.write(line + "\n")
            self.out.flush()


@dataclass
class Report:
    """What the demo measured."""

    runtime: str
    ok: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    #: Node → (CallActors there, calls handled there).
    nodes: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Seconds from each offer (``calling.call.receive`` sent) to its ``calling.answer``.
    offer_to_answer: list[float] = field(default_factory=list)
    metrics: str = "?"


def offer_to_answer(journal: dict[str, list[dict[str, Any]]]) -> list[float]:
    """Per answered inbound call, seconds from the offer the emulator sent to the answer it
    received, over every session's journal."""
    offered: dict[str, float] = {}
    answered: dict[str, float] = {}
    for entries in journal.values():
        for entry in entries:
            for frame in _frames(entry["frame"]):
                params = frame.get("params")
                if not isinstance(params, dict):
                    continue
                if entry["dir"] == "out" and params.get("event_type") == "calling.call.receive":
                    call_id = (params.get("params") or {}).get("call_id")
                    if call_id:
                        offered.setdefault(call_id, entry["t"])
                elif entry["dir"] == "in" and frame.get("method") == "calling.answer":
                    if params.get("call_id"):
                        answered.setdefault(params["call_id"], entry["t"])
    return sorted(answered[c] - offered[c] for c in answered if c in offered)


def _frames(frame: Any) -> Iterable[dict[str, Any]]:
    for item in frame if isinstance(frame, list) else [frame]:
        if isinstance(item, dict):
            yield item


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of sorted ``values``."""
    if not values:
        return float("nan")
    rank = max(1, -(-len(values) * q // 100))
    return values[int(rank) - 1]


async def _until(predicate: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("demo condition not met in time")
        await asyncio.sleep(0.1)


async def run_demo(calls: int, rate: float, dials: int, messages: int, tls: bool, runtime: str) -> Report:
    report = Report(runtime)
    progress = Progress({"inbound": calls, "dials": dials, "messages": messages, "reply": 1})
    async with Emulator(
        tls=tls, ping_interval=0, durations=DURATIONS, journal_limit=max(5000, 40 * calls)
    ) as emulator:
        demo = _DemoRun(emulator, _demo_client(emulator, tls, runtime, report.counts), report, progress)
        started = time.monotonic()
        print(f"emulator at {emulator.url}; starting the {runtime} runtime ...", flush=True)
        async with demo.client:
            metrics_server = await demo.publish_metrics(started)
            watcher = asyncio.create_task(demo.watch())
            emulator.core.inject_calls("demo", calls, rate=rate)
            await demo.dial_out(dials)
            await demo.send_messages(messages)
            await demo.wait_for_reply_and_calls(calls, rate)
            watcher.cancel()
            report.counts["inbound_completed"] = await demo.refresh()
            progress.draw(final=True)
        if metrics_server is not None:
            metrics_server.shutdown()
        report.offer_to_answer = offer_to_answer(emulator.core.journal.frames())
    counts = report.counts
    report.ok = (
        counts["inbound_completed"] == calls
        and counts["handler_errors"] == 0
        and counts["dialed_answered"] == dials
        and counts["message_delivered"] == messages
        and counts["message_replied"] == 1
    )
    return report


def _demo_client(emulator: Emulator, tls: bool, runtime: str, counts: Counter[str]) -> RelayClient:
    """The demo's client of ``emulator``, serving the IVR and answering inbound messages."""
    client = RelayClient(
        project=emulator.project,
        token=emulator.token,
        host=emulator.host,
        contexts=["demo"],
        scheme="wss" if tls else "ws",
        ca_file=emulator.ca_file,
        backoff=Backoff(initial=0.2, cap=2.0),
        runtime=runtime,
        ray_options=RayOptions(app="demo", min_call_actors=2, max_call_actors=4),
    )

    # The handlers capture only ``runtime``, ``counts`` and ``client``: on Ray they are shipped
    # to the CallActors.
    @client.on_call
    async def on_call(call: Call) -> None:
        await ivr(call)
        if runtime == "local":
            counts["inbound_completed"] += 1

    @client.on_message
    async def on_message(message: Message) -> None:
        # Runs in a CallActor on Ray: ``client`` there is a proxy to the connection actors.
        await client.send_message(
            to_number=message.from_number, from_number=message.to_number, body="got it, thanks"
        )

    return client


@dataclass
class _DemoRun:
    """The demo's phases, run by :func:`run_demo` with the client started."""

    emulator: Emulator
    client: RelayClient
    report: Report
    progress: Progress

    async def refresh(self) -> int:
        """Calls handled so far (and the handler errors), per node on Ray."""
        counts = self.report.counts
        if self.report.runtime == "local":
            counts["handler_errors"] = self.client.stats().get("handler_errors", 0)
            self.report.nodes = {"this process": (0, counts["inbound_completed"])}
            done = counts["inbound_completed"]
        else:
            done = await _ray_refresh(self.client, self.report)
        self.progress.set("inbound", done)
        return done

    async def publish_metrics(self, started: float) -> Any:
        """Serve (local) or find (Ray) the metrics endpoint and say the runtime is up; the local
        metrics server (to shut down at the end) or None."""
        report, metrics_server = self.report, None
        if report.runtime == "local":
            metrics_server, report.metrics = serve_local_metrics(self.client, app="demo")
        else:
            endpoint = await metrics_endpoint("demo")
            report.metrics = endpoint["metrics_url"] or f"none ({endpoint['metrics_error'] or 'off'})"
        print(
            f"{report.runtime} runtime up in {time.monotonic() - started:.1f}s; "
            f"metrics at {report.metrics} while the demo runs",
            flush=True,
        )
        self.progress.draw()
        return metrics_server

    async def watch(self) -> None:
        """Keep the bar moving while the driver dials and sends."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # a slow actor: the next round will do
                log.debug("progress refresh: %s", exc)
            await asyncio.sleep(0.3)

    async def dial_out(self, dials: int) -> None:
        """Dial ``dials`` calls one after the other, hanging up each once answered."""
        counts = self.report.counts
        for _ in range(dials):
            try:
                call: Any = await self.client.dial([[PHONE]], dial_timeout=10)
                counts["dialed_answered"] += 1
                await call.hangup()
            except RelayError as exc:
                log.warning("dial failed: %s", exc)
                counts["dials_failed"] += 1
            self.progress.set("dials", counts["dialed_answered"] + counts["dials_failed"])

    async def send_messages(self, messages: int) -> None:
        """Send ``messages`` messages one after the other, each waited for to its final state."""
        for i in range(messages):
            sent = await self.client.send_message(
                to_number="+15550100002", from_number="+15550100001", body=f"demo message {i}"
            )
            await sent.wait(timeout=10)  # (on Ray too: send_message does not block)
            self.report.counts[f"message_{sent.state}"] += 1
            self.progress.set("messages", i + 1)

    async def wait_for_reply_and_calls(self, calls: int, rate: float) -> None:
        """Inject an inbound message, then wait for its reply and for the ``calls`` inbound calls
        (a warning, not an error, when they take too long: the report shows what is missing)."""
        messaging = self.emulator.core.messaging
        before = messaging.sent
        messaging.inject("demo", body="hello from the far side")

        async def replied() -> bool:
            await self.refresh()
            return messaging.sent > before

        async def all_done() -> bool:
            return await self.refresh() + self.report.counts["handler_errors"] >= calls

        try:
            await _until(replied, 15)
            self.report.counts["message_replied"] += 1
            self.progress.set("reply", 1)
            await _until(all_done, 30 + calls / max(rate, 0.1))
        except TimeoutError:
            log.warning("the demo timed out waiting for its calls and messages")


async def _ray_refresh(client: RelayClient, report: Report) -> int:
    """Calls handled and CallActors per node, and handler errors, from the actors' stats."""
    stats = await client.ray_stats()
    addresses = node_ips()
    nodes: dict[str, list[int]] = {}
    errors = 0
    for actor in stats["call_actors"]:
        node = addresses.get(actor.get("node_id", ""), actor.get("node_id", "?")[:12])
        entry = nodes.setdefault(node, [0, 0])
        entry[0] += 1
        entry[1] += actor.get("handlers_completed", 0)
        errors += actor.get("handler_errors", 0) + actor.get("handler_timeouts", 0)
    report.nodes = {node: (n[0], n[1]) for node, n in sorted(nodes.items())}
    report.counts["handler_errors"] = errors
    return sum(n[1] for n in nodes.values())


def render(report: Report, expected: dict[str, int], elapsed: float) -> str:
    """The summary a phone operator reads."""
    counts = report.counts
    node_rows = [("NODE", "CALLACTORS", "CALLS HANDLED")]
    node_rows += [
        (node, str(actors) if report.runtime == "ray" else "-", str(handled))
        for node, (actors, handled) in report.nodes.items()
    ]
    widths = [max(len(row[i]) for row in node_rows) for i in range(3)]
    table = [f"  {row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}" for row in node_rows]
    latencies = report.offer_to_answer
    latency = (
        f"p50 {1000 * percentile(latencies, 50):.1f} ms, p99 {1000 * percentile(latencies, 99):.1f} ms"
        f" over {len(latencies)} calls (emulator journal: offer sent -> answer received)"
        if latencies
        else "no answered offer"
    )
    errors = {
        "handler errors": counts["handler_errors"],
        "calls not completed": max(0, expected["calls"] - counts["inbound_completed"]),
        "dials failed": counts["dials_failed"],
        "messages not delivered": max(0, expected["messages"] - counts["message_delivered"]),
        "reply missing": 1 - counts["message_replied"],
    }
    total_errors = sum(errors.values())
    lines = [
        "",
        f"calls handled per node ({report.runtime} runtime):",
        *table,
        f"inbound calls completed: {counts['inbound_completed']}/{expected['calls']}, "
        f"dials answered: {counts['dialed_answered']}/{expected['dials']}, "
        f"messages delivered: {counts['message_delivered']}/{expected['messages']}, "
        f"inbound message answered: {counts['message_replied']}/1",
        f"offer -> answer: {latency}",
        f"errors: {total_errors}"
        + (" (" + ", ".join(f"{k} {v}" for k, v in errors.items() if v) + ")" if total_errors else ""),
        "",
        f"metrics: Prometheus text at {report.metrics} while the demo ran"
        " (names: dashboards/METRICS.md; a cluster's: cluster/README.md#metrics)",
        f"dashboard: Grafana, {DASHBOARD} (provisioning: cluster/grafana/provisioning)",
        "",
        f"demo {'OK' if report.ok else 'FAILED'} in {elapsed:.1f}s",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="relay-actors demo",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=20, help="inbound calls to inject (default 20)")
    parser.add_argument("--rate", type=float, default=10.0, help="inbound calls per second (default 10)")
    parser.add_argument("--dials", type=int, default=3, help="outbound calls (default 3)")
    parser.add_argument("--messages", type=int, default=3, help="outbound messages (default 3)")
    parser.add_argument("--tls", action="store_true", help="use wss:// with the emulator's generated CA")
    parser.add_argument(
        "--runtime",
        choices=["ray", "local"],
        default="ray",
        help="ray (default: a local Ray, or RAY_ADDRESS) or local (in-process)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    demo = run_demo(args.calls, args.rate, args.dials, args.messages, args.tls, args.runtime)
    report = eventloop.run(demo)
    if args.runtime == "ray":
        detach_ray()
    expected = {"calls": args.calls, "dials": args.dials, "messages": args.messages}
    print(render(report, expected, time.monotonic() - started), flush=True)
    return 0 if report.ok else 1
