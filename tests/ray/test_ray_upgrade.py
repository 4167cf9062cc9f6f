"""Rolling upgrade and drain under steady load, as a user does it.

Rolling upgrade: ``relay-actors run app:client --ray``
serves handler v1; ``relay-actors run app:client --ray --upgrade`` (same app, same settings,
handler v2) deploys v2 while calls keep arriving at ~15/s, each held ~1 s. Every call is
offered once, answered once and handled by exactly one version (its TTS text says which,
in the emulator's journal), ended by its handler (none dropped or hung up by the runtime);
calls offered after the switch all go to v2; the v1 CallActors are retired (gone) and the
v1 driver hands over with a clear line; the v2 handlers' log lines, one per call with its
call id, show in the v2 driver's output (its Ray job's logs).

Drain: SIGTERM to ``relay-actors run app:client --ray`` while calls are active and keep
arriving; a second consumer of the context (an in-process RelayClient) is subscribed too.
The active calls finish normally, every offer is handled once (those after the drain began
by the other consumer), and the driver exits with the draining/stopped lines.

The drivers attach to the session's local Ray (``--address``).
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

from relay_actors import RelayClient
from relay_actors.errors import RelayError
from relay_actors.ray_runtime import app_status, kvstore
from relay_actors.ray_runtime.actor_messages import NAMESPACE, actor_name

pytestmark = pytest.mark.timeout(120)

APP = """
import asyncio
import logging

from relay_actors import RelayClient
from relay_actors.ray_runtime import RayOptions

VERSION = {version!r}

client = RelayClient(contexts=["office"], max_active_calls=300, handler_timeout=120.0,
                     ray_options=RayOptions(min_call_actors=2, max_call_actors=2))


@client.on_call
async def on_call(call):
    logging.getLogger("upapp").info("answering as %s", VERSION)
    await call.answer()
    action = await call.play_tts(f"handled by {{VERSION}}")
    await action.wait()
    await asyncio.sleep({hold})
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


class Handled:
    """What the emulator's journal shows of one call."""

    def __init__(self) -> None:
        self.offers = 0
        self.answers = 0
        self.versions: list[str] = []
        self.end_reasons: list[str] = []
        self.ended_at = 0.0


def _journal_by_call(emulator: Any) -> dict[str, Handled]:
    """Per call: offers sent, answers requested, versions played (the TTS text), the ends
    the client requested (reasons) and when."""
    calls: dict[str, Handled] = defaultdict(Handled)
    seen: set[str] = set()
    for entries in emulator.core.journal.frames().values():
        for entry in entries:
            frame = entry["frame"]
            method = frame.get("method")
            params = frame.get("params") or {}
            if entry["dir"] == "out" and method == "signalwire.event" and frame["id"] not in seen:
                seen.add(frame["id"])
                if params.get("event_type") == "calling.call.receive":
                    calls[params["params"]["call_id"]].offers += 1
            elif entry["dir"] == "in" and method == "calling.answer":
                calls[params["call_id"]].answers += 1
            elif entry["dir"] == "in" and method == "calling.play":
                text = str(params.get("play"))
                calls[params["call_id"]].versions += [
                    v for v in ("v1", "v2", "backup") if f"handled by {v}" in text
                ]
            elif entry["dir"] == "in" and method == "calling.end":
                calls[params["call_id"]].end_reasons.append(str(params.get("reason")))
                calls[params["call_id"]].ended_at = entry["t"]
    return dict(calls)


def _check_handled_once(emulator: Any, injected: dict[str, float]) -> dict[str, Handled]:
    """Every injected call was offered once, answered once, handled by exactly one
    handler and ended by it (reason ``hangup``: nothing dropped or ended by the runtime)."""
    calls = {c["call_id"]: c for c in emulator.core.list_calls()}
    journal = _journal_by_call(emulator)
    assert {calls[cid]["end_reason"] for cid in injected} == {"hangup"}, "ended by their handlers"
    assert all(journal[cid].offers == 1 for cid in injected), "each offered once: none passed or re-placed"
    assert all(journal[cid].answers == 1 for cid in injected), "each answered once"
    assert all(len(journal[cid].versions) == 1 for cid in injected), "each handled by exactly one version"
    assert all(journal[cid].end_reasons == ["hangup"] for cid in injected), "no call ended by the runtime"
    return journal


class Load:
    """Inbound calls on "office" at ``RATE`` per second until stopped; when each came."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.injected: dict[str, float] = {}
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:  # pacing, not synchronization
            (call_id,) = self.core.inject_calls("office", 1)
            self.injected[call_id] = time.time()
            await asyncio.sleep(1 / RATE)

    async def reach(self, count: int, timeout: float, what: str) -> None:
        async def reached() -> bool:
            return len(self.injected) >= count

        await helpers.eventually(reached, timeout, what=what)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def all_ended(self, timeout: float) -> None:
        async def ended() -> bool:
            calls = {c["call_id"]: c for c in self.core.list_calls()}
            return all(calls[cid]["state"] == "ended" for cid in self.injected)

        await helpers.eventually(ended, timeout, interval=0.2, what="every call ended")


async def test_rolling_upgrade_under_load_drops_no_call(local_ray, emulator, app_name, tmp_path) -> None:
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "upapp.py").write_text(APP.format(version=version, hold=1.0))
    load: Load | None = None
    v1 = v2 = None
    try:
        v1 = await _start(tmp_path / "v1", emulator, app_name, "--ray")
        await v1.line("relay-actors: ready:", 90)
        load = Load(emulator.core)
        await load.reach(30, 30, "v1 under load")
        v2 = await _start(tmp_path / "v2", emulator, app_name, "--ray", "--upgrade", "--drain-timeout", "60")
        ready = await v2.line("relay-actors: ready:", 120)
        switched = time.time()
        assert "(upgraded: generation 1)" in ready, ready
        status = await app_status(app_name)
        assert status["generation"] == 1
        assert sorted(r["index"] for r in status["call_actors"] if r["generation"] == 1) == [2, 3]
        # The v1 driver sees its app taken over and exits, leaving it running.
        handed = await v1.line("relay-actors: handed over:", 15)
        assert f"app {app_name} was upgraded to generation 1" in handed and "the app runs on" in handed
        assert await asyncio.wait_for(v1.proc.wait(), 30) == 0
        await load.reach(len(load.injected) + 45, 30, "v2 under load")
        await load.stop()
        await load.all_ended(60)
        journal = _check_handled_once(emulator, load.injected)
        by_version = Counter(journal[cid].versions[0] for cid in load.injected)
        assert by_version["v1"] >= 30 and by_version["v2"] >= 45, by_version
        late_v1 = [
            cid for cid, t in load.injected.items() if t > switched and journal[cid].versions == ["v1"]
        ]
        assert not late_v1, f"{len(late_v1)} calls offered after the switch went to v1"

        # The new owner's output (its job's logs) has each v2 call's handler line.
        v2_calls = [cid for cid in load.injected if journal[cid].versions == ["v2"]]

        async def logged() -> list[str]:
            text = "\n".join(v2.lines)
            return [cid for cid in v2_calls if f"call_id={cid} upapp: answering as v2" not in text]

        async def all_logged() -> bool:
            return not await logged()

        try:
            await helpers.eventually(all_logged, 20, interval=0.2, what="the v2 handlers' lines")
        except TimeoutError:
            missing = len(await logged())
            raise AssertionError(f"{missing} of {len(v2_calls)} v2 calls not in its logs") from None

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
        if load is not None:
            await load.stop()
        for driver in (v1, v2):
            if driver is not None:
                await driver.stop()
        for name in relay_actor_names(app_name):
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)


async def _async(value: bool) -> bool:
    return value


async def test_sigterm_drains_active_calls_and_offers_go_to_the_other_consumer(
    local_ray, emulator, app_name, tmp_path
) -> None:
    (tmp_path / "upapp.py").write_text(APP.format(version="v1", hold=2.0))
    backup = RelayClient(
        project=emulator.project, token=emulator.token, host=emulator.host, scheme="ws", contexts=["office"]
    )

    @backup.on_call
    async def on_call(call: Any) -> None:
        await call.answer()
        action = await call.play_tts("handled by backup")
        await action.wait()
        await call.hangup()

    load: Load | None = None
    driver = None
    try:
        driver = await _start(tmp_path, emulator, app_name, "--ray", "--drain-timeout", "30")
        await driver.line("relay-actors: ready:", 90)
        await backup.connect()
        load = Load(emulator.core)
        await load.reach(30, 30, "both consumers under load")
        sigterm = time.time()
        driver.proc.send_signal(signal.SIGTERM)
        await driver.line("relay-actors: SIGTERM: draining", 15)

        async def only_backup_subscribed() -> bool:
            return len(emulator.core.subscribers("office")) == 1

        await helpers.eventually(only_backup_subscribed, 15, what="the app's session unsubscribed")
        drained = time.time()
        await load.reach(len(load.injected) + 20, 15, "offers during the drain")
        await load.stop()
        await driver.line("relay-actors: stopped", 60)
        assert await asyncio.wait_for(driver.proc.wait(), 30) == 0
        await load.all_ended(30)
        journal = _check_handled_once(emulator, load.injected)
        by_version = Counter(journal[cid].versions[0] for cid in load.injected)
        assert by_version["v1"] >= 5 and by_version["backup"] >= 20, by_version
        late = [
            cid for cid, t in load.injected.items() if t > drained and journal[cid].versions != ["backup"]
        ]
        assert not late, f"{len(late)} offers after the drain began went to the draining app"
        finished = [cid for cid in load.injected if journal[cid].versions == ["v1"]]
        assert any(journal[cid].ended_at > sigterm + 0.5 for cid in finished), (
            "calls active at SIGTERM finished"
        )
        assert "relay-actors: stopped" in driver.lines[-1], driver.lines[-5:]
        assert relay_actor_names(app_name) == []
    finally:
        if load is not None:
            await load.stop()
        await backup.disconnect()
        if driver is not None:
            await driver.stop()
        for name in relay_actor_names(app_name):
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)


class _Unloadable:
    """A global of the new handler that cannot be unpickled where it runs (as a missing
    dependency would make the new code fail to load in the CallActors)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("v2 does not load here")


UNLOADABLE = _Unloadable()


async def _unloadable_handler(call: Any) -> None:
    assert UNLOADABLE is not None
    await call.answer()


async def test_an_upgrade_that_does_not_load_or_changes_settings_leaves_the_app_alone(
    make_client, emulator, recorder, app_name
) -> None:
    rec_name, rec = recorder
    await make_client(on_call=helpers.recording_handler(rec_name), ray_options={"app": app_name})
    names = relay_actor_names(app_name)
    record = kvstore.get_sync(kvstore.record_key(app_name))

    other = await make_client(
        connect=False,
        max_active_calls=7,
        on_call=_unloadable_handler,
        ray_options={"app": app_name, "upgrade": True},
    )
    with pytest.raises(RelayError) as mismatch:
        await other.connect()
    assert mismatch.value.failure == "app_config_mismatch" and "changes the handlers' code only" in str(
        mismatch.value
    )

    broken = await make_client(
        connect=False, on_call=_unloadable_handler, ray_options={"app": app_name, "upgrade": True}
    )
    with pytest.raises(RelayError) as failed:
        await broken.connect()
    assert failed.value.failure == "upgrade_failed", failed.value
    assert "generation 0 goes on serving" in failed.value.message, failed.value.message
    assert relay_actor_names(app_name) == names, "the failed generation's CallActors are gone"
    assert kvstore.get_sync(kvstore.record_key(app_name)) == record, "the app stays its owner's"
    (call_id,) = emulator.core.inject_calls("office", 1)

    async def handled() -> Any:
        dump = await rec.dump.remote()
        return call_id in dump["started"]

    await helpers.eventually(handled, 15, what="a call handled by the running version")


async def test_calls_outlasting_the_drain_timeout_are_hung_up_and_the_old_owner_leaves_the_app(
    make_client, emulator, recorder, app_name
) -> None:
    rec_name, rec = recorder
    old = await make_client(
        on_call=helpers.recording_handler(rec_name, stay=True, hangup=False), ray_options={"app": app_name}
    )
    core = emulator.core
    (held,) = core.inject_calls("office", 1)

    async def started(call_id: str) -> bool:
        return call_id in (await rec.dump.remote())["started"]

    await helpers.eventually(lambda: started(held), 15, what="the v1 call up")
    # The API form of an upgrade: RayOptions(upgrade=True), here with a short drain.
    new = await make_client(
        on_call=helpers.recording_handler(rec_name),
        ray_options={"app": app_name, "upgrade": True, "upgrade_drain_timeout": 1.0},
    )
    assert new._ray is not None and new._ray.owner and new._ray.generation == 1
    assert old._ray is not None and not await old._ray._still_ours(), "the app is the new driver's"
    (fresh,) = core.inject_calls("office", 1)

    async def ended(call_id: str) -> str | None:
        call = next(c for c in core.list_calls() if c["call_id"] == call_id)
        return call["end_reason"] if call["state"] == "ended" else None

    # v2 answers, plays and hangs up; v1 would have waited for the caller.
    assert await helpers.eventually(lambda: ended(fresh), 15, what="the v2 call handled") == "hangup"
    assert await helpers.eventually(lambda: ended(held), 20, what="the held call hung up") == "hangup"
    router = ray.get_actor(actor_name(app_name, "router"), namespace=NAMESPACE)

    async def retired() -> Any:
        stats = await router.stats.remote()
        return stats if stats.get("call_actors_retired") == 2 else None

    stats = await helpers.eventually(retired, 20, what="the v1 CallActors retired")
    assert stats["calls_hung_up_drain_timeout"] == 1 and not stats.get("call_actor_restarts")
    # Counted when retired; Ray's listing shows the killed actors gone a moment later.
    wanted = [actor_name(app_name, "call", i) for i in (2, 3)]

    async def only_v2_listed() -> bool:
        return sorted(n for n in relay_actor_names(app_name) if ":call:" in n) == wanted

    await helpers.eventually(only_v2_listed, 20, what="only the v2 CallActors listed")
    # The old owner's disconnect leaves the app (now the new driver's) running.
    await old.disconnect()
    assert len(relay_actor_names(app_name)) == 4
