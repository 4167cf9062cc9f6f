"""The chaos suite's plain logic: a seeded fault schedule, the invariants and the table.

No Ray and no sockets here: ``benchmarks/chaos.py`` runs the schedule against a
multi-node Ray cluster and feeds what it observed (the emulator's journal, the
handlers' records, samples of the answered calls) to the checks below, which are
unit-tested by feeding them data.

Invariants (each is a count; every one must be 0):

- ``over_limit``: samples where the emulator had more calls answered than
  ``max_active_calls``.
- ``events_lost`` / ``events_twice``: per call, what the handler saw against what the
  emulator sent (distinct event ids). A call whose CallActor died (kill -9, node
  removed) or whose session the server retired may have seen a prefix only; it must
  still see nothing twice and nothing out of order.
- ``handled_twice``: a call whose handler started more than once (re-homed calls with
  ``recovered`` excepted).
- ``after_end``: a client request on a call after the runtime ended it (a client
  ``calling.end`` with reason ``error``).
- ``healthy_ended``: calls the runtime ended although their CallActor, session and
  handler were fine (a blip must never end a healthy call).
- ``unacked``: events a live session still waits an ack for after quiescence.
- ``leaked``: calls or records left anywhere after quiescence.
"""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COUNTED_COMMANDS",
    "DEFAULT_KINDS",
    "FAULT_KINDS",
    "RECORDED_TYPES",
    "Fault",
    "LimitMonitor",
    "Report",
    "call_trace",
    "check_events",
    "check_starts",
    "commands_after_end",
    "commands_twice",
    "make_schedule",
    "render_table",
    "runtime_ended",
    "sent_events",
]

#: Every fault kind, with its weight in the random part of a schedule (node removal
#: costs a node restart: rarer).
FAULT_KINDS: dict[str, float] = {
    "kill_connection": 1.0,
    "kill_router": 1.0,
    "kill_call_actor": 1.0,
    "reset_links": 1.0,
    "ws_drop": 1.0,
    "disconnect_resume": 1.0,
    "disconnect_restart": 0.7,
    "refuse_handshakes": 0.7,
    "remove_node": 0.3,
    "handler_fault": 1.0,
    "burst": 0.5,
    # Process pauses (SIGSTOP for 2-4 s, then SIGCONT): a GC pause, a frozen VM, a stall.
    "pause_connection": 1.0,
    "pause_router": 1.0,
    "pause_call_actor": 1.0,
    # Compound faults: a second one while the runtime recovers from the first.
    # A connection actor killed, then the router 0.2-0.4 s later (while the shard starts).
    "kill_connection_then_router": 1.0,
    # A CallActor killed, then a connection actor 0.1-0.3 s later (while the shard applies
    # the lost-actor policy to the CallActor's calls).
    "kill_call_actor_then_connection": 1.0,
    # A CallActor paused (2-4 s), and 0.3-0.8 s into the pause the WebSocket dropped: the
    # resumed session redelivers what the stalled CallActor has not acknowledged.
    "pause_call_actor_and_ws_drop": 1.0,
    # A connection actor paused (2-4 s), and the router killed during the pause.
    "pause_connection_and_kill_router": 1.0,
    # The router killed, then a CallActor 0.1-0.3 s later (no health loop sees it restart).
    "kill_router_then_call_actor": 1.0,
    # The WebSocket dropped, then its connection actor killed 0.05-0.25 s later (while it
    # reconnects and resumes).
    "ws_drop_then_kill_connection": 1.0,
    # A connection actor killed, and killed again as soon as its new process is up (a
    # crash during start-up: the rebuild, the resume).
    "kill_connection_twice": 0.7,
}

#: The kinds a schedule draws from when none are given (the CI run and ``benchmarks/chaos.py``).
DEFAULT_KINDS: tuple[str, ...] = tuple(FAULT_KINDS)

#: Call commands a repeat of which the chaos invariants count (one identity each:
#: method, call and control id).
COUNTED_COMMANDS = ("calling.answer", "calling.end", "calling.play")

#: Event types the chaos handler records (the offer's ``created`` state excluded).
RECORDED_TYPES = ("calling.call.state", "calling.call.play")


class Recorder:
    """What handlers saw, reported from the CallActors (the chaos suite and the Ray tests
    run it as a Ray actor): events per call, starts, errors, finishes and free-form notes;
    :func:`check_events` and :func:`check_starts` read its :meth:`dump`."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self.started: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.done: dict[str, int] = defaultdict(int)
        #: ``commands[call_id][method]``: how many times the handler itself sent it.
        self.commands: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.notes: list[Any] = []

    def event(self, call_id: str, event_type: str, state: str) -> None:
        self.events[call_id].append((event_type, state))

    def start(self, call_id: str, info: dict[str, Any]) -> None:
        self.started[call_id].append(info)

    def error(self, call_id: str, code: str) -> None:
        self.errors[call_id].append(code)

    def command(self, call_id: str, method: str) -> None:
        """The handler is about to send ``method`` on ``call_id`` (e.g. ``calling.answer``)."""
        self.commands[call_id][method] += 1

    def finish(self, call_id: str) -> None:
        self.done[call_id] += 1

    def note(self, value: Any) -> None:
        self.notes.append(value)

    def any_started(self, call_ids: list[str]) -> bool:
        return any(cid in self.started for cid in call_ids)

    def dump(self) -> dict[str, Any]:
        return {
            "events": dict(self.events),
            "started": dict(self.started),
            "errors": dict(self.errors),
            "done": dict(self.done),
            "commands": {cid: dict(methods) for cid, methods in self.commands.items()},
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Fault:
    """One step of a schedule: ``kind``, a ``pick`` to choose its target among the
    candidates at run time (``pick % len(candidates)``), and the ``pause`` (s) of
    steady load before it."""

    index: int
    kind: str
    pick: int
    pause: float


def make_schedule(
    seed: int, count: int, kinds: Sequence[str] | None = None, pause: tuple[float, float] = (0.3, 1.5)
) -> list[Fault]:
    """A reproducible schedule of ``count`` faults: the same seed gives the same list.

    Every kind appears once (in a seeded order) before kinds are drawn by weight, so a
    schedule of ``len(kinds)`` faults or more covers them all. No ``kinds``: the
    :data:`DEFAULT_KINDS`."""
    chosen = list(kinds or DEFAULT_KINDS)
    unknown = [k for k in chosen if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; known: {sorted(FAULT_KINDS)}")
    rng = random.Random(seed)
    first = chosen[:]
    rng.shuffle(first)
    weights = [FAULT_KINDS[k] for k in chosen]
    order = first[:count] + rng.choices(chosen, weights, k=max(0, count - len(first)))
    return [
        Fault(i, kind, rng.randrange(1 << 30), round(rng.uniform(*pause), 3)) for i, kind in enumerate(order)
    ]


class LimitMonitor:
    """Samples of the number of answered calls against the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.samples = 0
        self.over = 0
        self.peak = 0
        self.over_at: list[tuple[float, int]] = []

    def sample(self, answered: int, at: float = 0.0) -> None:
        self.samples += 1
        self.peak = max(self.peak, answered)
        if answered > self.limit:
            self.over += 1
            if len(self.over_at) < 20:
                self.over_at.append((at, answered))


def sent_events(
    journal: Mapping[str, Iterable[Mapping[str, Any]]], types: Sequence[str] = RECORDED_TYPES
) -> dict[str, list[tuple[str, str]]]:
    """Per call, the distinct events (by event id) of ``types`` the emulator sent over
    any session (the journal's ``out`` frames), without the offer's ``created`` state."""
    seen: set[str] = set()
    per_call: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for entries in journal.values():
        for entry in entries:
            frame = entry["frame"]
            if entry["dir"] != "out" or frame.get("method") != "signalwire.event":
                continue
            if frame["id"] in seen:
                continue
            seen.add(frame["id"])
            outer = frame.get("params") or {}
            if outer.get("event_type") not in types:
                continue
            params = outer.get("params") or {}
            state = params.get("call_state") or params.get("state") or ""
            if state == "created":
                continue
            per_call[params.get("call_id", "")].append((outer["event_type"], state))
    return dict(per_call)


def check_events(
    sent: Mapping[str, Sequence[tuple[str, str]]],
    seen: Mapping[str, Sequence[tuple[str, str]]],
    disturbed: Iterable[str] = (),
    calls: Iterable[str] | None = None,
    state_at_start: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Compare what each handler saw with what the emulator sent.

    ``calls``: the calls whose handler started (only they can have seen anything).
    ``disturbed``: calls whose handler may legitimately have stopped seeing events
    (their CallActor died, their session was retired): their events must be a prefix
    of what was sent. ``state_at_start``: the call's state when its handler started; a
    handler cannot see the state events its CallActor applied before it started (an
    offer that waited, then ended while ringing), so those are not expected.
    Returns counts ``lost``, ``twice``, ``out_of_order`` and up to 10 ``examples``."""
    disturbed = set(disturbed)
    lost = twice = disorder = 0
    examples: list[dict[str, Any]] = []
    for cid in calls if calls is not None else seen.keys():
        want = list(sent.get(cid, ()))
        got = list(seen.get(cid, ()))
        initial = (state_at_start or {}).get(cid, "")
        if initial not in ("", "created", "ringing") and ("calling.call.state", initial) in want:
            want = want[want.index(("calling.call.state", initial)) + 1 :]
        if got == want:
            continue
        if cid in disturbed and got == want[: len(got)]:
            continue
        # Multiset difference: what is missing is lost, what is extra came twice (or
        # was never sent); same multiset in another order is a reordering.
        remaining = list(want)
        extra = 0
        for item in got:
            if item in remaining:
                remaining.remove(item)
            else:
                extra += 1
        missing = 0 if cid in disturbed else len(remaining)
        lost += missing
        twice += extra
        if not missing and not extra:
            disorder += 1
        if len(examples) < 10:
            examples.append({"call_id": cid, "sent": want, "seen": got, "disturbed": cid in disturbed})
    return {"lost": lost, "twice": twice, "out_of_order": disorder, "examples": examples}


def check_starts(started: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Calls whose handler started more than once without being a re-homed recovery."""
    return [
        cid
        for cid, starts in started.items()
        if len(starts) > 1 and sum(1 for s in starts if not s.get("recovered")) > 1
    ]


def commands_after_end(journal: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Client requests on a call after the runtime ended it (a client ``calling.end``
    with reason ``error``: a lost CallActor's call, a failed or stuck handler's),
    over every session, in time order. Each: call_id, method, and the seconds since
    the end."""
    frames = [
        (entry["t"], entry["frame"])
        for entries in journal.values()
        for entry in entries
        if entry["dir"] == "in" and str(entry["frame"].get("method", "")).startswith("calling.")
    ]
    frames.sort(key=lambda item: item[0])
    ended: dict[str, float] = {}
    found = []
    for t, frame in frames:
        params = frame.get("params") or {}
        cid = params.get("call_id")
        if not cid:
            continue
        if cid in ended:
            found.append({"call_id": cid, "method": frame["method"], "after": round(t - ended[cid], 3)})
        elif frame["method"] == "calling.end" and params.get("reason") == "error":
            ended[cid] = t
    return found


def commands_twice(
    journal: Mapping[str, Iterable[Mapping[str, Any]]],
    sent_by_handlers: Mapping[str, Mapping[str, int]],
) -> list[dict[str, Any]]:
    """Commands a call got more than once at the server although its handler sent them
    at most once: a retry by the runtime of a command whose first copy had arrived.

    A command is one of :data:`COUNTED_COMMANDS`, identified by method, call and control
    id, counted over every session (a resend after a reconnect lands on another socket);
    the handlers' own sends come from :meth:`Recorder.command`. Each finding: call_id,
    method, control_id, how many the server got and how many the handler sent.
    """
    seen: dict[tuple[str, str, str], int] = defaultdict(int)
    for entries in journal.values():
        for entry in entries:
            frame = entry["frame"]
            method = frame.get("method")
            if entry["dir"] != "in" or method not in COUNTED_COMMANDS:
                continue
            params = frame.get("params") or {}
            cid = params.get("call_id")
            if cid:
                seen[(str(cid), str(method), str(params.get("control_id") or ""))] += 1
    found = []
    for (cid, method, control_id), count in sorted(seen.items()):
        sent = (sent_by_handlers.get(cid) or {}).get(method, 0)
        if count > max(1, sent):
            found.append(
                {"call_id": cid, "method": method, "control_id": control_id, "server": count, "handler": sent}
            )
    return found


def runtime_ended(journal: Mapping[str, Iterable[Mapping[str, Any]]]) -> set[str]:
    """Calls the runtime ended: a client ``calling.end`` with reason ``error`` that the
    server answered 200 (a 404/410 means the call had ended already). Beyond the calls
    of a lost CallActor and of a failed or stuck handler, each is a healthy call a fault
    ended."""
    requests: dict[str, str] = {}
    succeeded: set[str] = set()
    for entries in journal.values():
        for entry in entries:
            frame = entry["frame"]
            params = frame.get("params") or {}
            if (
                entry["dir"] == "in"
                and frame.get("method") == "calling.end"
                and params.get("reason") == "error"
            ):
                requests[frame.get("id", "")] = params.get("call_id", "")
            elif entry["dir"] == "out" and "method" not in frame:
                result = frame.get("result")
                if isinstance(result, dict) and str(result.get("code")) == "200":
                    succeeded.add(frame.get("id", ""))
    return {cid for rid, cid in requests.items() if rid in succeeded}


@dataclass
class Report:
    """What a chaos run found: recovery times per fault kind and the invariants."""

    seed: int
    recoveries: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    #: Seconds from the fault until every component was back (all shards on attached
    #: sessions, the whole CallActor pool).
    restored: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    not_restored: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed_recoveries: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    invariants: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def recovered(self, kind: str, seconds: float | None) -> None:
        if seconds is None:
            self.failed_recoveries[kind] += 1
        else:
            self.recoveries[kind].append(seconds)

    @property
    def faults(self) -> int:
        return sum(len(v) for v in self.recoveries.values()) + sum(self.failed_recoveries.values())

    @property
    def ok(self) -> bool:
        return (
            not any(self.invariants.values())
            and not any(self.failed_recoveries.values())
            and not any(self.not_restored.values())
        )


def _spread(times: Sequence[float]) -> tuple[str, str]:
    if not times:
        return "-", "-"
    return f"{statistics.median(times):.2f}s", f"{max(times):.2f}s"


def render_table(report: Report) -> str:
    """One table: faults by kind (count; median/max seconds until calls flow again and
    until every component is back; failures to recover), then the invariants."""
    kinds = sorted(set(report.recoveries) | set(report.failed_recoveries))
    lines = [
        f"chaos run, seed {report.seed}: {report.faults} faults over {len(kinds)} kinds",
        f"{'fault kind':<20} {'count':>5} {'calls flow: median':>19} {'max':>7}"
        f" {'all back: median':>17} {'max':>7} {'not recovered':>14}",
    ]
    for kind in kinds:
        flow = _spread(report.recoveries.get(kind, []))
        back = _spread(report.restored.get(kind, []))
        failed = report.failed_recoveries.get(kind, 0) + report.not_restored.get(kind, 0)
        count = len(report.recoveries.get(kind, [])) + report.failed_recoveries.get(kind, 0)
        lines.append(
            f"{kind:<20} {count:>5} {flow[0]:>19} {flow[1]:>7} {back[0]:>17} {back[1]:>7} {failed:>14}"
        )
    lines.append(f"{'invariant':<36} {'count':>7}")
    for name, value in report.invariants.items():
        lines.append(f"{name:<36} {value:>7}{'' if value == 0 else '   <-- FAILED'}")
    lines.append("RESULT: " + ("ok" if report.ok else "FAILED"))
    return "\n".join(lines)


def call_trace(journal: Mapping[str, Iterable[Mapping[str, Any]]], call_id: str) -> list[str]:
    """Evidence for a report: every frame about ``call_id`` (and the responses to the
    requests about it), in time order, one line each: time, session, direction, method
    or event type, state or reason or result code, frame id."""
    lines = []
    request_ids: set[str] = set()
    for session, entries in journal.items():
        for entry in entries:
            frame = entry["frame"]
            params: dict[str, Any] = frame.get("params") or {}
            nested = params.get("params")
            inner: dict[str, Any] = nested if isinstance(nested, dict) else params
            if call_id not in (inner.get("call_id"), params.get("call_id")):
                if "method" in frame or frame.get("id") not in request_ids:
                    continue
            elif "method" in frame and entry["dir"] == "in":
                request_ids.add(frame.get("id"))
            what = frame.get("method", "response")
            if what == "signalwire.event":
                what = f"event {params.get('event_type')}"
            detail = inner.get("call_state") or inner.get("state") or inner.get("reason") or ""
            if "method" not in frame:
                result = frame.get("result") or frame.get("error") or {}
                detail = str(result.get("code", "")) if isinstance(result, dict) else ""
            lines.append(
                f"{entry['t']:.3f} {session[-6:]} {entry['dir']:>3} {what} {detail} id={frame.get('id', '')}"
            )
    return sorted(lines)
