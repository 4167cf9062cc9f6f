"""Chaos run: a seeded schedule of faults against a 3-node local Ray cluster under
steady load through the emulator, with the runtime's promises checked throughout.

    python benchmarks/chaos.py [--seed 1] [--faults 20] [--kinds kill_router,burst,...]

Starts a ``ray.cluster_utils.Cluster`` (head + 2 workers, all on 127.0.0.1, in a
temp dir of its own), an in-process emulator, and an app on Ray with 2 connection
actors, 3 CallActors and a small ``max_active_calls``. Inbound calls arrive at a
steady rate (each is answered, plays a prompt and lives until the caller hangs up);
then the faults of ``relay_actors.chaos.make_schedule(seed, faults)`` are applied
one by one. After each, the run waits for calls to flow again (a probe call whose
handler started: the recovery time) and for the app to be whole again before the
next fault. The number of answered calls is sampled every 25 ms; after the last
fault the load stops and, once quiet, every invariant of ``relay_actors.chaos`` is
checked. Prints one table; exits 1 if an invariant failed or a fault was never
recovered from (the same seed replays the same schedule).

The emulator refuses a second ``calling.answer`` (``strict_commands``). Without
``--kinds`` the schedule draws from ``chaos.DEFAULT_KINDS`` (every kind), process pauses
included (``pause_connection``, ``pause_router``, ``pause_call_actor``: SIGSTOP for 2-4 s,
then SIGCONT; "calls flow" is measured from the SIGSTOP, so a pause that stops calls shows)
and the compound faults, a second fault while the runtime recovers from the first
(``kill_connection_then_router``, ``kill_call_actor_then_connection``,
``pause_call_actor_and_ws_drop``, ``pause_connection_and_kill_router``,
``kill_router_then_call_actor``, ``ws_drop_then_kill_connection``, ``kill_connection_twice``);
``--kinds pause_router,kill_connection`` narrows it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
from ray.cluster_utils import Cluster

from relay_actors import (
    RelayClient,
    chaos,
)
from relay_actors.backoff import Backoff
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS
from relay_actors.errors import RelayError
from relay_actors.ray_runtime import RayOptions
from relay_actors.ray_runtime.actor_messages import NAMESPACE, actor_name

CONTEXT = "office"
RAISE_ON = "+15550000666"
HANG_ON = "+15550000777"
PROBE_TO = "+15550000999"
RECORDER = "chaos-recorder"
RECORDER_NS = "relay_actors_chaos"


# --- what runs in the CallActors (this module is __main__: pickled by value) ------------


_handles: dict[str, Any] = {}


def chaos_handler(rec_name: str) -> Any:
    """Answer, play a prompt, stay until the caller hangs up; report every state/play
    event. Calls to RAISE_ON raise after answering; calls to HANG_ON hang forever."""

    async def handler(call: Any) -> None:
        rec = _handles.get(rec_name)
        if rec is None:
            rec = _handles[rec_name] = ray.get_actor(rec_name, namespace=RECORDER_NS)

        def seen(event: Any) -> None:
            params = event.params
            rec.event.remote(
                call.call_id, event.event_type, params.get("call_state") or params.get("state") or ""
            )

        for event_type in chaos.RECORDED_TYPES:
            call.on(event_type, seen)
        rec.start.remote(
            call.call_id,
            {
                "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id(),
                "recovered": call.recovered,
                "state": call.state,
            },
        )
        try:
            if not call.recovered:
                rec.command.remote(call.call_id, "calling.answer")
                await call.answer()
            if call.to_number == RAISE_ON:
                raise RuntimeError("handler failure on purpose")
            if call.to_number == HANG_ON:
                await asyncio.Event().wait()
            try:
                rec.command.remote(call.call_id, "calling.play")
                play = await call.play_tts("hello")
                await play.wait(timeout=10)
            except RelayError as exc:
                rec.error.remote(call.call_id, exc.failure or exc.code)
            await call.wait_for_ended(timeout=60)
        finally:
            rec.finish.remote(call.call_id)

    return handler


# --- the run ---------------------------------------------------------------------------


class ChaosRun:
    def __init__(self, args: argparse.Namespace, cluster: Cluster, emulator: Emulator) -> None:
        self.args = args
        self.cluster = cluster
        self.emu = emulator
        self.core = emulator.core
        self.report = chaos.Report(seed=args.seed)
        self.monitor = chaos.LimitMonitor(args.limit)
        self.relay: RelayClient | None = None
        self.rec: Any = None
        self.killed_pids: set[int] = set()
        self.removed_nodes: set[str] = set()
        self.retired_calls: set[str] = set()
        #: Calls to a raising or hanging handler: the runtime ends them, as it should.
        self.faulty_calls: set[str] = set()
        #: Calls up when a CallActor was killed or a node removed: the runtime may end them
        #: (the lost-CallActor policy), whether or not their handler had reported yet.
        self.exposed: set[str] = set()
        #: A paused process's SIGCONT, due once the pause is over (see :meth:`pause`).
        self.paused: asyncio.Future[None] | None = None
        self.load_on = asyncio.Event()
        self.injected: list[str] = []
        self.log: list[str] = []

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        self.log.append(line)
        if self.args.verbose:
            print(line, flush=True)

    # --- background: load and sampling -----------------------------------------
    async def load(self) -> None:
        interval = 1.0 / self.args.rate
        while True:
            await self.load_on.wait()
            self.injected += self.core.inject_calls(
                CONTEXT, 1, hangup_after=self.args.call_seconds, ring_timeout=3.0
            )
            await asyncio.sleep(interval)

    async def sample(self) -> None:
        calls = self.core.calls.calls
        while True:
            answered = sum(1 for c in calls.values() if c.state in ("answered", "ending"))
            self.monitor.sample(answered, time.time())
            await asyncio.sleep(0.025)

    # --- state of the app --------------------------------------------------------
    async def stats(self) -> dict[str, Any] | None:
        assert self.relay is not None
        try:
            return await asyncio.wait_for(self.relay.ray_stats(), 10.0)
        except Exception:
            return None

    async def whole(self) -> bool:
        """Every component up: 2 shards on attached sessions, 3 CallActors, no detached session."""
        st = await self.stats()
        if st is None or len(st["connections"]) != 2 or len(st["call_actors"]) != 3:
            return False
        sessions = self.core.list_sessions()
        protocols = {s["protocol"] for s in st["connections"]}
        attached = {s["protocol"] for s in sessions if s["attached"]}
        if not (protocols <= attached and all(s["attached"] for s in sessions)):
            return False
        return not self.args.standby or await self.spares_up(st)

    async def spares_up(self, st: dict[str, Any]) -> bool:
        """With standbys: each shard's two slots answer, and the one that does not serve
        is its spare (a process of its own, passing calls on to the serving one)."""
        from relay_actors.ray_runtime.actor_messages import NAMESPACE, actor_name

        for shard in st["connections"]:
            pids = set()
            for role in ("connection", "standby"):
                try:
                    name = actor_name(self.args.app, role, shard["shard"])
                    handle = ray.get_actor(name, namespace=NAMESPACE)
                    pids.add((await asyncio.wait_for(handle.stats.remote(), 2.0))["pid"])
                except Exception:
                    return False
            if pids != {shard["pid"]} or shard.get("standby", {}).get("role") != "serving":
                return False
        return True

    async def until(self, probe: Any, timeout: float, interval: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await probe():
                return True
            await asyncio.sleep(interval)
        return False

    async def calls_flow(self, since: float, timeout: float = 60.0) -> float | None:
        """Seconds from ``since`` until a probe call's handler started (None: never)."""
        probes: list[str] = []
        deadline = time.monotonic() + timeout
        next_probe = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_probe:
                probes += self.core.inject_calls(
                    CONTEXT, 1, to_number=PROBE_TO, hangup_after=0.3, ring_timeout=2.0
                )
                next_probe = now + 0.25
            try:
                if await asyncio.wait_for(self.rec.any_started.remote(probes), 5.0):
                    return time.monotonic() - since
            except Exception:
                pass
            await asyncio.sleep(0.02)
        return None

    def live_ids(self) -> set[str]:
        return {cid for cid, call in self.core.calls.calls.items() if call.state != "ended"}

    # --- faults ----------------------------------------------------------------
    @staticmethod
    def shard_of(st: dict[str, Any], pick: int) -> dict[str, Any]:
        """The shard (its stats) ``pick`` chooses."""
        return sorted(st["connections"], key=lambda s: s["shard"])[pick % len(st["connections"])]

    @staticmethod
    def actor_of(st: dict[str, Any], pick: int) -> dict[str, Any]:
        """The CallActor (its stats) ``pick`` chooses."""
        return sorted(st["call_actors"], key=lambda a: a["index"])[pick % len(st["call_actors"])]

    def session_of(self, pick: int) -> str:
        """The attached session ``pick`` chooses ("" if none)."""
        sessions = sorted(s["protocol"] for s in self.core.list_sessions() if s["attached"])
        return sessions[pick % len(sessions)] if sessions else ""

    @staticmethod
    def gap(pick: int, least: float, spread: float) -> float:
        """Seconds between the two faults of a compound one: ``least`` to ``least + spread``."""
        return least + (pick % (int(spread * 1000) + 1)) / 1000

    def kill_call_actor(self, actor: dict[str, Any]) -> None:
        """``kill -9`` a CallActor: its live calls may be ended by the lost-calls policy."""
        self.killed_pids.add(actor["pid"])
        self.exposed |= self.live_ids()
        os.kill(actor["pid"], signal.SIGKILL)

    async def respawned(self, shard: dict[str, Any], timeout: float = 20.0) -> int | None:
        """The pid of ``shard``'s next process, once it shows in the stats (None: not in time)."""
        found: list[int] = []

        async def new_process() -> bool:
            now = await self.stats()
            found[:] = [s["pid"] for s in (now or {}).get("connections", []) if s["shard"] == shard["shard"]]
            return bool(found) and found[0] != shard["pid"]

        return found[0] if await self.until(new_process, timeout, interval=0.02) else None

    async def apply(self, fault: chaos.Fault) -> str:
        """Apply ``fault``; returns what was hit."""
        st = await self.stats()
        assert st is not None
        kind, pick = fault.kind, fault.pick
        if kind == "kill_connection":
            shard = self.shard_of(st, pick)
            os.kill(shard["pid"], signal.SIGKILL)
            return f"shard {shard['shard']} pid {shard['pid']}"
        if kind == "kill_router":
            os.kill(st["router"]["pid"], signal.SIGKILL)
            return f"router pid {st['router']['pid']}"
        if kind == "kill_call_actor":
            actor = self.actor_of(st, pick)
            self.kill_call_actor(actor)
            return f"CallActor {actor['index']} pid {actor['pid']}"
        if kind == "kill_connection_then_router":
            shard, router_pid = self.shard_of(st, pick), st["router"]["pid"]
            gap = self.gap(pick, 0.2, 0.2)  # the shard is starting again
            os.kill(shard["pid"], signal.SIGKILL)
            await asyncio.sleep(gap)
            os.kill(router_pid, signal.SIGKILL)
            return f"shard {shard['shard']} pid {shard['pid']}, router pid {router_pid} {gap:.2f}s later"
        if kind == "kill_call_actor_then_connection":
            actor, shard = self.actor_of(st, pick), self.shard_of(st, pick)
            gap = self.gap(pick, 0.1, 0.2)
            self.kill_call_actor(actor)
            await asyncio.sleep(gap)
            os.kill(shard["pid"], signal.SIGKILL)
            return f"CallActor {actor['index']} pid {actor['pid']}, shard {shard['shard']} {gap:.2f}s later"
        if kind == "pause_call_actor_and_ws_drop":
            paused = await self.pause("pause_call_actor", pick, st)
            gap = self.gap(pick, 0.3, 0.5)
            await asyncio.sleep(gap)
            protocol = self.session_of(pick)
            self.core.drop(protocol)
            return f"{paused}; session {protocol[-6:]} dropped {gap:.2f}s in"
        if kind == "pause_connection_and_kill_router":
            paused = await self.pause("pause_connection", pick, st)
            gap = self.gap(pick, 0.3, 0.5)
            await asyncio.sleep(gap)
            os.kill(st["router"]["pid"], signal.SIGKILL)
            return f"{paused}; router pid {st['router']['pid']} killed {gap:.2f}s in"
        if kind == "kill_router_then_call_actor":
            actor = self.actor_of(st, pick)
            gap = self.gap(pick, 0.1, 0.2)
            os.kill(st["router"]["pid"], signal.SIGKILL)
            await asyncio.sleep(gap)
            self.kill_call_actor(actor)
            return f"router pid {st['router']['pid']}, CallActor {actor['index']} {gap:.2f}s later"
        if kind == "ws_drop_then_kill_connection":
            shard = self.shard_of(st, pick)
            gap = self.gap(pick, 0.05, 0.2)
            self.core.drop(shard["protocol"])
            await asyncio.sleep(gap)
            os.kill(shard["pid"], signal.SIGKILL)
            return f"session {shard['protocol'][-6:]} dropped, shard {shard['shard']} killed {gap:.2f}s later"
        if kind == "kill_connection_twice":
            shard = self.shard_of(st, pick)
            os.kill(shard["pid"], signal.SIGKILL)
            second = await self.respawned(shard)
            if second is None:
                return f"shard {shard['shard']} pid {shard['pid']} (no new process to kill in 20 s)"
            os.kill(second, signal.SIGKILL)
            return f"shard {shard['shard']} pid {shard['pid']}, then its new pid {second}"
        if kind.startswith("pause_"):
            return await self.pause(kind, pick, st)
        if kind == "reset_links":
            shard = pick % 2
            handle = ray.get_actor(actor_name(self.args.app, "connection", shard), namespace=NAMESPACE)
            n = await asyncio.wait_for(handle.reset_links.remote(), 10.0)
            return f"shard {shard}: {n} links reset"
        protocol = self.session_of(pick)
        if kind == "ws_drop":
            self.core.drop(protocol)
            return f"session {protocol[-6:]} dropped"
        if kind == "disconnect_resume":
            acked = await self.core.disconnect(protocol, restart=False)
            return f"session {protocol[-6:]} disconnect (acked {acked})"
        if kind == "disconnect_restart":
            self.retired_calls |= set(self.core.session(protocol).call_ids)
            acked = await self.core.disconnect(protocol, restart=True)
            return f"session {protocol[-6:]} disconnect restart (acked {acked})"
        if kind == "refuse_handshakes":
            self.core.refuse_handshakes = 3
            self.core.drop(protocol)
            return f"next 3 handshakes refused, session {protocol[-6:]} dropped"
        if kind == "handler_fault":
            ids = self.core.inject_calls(CONTEXT, 1, to_number=RAISE_ON, hangup_after=5.0)
            ids += self.core.inject_calls(CONTEXT, 1, to_number=HANG_ON)
            self.faulty_calls |= set(ids)
            return f"calls {ids} to a raising and a hanging handler"
        if kind == "burst":
            count = 10 * self.args.limit
            self.core.inject_calls(CONTEXT, count, hangup_after=1.0, ring_timeout=2.0)
            return f"{count} calls at once"
        if kind == "remove_node":
            control = {st["router"]["node_id"], *(s["node_id"] for s in st["connections"])}
            control.add(ray.get_runtime_context().get_node_id())
            hosting = {a["node_id"] for a in st["call_actors"]}
            workers = [n for n in self.cluster.worker_nodes if n.node_id not in control]
            candidates = sorted((n for n in workers if n.node_id in hosting), key=lambda n: n.node_id)
            if not candidates:
                return "no worker node to remove"
            node = candidates[pick % len(candidates)]
            self.removed_nodes.add(node.node_id)
            self.exposed |= self.live_ids()
            self.cluster.remove_node(node)
            return f"node {node.node_id[:8]} removed"
        raise ValueError(kind)

    async def pause(self, kind: str, pick: int, st: dict[str, Any]) -> str:
        """SIGSTOP one actor's process for 2-4 s, then SIGCONT (a GC pause, a frozen VM).
        Returns at once: whether calls flow is measured *during* the pause (a paused
        router must cost calls nothing while the shards' leases last); :meth:`after`
        waits for the SIGCONT."""
        if kind == "pause_connection":
            shard = self.shard_of(st, pick)
            pid, what = shard["pid"], f"shard {shard['shard']}"
        elif kind == "pause_router":
            pid, what = st["router"]["pid"], "router"
        else:
            actor = self.actor_of(st, pick)
            pid, what = actor["pid"], f"CallActor {actor['index']}"
            # A CallActor silent for seconds may be taken for lost (its calls ended).
            self.exposed |= self.live_ids()
        seconds = self.gap(pick, 2.0, 2.0)

        async def resume() -> None:
            try:
                await asyncio.sleep(seconds)
            finally:
                os.kill(pid, signal.SIGCONT)

        os.kill(pid, signal.SIGSTOP)
        self.paused = asyncio.ensure_future(resume())
        return f"{what} pid {pid} stopped {seconds:.1f}s"

    async def after(self, fault: chaos.Fault) -> None:
        """Undo what must be undone once calls flow again (a removed node comes back, a
        paused process goes on)."""
        if self.paused is not None:
            paused, self.paused = self.paused, None
            await paused
        if fault.kind == "remove_node":
            self.cluster.add_node(num_cpus=2)
            await asyncio.to_thread(self.cluster.wait_for_nodes)

    # --- the whole run -----------------------------------------------------------
    async def run(self) -> chaos.Report:
        args = self.args
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.rec = (
            ray.remote(chaos.Recorder)
            .options(
                name=RECORDER, namespace=RECORDER_NS, num_cpus=0, max_concurrency=1, scheduling_strategy=here
            )
            .remote()
        )
        self.relay = RelayClient(
            runtime="ray",
            ray_options=RayOptions(
                app=args.app,
                connections=2,
                min_call_actors=3,
                max_call_actors=3,
                control_resource="relay_control",
                standby_connections=args.standby,
            ),
            project=self.emu.project,
            token=self.emu.token,
            host=self.emu.host,
            scheme="ws",
            contexts=[CONTEXT],
            backoff=Backoff(initial=0.05, cap=0.5),
            max_active_calls=args.limit,
            handler_timeout=args.handler_timeout,
        )
        self.relay.on_call(chaos_handler(RECORDER))
        await asyncio.wait_for(self.relay.connect(), 120)
        tasks = [asyncio.ensure_future(self.load()), asyncio.ensure_future(self.sample())]
        try:
            if not await self.until(self.whole, 60):
                raise RuntimeError("the app did not come up whole")
            self.load_on.set()
            schedule = chaos.make_schedule(args.seed, args.faults, args.kinds)
            for fault in schedule:
                await asyncio.sleep(fault.pause)  # steady load between faults
                began = time.monotonic()
                what = await self.apply(fault)
                took = await self.calls_flow(began)
                self.report.recovered(fault.kind, took)
                await self.after(fault)
                whole = await self.until(self.whole, 90)
                self.report.restored[fault.kind].append(time.monotonic() - began)
                self.say(
                    f"fault {fault.index:3d} {fault.kind:<18} {what}: calls flow after "
                    f"{'never' if took is None else f'{took:.2f}s'}, whole after "
                    f"{time.monotonic() - began:.2f}s{'' if whole else ' (NOT WHOLE)'}"
                )
                if not whole:
                    self.report.not_restored[fault.kind] += 1
            self.load_on.clear()
            await self.quiesce()
        finally:
            if self.paused is not None:
                await self.paused  # (never leave a process stopped)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self.report

    async def quiesce(self) -> None:
        """Wait for the calls to end and the counts to settle, then check everything."""
        calls = self.core.calls.calls

        async def no_live() -> bool:
            return not any(c.state != "ended" for c in calls.values())

        await self.until(no_live, 60)
        await self.until(self.whole, 60)

        async def settled() -> bool:
            st = await self.stats()
            return st is not None and self.leaks(st) == 0

        await self.until(settled, 30, interval=0.5)
        dump = await asyncio.wait_for(self.rec.dump.remote(), 30)
        st = await self.stats()
        journal = self.core.journal.frames()
        truncated = sum(1 for entries in journal.values() if len(entries) >= self.core.journal.limit)
        sent = chaos.sent_events(journal)
        # Cut short by the death of its CallActor: a call up at the time (its handler may
        # have finished before, e.g. timed out, with the call living on) or whose handler
        # never finished; a call that ended before the kill was not disturbed.
        disturbed = {
            cid
            for cid, starts in dump["started"].items()
            if (cid not in dump["done"] or cid in self.exposed)
            and any(s["pid"] in self.killed_pids or s["node"] in self.removed_nodes for s in starts)
        } | self.retired_calls
        at_start = {cid: starts[0].get("state", "") for cid, starts in dump["started"].items()}
        events = chaos.check_events(sent, dump["events"], disturbed, list(dump["started"]), at_start)
        twice = chaos.check_starts(dump["started"])
        after_end = chaos.commands_after_end(journal)
        repeated = chaos.commands_twice(journal, dump["commands"])
        healthy_ended = sorted(chaos.runtime_ended(journal) - disturbed - self.exposed - self.faulty_calls)
        unacked = sum(self.core.stats()["unacked"].values())
        live = sum(1 for c in calls.values() if c.state != "ended")
        unfinished = [cid for cid in dump["started"] if cid not in dump["done"] and cid not in disturbed]
        self.report.invariants = {
            "events lost": events["lost"],
            "events handled twice": events["twice"],
            "events out of order": events["out_of_order"],
            "calls handled twice": len(twice),
            "commands after the runtime ended": len(after_end),
            "commands twice at the server": len(repeated),
            "healthy calls ended by the runtime": len(healthy_ended),
            "moments over the limit": self.monitor.over,
            "events unacked after quiescence": unacked,
            "leaked calls/records": (self.leaks(st) if st is not None else 1) + live,
            "handlers never finished": len(unfinished),
            "journal truncated": truncated,
        }
        leaked = await self.leaked_ids()
        traced = (
            [e["call_id"] for e in events["examples"]] + twice[:3] + [a["call_id"] for a in after_end[:3]]
        )
        traced += leaked[:3] + healthy_ended[:3] + [r["call_id"] for r in repeated[:3]]
        self.report.details = {
            "events": events["examples"],
            "traces": {
                cid: {
                    "frames": chaos.call_trace(journal, cid),
                    "started": dump["started"].get(cid),
                    "errors": dump["errors"].get(cid),
                    "done": dump["done"].get(cid),
                    "emulator": next((c for c in self.core.list_calls() if c["call_id"] == cid), None),
                }
                for cid in traced[:8]
            },
            "handled_twice": twice[:10],
            "after_end": after_end[:10],
            "commands_twice": repeated[:10],
            "over_limit": self.monitor.over_at,
            "peak_answered": self.monitor.peak,
            "samples": self.monitor.samples,
            "unfinished": unfinished[:10],
            "leaked_ids": leaked[:10],
            "healthy_ended": healthy_ended[:10],
            "calls_started": len(dump["started"]),
            "calls_disturbed": len(disturbed),
            "calls_injected": len(self.injected),
            "final_stats": _brief(st),
        }

    async def leaked_ids(self) -> list[str]:
        """Evidence: the call ids the router and the shards still hold."""
        found: list[str] = []
        names = [actor_name(self.args.app, "router")] + [
            actor_name(self.args.app, "connection", s) for s in (0, 1)
        ]
        for name in names:
            try:
                handle = ray.get_actor(name, namespace=NAMESPACE)
                ids = await asyncio.wait_for(handle.__ray_call__.remote(_held_call_ids), 10.0)
                found += [f"{cid}" for cid in ids if cid not in found]
            except Exception as exc:  # evidence only
                found.append(f"{name}: {exc!r}"[:200])
        return found

    def leaks(self, st: dict[str, Any]) -> int:
        records = st["router"].get("calls", 0)
        for shard in st["connections"]:
            records += shard["active_calls"] + shard["waiting_offers"] + shard["pending_dials"]
        for actor in st["call_actors"]:
            records += actor["calls"] + actor["pending_requests"] + actor["handler_tasks"]
        return int(records)


def _held_call_ids(actor: Any) -> list[str]:
    """Runs in the router or a connection actor: the call ids it holds a record of."""
    core = getattr(actor, "core", None)  # a connection actor's shard core
    return list(core.routes.calls if core is not None else actor.pool.calls)  # (the router's pool core)


def _brief(st: dict[str, Any] | None) -> dict[str, Any]:
    if st is None:
        return {}
    keep = ("calls", "leased", "budget", "grants", "actors", "double_assignments", "call_actor_restarts")
    shard_keep = ("shard", "active_calls", "granted", "waiting_offers", "calls_lost_actor", "offers_replaced")
    return {
        "router": {k: st["router"].get(k) for k in keep},
        "connections": [
            {**{k: s.get(k) for k in shard_keep}, "links": s.get("links")} for s in st["connections"]
        ],
        "call_actors": [
            {k: a.get(k) for k in ("index", "calls", "handler_tasks")} for a in st["call_actors"]
        ],
    }


async def main_async(args: argparse.Namespace, cluster: Cluster) -> chaos.Report:
    async with Emulator(
        ping_interval=0,
        durations=FAST_DURATIONS,
        journal_limit=2_000_000,
        resume_grace=30.0,
        # A second ``answer`` is refused, as a stricter service might: a runtime that
        # resends one must not be saved by the emulator's leniency.
        strict_commands=True,
    ) as emu:
        run = ChaosRun(args, cluster, emu)
        try:
            report = await run.run()
        finally:
            if run.relay is not None:
                await asyncio.wait_for(run.relay.disconnect(), 60)
        if args.verbose:
            print(json.dumps(report.details, indent=1, default=str))
        return report


def start_cluster(tmp: str) -> Cluster:
    os.environ["RAY_TMPDIR"] = tmp
    os.makedirs(os.path.join(tmp, "ray"), exist_ok=True)
    # The control plane (router, connection actors) on the head: worker nodes are removed.
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False, "resources": {"relay_control": 1}},
    )
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
    return cluster


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", type=int, default=20)
    parser.add_argument(
        "--kinds", type=lambda s: s.split(","), default=None, help="comma-separated fault kinds"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="inbound calls per second")
    parser.add_argument(
        "--call-seconds", type=float, default=1.5, help="a call lives this long once answered"
    )
    parser.add_argument("--limit", type=int, default=30, help="max_active_calls")
    parser.add_argument("--handler-timeout", type=float, default=4.0)
    parser.add_argument("--app", default="chaos")
    parser.add_argument(
        "--standby", action="store_true", help="RayOptions(standby_connections=True): a warm spare per shard"
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("--keep-logs", action="store_true", help="keep Ray's temp dir (its logs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    schedule = chaos.make_schedule(args.seed, args.faults, args.kinds)
    print(f"seed {args.seed}: " + " ".join(f.kind for f in schedule), flush=True)
    tmp = tempfile.mkdtemp(prefix="relay-chaos-")
    cluster: Cluster | None = None
    started = time.monotonic()
    try:
        cluster = start_cluster(tmp)
        report = asyncio.run(main_async(args, cluster))
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if args.keep_logs:
            print(f"Ray's files (logs) kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(chaos.render_table(report))
    if not report.ok:
        print(json.dumps(report.details, indent=1, default=str))
    print(f"took {time.monotonic() - started:.0f}s", flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
