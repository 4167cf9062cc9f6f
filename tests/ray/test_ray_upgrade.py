"""Rolling upgrade under steady load, as a user does it: ``relay-actors run app:client --ray``
serves handler v1; ``relay-actors run app:client --ray --upgrade`` (same app, same settings,
handler v2) deploys v2 while calls keep arriving at ~15/s, each held ~1 s. Every call is
offered once, answered once and handled by exactly one version (its TTS text says which,
in the emulator's journal), ended by its handler (none dropped or hung up by the runtime);
calls offered after the switch all go to v2; the v1 CallActors are retired (gone) and the
v1 driver hands over with a clear line. Both drivers attach to the session's local Ray.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import ray
import ray_helpers as helpers
from ray_helpers import relay_actor_names

from relay_actors.ray_runtime.actor_messages import NAMESPACE, actor_name

pytestmark = pytest.mark.timeout(180)

APP = """
import asyncio

from relay_actors import RelayClient
from relay_actors.ray_runtime import RayOptions

VERSION = {version!r}

client = RelayClient(contexts=["office"], max_active_calls=300, handler_timeout=120.0,
                     ray_options=RayOptions(min_call_actors=2, max_call_actors=2))


@client.on_call
async def on_call(call):
    await call.answer()
    action = await call.play_tts(f"handled by {{VERSION}}")
    await action.wait()
    await asyncio.sleep(1.0)
    await call.hangup()
"""

RATE = 15.0


class Driver:
    """A ``relay-actors run`` process whose output lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self.lines.append(raw.decode().rstrip())

    async def line(self, needle: str, timeout: float) -> str:
        async def found() -> Any:
            return next((line for line in self.lines if needle in line), None) or (
                self.reader.done() and "EOF"
            )

        got = await helpers.eventually(found, timeout, interval=0.1, what=needle)
        assert got != "EOF", f"output ended before {needle!r}:\n" + "\n".join(self.lines[-40:])
        return str(got)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.reader.cancel()


async def _start(cwd: Path, emulator: Any, app: str, *extra: str) -> Driver:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALWIRE_")}
    env.update(
        SIGNALWIRE_PROJECT_ID=emulator.project,
        SIGNALWIRE_API_TOKEN=emulator.token,
        SIGNALWIRE_SPACE=emulator.host,
        SIGNALWIRE_RELAY_SCHEME="ws",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay_actors.cli", "run", "upapp:client",
        "--address", ray.get_runtime_context().gcs_address, "--app", app, *extra,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    return Driver(proc)


def _journal_by_call(emulator: Any) -> tuple[dict[str, int], dict[str, list[str]], dict[str, int], list[str]]:
    """Per call: offers sent, versions played, answers requested; and every end's reason."""
    offers: Counter[str] = Counter()
    versions: dict[str, list[str]] = defaultdict(list)
    answers: Counter[str] = Counter()
    ends: list[str] = []
    seen: set[str] = set()
    for entries in emulator.core.journal.frames().values():
        for entry in entries:
            frame = entry["frame"]
            method = frame.get("method")
            params = frame.get("params") or {}
            if entry["dir"] == "out" and method == "signalwire.event" and frame["id"] not in seen:
                seen.add(frame["id"])
                if params.get("event_type") == "calling.call.receive":
                    offers[params["params"]["call_id"]] += 1
            elif entry["dir"] == "in" and method == "calling.answer":
                answers[params["call_id"]] += 1
            elif entry["dir"] == "in" and method == "calling.play":
                text = str(params.get("play"))
                versions[params["call_id"]] += [v for v in ("v1", "v2") if f"handled by {v}" in text]
            elif entry["dir"] == "in" and method == "calling.end":
                ends.append(str(params.get("reason")))
    return dict(offers), dict(versions), dict(answers), ends


async def test_rolling_upgrade_under_load_drops_no_call(local_ray, emulator, app_name, tmp_path) -> None:
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "upapp.py").write_text(APP.format(version=version))
    core = emulator.core
    injected: dict[str, float] = {}
    loading = asyncio.Event()
    v1 = v2 = None

    async def load() -> None:
        # A steady stream of inbound calls (pacing, not synchronization).
        while loading.is_set():
            (call_id,) = core.inject_calls("office", 1)
            injected[call_id] = time.time()
            await asyncio.sleep(1 / RATE)

    try:
        v1 = await _start(tmp_path / "v1", emulator, app_name, "--ray")
        await v1.line("relay-actors: ready:", 90)
        loading.set()
        loader = asyncio.create_task(load())
        await helpers.eventually(lambda: _at_least(injected, 30), 30, what="v1 under load")
        v2 = await _start(tmp_path / "v2", emulator, app_name, "--ray", "--upgrade", "--drain-timeout", "60")
        ready = await v2.line("relay-actors: ready:", 120)
        switched = time.time()
        assert "(upgraded: generation 1)" in ready, ready
        # The v1 driver sees its app taken over and exits, leaving it running.
        handed = await v1.line("relay-actors: handed over:", 15)
        assert f"app {app_name} was upgraded to generation 1" in handed and "the app runs on" in handed
        assert await asyncio.wait_for(v1.proc.wait(), 30) == 0
        after = len(injected)
        await helpers.eventually(lambda: _at_least(injected, after + 45), 30, what="v2 under load")
        loading.clear()
        await asyncio.wait_for(loader, 5)

        async def all_ended() -> bool:
            calls = {c["call_id"]: c for c in core.list_calls()}
            return all(calls[cid]["state"] == "ended" for cid in injected)

        await helpers.eventually(all_ended, 60, interval=0.2, what="every call ended")
        calls = {c["call_id"]: c for c in core.list_calls()}
        offers, versions, answers, ends = _journal_by_call(emulator)
        assert {calls[cid]["end_reason"] for cid in injected} == {"hangup"}, "ended by their handlers"
        assert all(offers.get(cid) == 1 for cid in injected), "each offered once: none passed or re-placed"
        assert all(answers.get(cid) == 1 for cid in injected), "each answered once"
        assert all(len(versions.get(cid, [])) == 1 for cid in injected), "each handled by exactly one version"
        assert set(ends) == {"hangup"}, "the runtime hung up no call"
        by_version = Counter(versions[cid][0] for cid in injected)
        assert by_version["v1"] >= 30 and by_version["v2"] >= 45, by_version
        late_v1 = [cid for cid, t in injected.items() if t > switched and versions[cid] == ["v1"]]
        assert not late_v1, f"{len(late_v1)} calls offered after the switch went to v1"

        # The v1 CallActors are retired: stopped, not lost.
        def call_actors() -> list[str]:
            return sorted(n for n in relay_actor_names(app_name) if ":call:" in n)

        await helpers.eventually(
            lambda: _async(call_actors() == [actor_name(app_name, "call", i) for i in (2, 3)]),
            30,
            what="the v1 CallActors gone",
        )
        router = ray.get_actor(actor_name(app_name, "router"), namespace=NAMESPACE)
        stats = await router.stats.remote()
        assert stats["call_actors_retired"] == 2 and stats["upgrades"] == 1
        assert not stats.get("call_actor_restarts") and not stats.get("calls_hung_up_drain_timeout")
        shard = ray.get_actor(actor_name(app_name, "connection", 0), namespace=NAMESPACE)
        shard_stats = await shard.stats.remote()
        for counter in ("offers_dropped", "offers_no_capacity", "calls_lost_actor", "offers_replaced"):
            assert not shard_stats.get(counter), (counter, shard_stats.get(counter))

        v2.proc.send_signal(signal.SIGTERM)
        await v2.line("relay-actors: stopped", 60)
        assert await asyncio.wait_for(v2.proc.wait(), 30) == 0
        assert relay_actor_names(app_name) == []
    finally:
        loading.clear()
        for driver in (v1, v2):
            if driver is not None:
                await driver.stop()
        for name in relay_actor_names(app_name):
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)


async def _at_least(items: dict[str, float], count: int) -> bool:
    return len(items) >= count


async def _async(value: bool) -> bool:
    return value
