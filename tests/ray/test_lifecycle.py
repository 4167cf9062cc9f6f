"""App lifecycle on Ray: create, refuse, join, stop; records and secrets in the GCS KV store;
``relay-actors status``/``stop``; the default app name. One local Ray for the session (conftest)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import ray_helpers as helpers
from ray_helpers import eventually, relay_actor_names

from relay_actors import RelayClient, cli
from relay_actors.backoff import Backoff
from relay_actors.errors import RelayError
from relay_actors.ray_runtime import RayOptions, kvstore, stop_app


async def _started(rec: Any, call_ids: list[str]) -> Any:
    dump = await rec.dump.remote()
    return dump if all(cid in dump["started"] for cid in call_ids) else None


def _client(emulator: Any, app: str, handler: Any, **options: Any) -> RelayClient:
    """A Ray client as the make_client fixture builds them (same settings, same handler)."""
    max_calls = options.pop("max_active_calls", 1000)
    client = RelayClient(
        project=emulator.project,
        token=emulator.token,
        host=emulator.host,
        scheme="ws",
        contexts=["office"],
        max_active_calls=max_calls,
        backoff=Backoff(initial=0.05, cap=0.5),
        runtime="ray",
        ray_options=RayOptions(app=app, min_call_actors=2, max_call_actors=2, **options),
    )
    client.on_call(handler)
    return client


def _record(app: str) -> Any:
    return kvstore.get_sync(kvstore.record_key(app))


async def test_second_driver_is_refused_joins_on_purpose_and_leaves_the_app_alone(
    make_client, emulator, recorder, app_name
) -> None:
    rec_name, rec = recorder
    handler = helpers.recording_handler(rec_name)
    first = await make_client(on_call=handler, ray_options={"app": app_name})
    names = relay_actor_names(app_name)
    record = _record(app_name)
    assert record["state"] == "running" and record["driver"]["pid"] == os.getpid()

    second = _client(emulator, app_name, handler)
    with pytest.raises(RelayError) as refused:
        await second.connect()
    assert refused.value.failure == "app_running"
    message = str(refused.value)
    assert app_name in message and "RayOptions(join=True)" in message and "RayOptions(app=...)" in message
    assert f"relay-actors stop {app_name}" in message
    assert relay_actor_names(app_name) == names, "a refused driver must not touch the running app"
    assert _record(app_name) == record, "nor its record (credentials, server, secrets)"
    assert not await kvstore.create_record(app_name, {"app": app_name}), "the name is claimed once"
    assert _record(app_name) == record

    other = _client(emulator, app_name, handler, join=True, max_active_calls=7)
    with pytest.raises(RelayError) as mismatch:
        await other.connect()
    assert mismatch.value.failure == "app_config_mismatch" and app_name in str(mismatch.value)

    joined = _client(emulator, app_name, handler, join=True)
    await joined.connect()
    assert joined._ray is not None and not joined._ray.owner
    (call_id,) = emulator.core.inject_calls("office", 1)
    await eventually(lambda: _started(rec, [call_id]), 15, what="call handled while joined")
    await joined.disconnect()
    assert relay_actor_names(app_name) == names, "a joined driver's disconnect leaves the app running"
    assert _record(app_name) == record
    (after,) = emulator.core.inject_calls("office", 1)
    await eventually(lambda: _started(rec, [after]), 15, what="call handled after the joined driver left")
    assert first.relay_protocol


async def test_failed_start_of_a_joining_driver_leaves_the_app_alone(make_client, emulator, app_name) -> None:
    await make_client(ray_options={"app": app_name})
    names = relay_actor_names(app_name)
    late = _client(emulator, app_name, helpers.recording_handler("nobody"), join=True)
    # The fingerprint differs (a handler): refused, and its failed start stops nothing.
    with pytest.raises(RelayError) as refused:
        await late.connect()
    assert refused.value.failure == "app_config_mismatch"
    await late.disconnect()
    assert relay_actor_names(app_name) == names


async def test_stop_app_drains_then_removes_actors_and_every_record(
    make_client, emulator, recorder, app_name
):
    rec_name, rec = recorder
    await make_client(
        on_call=helpers.recording_handler(rec_name, stay=True, hangup=False), ray_options={"app": app_name}
    )
    record = _record(app_name)
    secrets = kvstore.secrets_namespace(record)
    assert set(kvstore.keys_sync("", namespace=secrets)) >= {
        "credentials",
        "link_secret",
        "link_tls",
        "router_epoch",
        "shard/0/incarnation",
        "shard/0/resume",
    }
    call_ids = emulator.core.inject_calls("office", 2, hangup_after=1.5)
    await eventually(lambda: _started(rec, call_ids), 15, what="handlers running")
    lines: list[str] = []
    result = await stop_app(app_name, drain_timeout=20, progress=lines.append)
    assert result["calls_left"] == 0 and result["actors_removed"] == 4
    assert any(line.startswith(f"draining {app_name}: 2 active calls") for line in lines), lines
    assert lines[-1].startswith(f"stopped {app_name}: 4 actors removed"), lines
    assert relay_actor_names(app_name) == []
    assert _record(app_name) is None
    assert kvstore.keys_sync("", namespace=secrets) == []
    # Draining unsubscribed the contexts: the emulator has no consumer for them left.
    assert not emulator.core.subscribers("office")
    with pytest.raises(RelayError) as gone:
        await stop_app(app_name)
    assert gone.value.failure == "not_found"


async def test_a_crashed_apps_records_are_reclaimed(make_client, app_name) -> None:
    stale_ns = kvstore.NAMESPACE + b"/deadbeef"
    kvstore.put_sync("credentials", {"project": "p", "token": "old"}, namespace=stale_ns)
    kvstore.put_sync(
        kvstore.record_key(app_name), {"app": app_name, "state": "running", "secrets": "deadbeef"}
    )
    await make_client(ray_options={"app": app_name})
    assert _record(app_name)["secrets"] != "deadbeef"
    assert kvstore.keys_sync("", namespace=stale_ns) == []

    # stop APP of an app whose actors are gone: the records alone are deleted.
    orphan = f"{app_name}x"
    kvstore.put_sync(kvstore.record_key(orphan), {"app": orphan, "state": "running", "secrets": "feedface"})
    kvstore.put_sync("credentials", {"token": "x"}, namespace=kvstore.NAMESPACE + b"/feedface")
    lines: list[str] = []
    await stop_app(orphan, progress=lines.append)
    assert _record(orphan) is None
    assert kvstore.keys_sync("", namespace=kvstore.NAMESPACE + b"/feedface") == []
    assert lines == [f"stopped {orphan}: 0 actors removed, records deleted"]


async def test_secrets_stay_out_of_the_record_and_the_resume_state_is_sealed(make_client, emulator, app_name):
    relay = await make_client(ray_options={"app": app_name})
    record = _record(app_name)
    assert emulator.token not in orjson.dumps(record).decode()
    secrets = kvstore.AppSecrets(app_name, kvstore.secrets_namespace(record))
    sealed = kvstore.get_sync("shard/0/resume", namespace=secrets.namespace)
    assert isinstance(sealed, str)
    assert "authorization" not in sealed and relay.relay_protocol not in sealed
    state = await secrets.load_resume(0)
    assert state["protocol"] == relay.relay_protocol and state["contexts"] == ["office"]
    # Tampered: refused (a fresh session), never trusted.
    kvstore.put_sync("shard/0/resume", sealed[:-4] + "AAAA", namespace=secrets.namespace)
    assert await kvstore.AppSecrets(app_name, secrets.namespace).load_resume(0) == {}


async def test_status_json_shows_the_numbers(make_client, emulator, recorder, app_name, capsys) -> None:
    rec_name, rec = recorder
    await make_client(
        max_active_calls=40,
        on_call=helpers.recording_handler(rec_name, stay=True, hangup=False),
        ray_options={"app": app_name, "connections": 2},
    )
    call_ids = emulator.core.inject_calls("office", 3)
    await eventually(lambda: _started(rec, call_ids), 15, what="handlers running")
    capsys.readouterr()
    # The command runs its own event loop: off this one's thread.
    assert await asyncio.to_thread(cli.main, ["status", app_name, "--json"]) == 0
    status = orjson.loads(capsys.readouterr().out)
    assert status["app"] == app_name and status["state"] == "running"
    assert status["active_calls"] == 3 and status["max_active_calls"] == 40
    assert [s["shard"] for s in status["shards"]] == [0, 1]
    assert all(s["connected"] and s["protocol"] for s in status["shards"])
    assert all(0 <= s["session_age"] < 120 for s in status["shards"])
    assert sum(s["active_calls"] for s in status["shards"]) == 3
    assert len(status["call_actors"]) == 2 and sum(a["calls"] for a in status["call_actors"]) == 3
    assert all(a["capacity"] == 5000 for a in status["call_actors"])
    assert [n["call_actors"] for n in status["nodes"].values()] == [2]
    assert status["unreachable"] == []
    assert await asyncio.to_thread(cli.main, ["status", app_name]) == 0
    table = capsys.readouterr().out
    assert "active calls 3 / 40" in table and "CALLACTOR" in table and "SESSION AGE" in table
    assert await asyncio.to_thread(cli.main, ["status"]) == 0
    assert app_name in capsys.readouterr().out
    for call_id in call_ids:
        emulator.core.hangup(call_id)


def test_default_app_name_comes_from_the_script(tmp_path: Path) -> None:
    probe = "from relay_actors.ray_runtime import RayOptions; print(RayOptions().app)"
    script = tmp_path / "My IVR.app.py"
    script.write_text(probe + "\n")
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "Voice_Mail.py").write_text(probe + "\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    names = [
        subprocess.run(
            cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env, check=True
        ).stdout
        for cmd in ([sys.executable, str(script)], [sys.executable, "-m", "shop.Voice_Mail"])
    ]
    assert [n.strip() for n in names] == ["my-ivr-app", "voice_mail"]


async def test_a_serving_driver_ends_when_its_app_is_stopped_elsewhere(make_client, app_name, capsys) -> None:
    relay = await make_client(connect=False, ray_options={"app": app_name})
    ready = asyncio.Event()
    serving = asyncio.create_task(relay.serve(asyncio.Event(), on_ready=ready.set))
    await asyncio.wait_for(ready.wait(), 60)
    assert relay_actor_names(app_name)
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, ["stop", app_name, "--drain-timeout", "5"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"relay-actors: stopped {app_name}: 4 actors")
    await asyncio.wait_for(serving, 15)  # it noticed, and its own stop touched nothing
    assert relay_actor_names(app_name) == [] and _record(app_name) is None
    assert await asyncio.to_thread(cli.main, ["stop", app_name]) == 1
    assert f"no Ray app named '{app_name}'" in capsys.readouterr().err
